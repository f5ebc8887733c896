"""Real libvirt domains for tests of the Django side: an OS-less domain `t-hosts-<hex>` with one
qcow2 disk, defined (never started) on qemu:///system and undefined by the fixture that made it."""

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

URI = "qemu:///system"
# Where libvirt's QEMU user can read images.
IMAGE_DIR = Path("/var/lib/libvirt/images")


def libvirt_unavailable() -> str | None:
    """None when libvirtd answers and the libvirt connector exists; else why not (skip reason)."""
    from engine.connectors import CONNECTORS

    if "libvirt" not in CONNECTORS:
        return "the libvirt connector is not installed in engine.connectors"
    if shutil.which("virsh") is None or shutil.which("qemu-img") is None:
        return "virsh or qemu-img is not installed (scripts/kvm-host install)"
    probe = subprocess.run(["virsh", "-c", URI, "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"libvirtd is not reachable at {URI} (scripts/kvm-host start): {probe.stderr}"
    return None


def _domain_xml(name: str, image: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], check=check, capture_output=True, text=True)


def undefine(name: str) -> None:
    virsh("destroy", name, check=False)
    virsh("undefine", name, "--checkpoints-metadata", check=False)


@contextmanager
def os_less_domain(workdir: Path, size: int = 64 << 20) -> Iterator[tuple[str, Path]]:
    """(name, image) of a defined OS-less domain; undefined and its image removed afterwards."""
    name = f"t-hosts-{uuid.uuid4().hex[:8]}"
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    image = IMAGE_DIR / f"{name}.qcow2"
    xml = workdir / f"{name}.xml"
    try:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(size)], check=True
        )
        xml.write_text(_domain_xml(name, image))
        virsh("define", str(xml))
        yield name, image
    finally:
        undefine(name)
        image.unlink(missing_ok=True)
