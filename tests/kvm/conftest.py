"""Fixtures for tests against the real libvirtd on this machine (qemu:///system, TCG).

``libvirt_uri`` skips (with the reason) when libvirtd cannot be reached even after
``scripts/kvm-host start``; ``make_domain`` defines and starts OS-less q35 domains whose disks
live in the test's tmp_path and are destroyed and undefined (with their checkpoint metadata)
afterwards; ``qemu_io`` writes a pattern into a running domain's disk through HMP qemu-io.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# The real guest and OS-less domain fixtures of the guest image builder.
from tests.kvm.guests import (  # noqa: F401
    adopt_domain,
    guest_boot,
    kvm_conn,
    osless_domain,
    running_guest,
)

URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[2]
PREFIX = "t-virt-"


def virsh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, *args], capture_output=True, text=True, check=check, timeout=120
    )


def _libvirt_up() -> bool:
    if shutil.which("virsh") is None:
        return False
    try:
        return virsh("version", check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def libvirt_uri() -> str:
    """qemu:///system when libvirtd answers (started by scripts/kvm-host if need be)."""
    try:
        import libvirt  # noqa: F401
        import nbd  # noqa: F401
    except ImportError as e:
        pytest.skip(f"libvirt/libnbd Python bindings missing ({e}): scripts/kvm-host install")
    if not _libvirt_up():
        script = REPO / "scripts" / "kvm-host"
        if script.exists() and os.geteuid() == 0:
            subprocess.run([str(script), "start"], capture_output=True, timeout=120, check=False)
    if not _libvirt_up():
        pytest.skip("libvirtd is not reachable at qemu:///system (scripts/kvm-host start)")
    return URI


@dataclass
class Domain:
    """A test domain: its name, UUID and disk files (target -> path)."""

    name: str
    uuid: str
    disks: dict[str, Path]
    formats: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        virsh("start", self.name)

    def destroy(self) -> None:
        virsh("destroy", self.name, check=False)

    def state(self) -> str:
        return virsh("domstate", self.name).stdout.strip()

    def kill_qemu(self) -> None:
        """kill -9 the domain's QEMU: nothing is saved (bitmaps stay marked in use)."""
        pid = int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "shut off" not in self.state():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not stop after kill -9")
            time.sleep(0.1)

    def checkpoints(self) -> list[str]:
        return virsh("checkpoint-list", self.name, "--name").stdout.split()


def _domain_xml(name: str, disks: list[tuple[str, Path, str]], extra_devices: str) -> str:
    disk_xml = "".join(
        f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='{fmt}'/>
      <source file='{path}'/>
      <target dev='{target}' bus='virtio'/>
    </disk>"""
        for target, path, fmt in disks
    )
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disk_xml}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>{extra_devices}
  </devices>
</domain>
"""


MakeDomain = Callable[..., Domain]


@pytest.fixture
def make_domain(libvirt_uri: str, tmp_path: Path) -> Iterator[MakeDomain]:
    """``make_domain(disks=[("vda", "qcow2", 64)], start=True)`` -> a defined (and started)
    OS-less domain named t-virt-<hex>; removed with its checkpoint metadata afterwards."""
    made: list[str] = []

    def make(
        disks: list[tuple[str, str, int]] | None = None,
        *,
        start: bool = True,
        extra_devices: str = "",
    ) -> Domain:
        name = f"{PREFIX}{uuid.uuid4().hex[:8]}"
        spec = []
        for target, fmt, mib in disks or [("vda", "qcow2", 64)]:
            path = tmp_path / f"{name}-{target}.{fmt}"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", fmt, str(path), f"{mib}M"], check=True
            )
            spec.append((target, path, fmt))
        xml = tmp_path / f"{name}.xml"
        xml.write_text(_domain_xml(name, spec, extra_devices))
        virsh("define", str(xml))
        made.append(name)
        dom = Domain(
            name,
            virsh("domuuid", name).stdout.strip(),
            {t: p for t, p, _ in spec},
            {t: f for t, _, f in spec},
        )
        if start:
            dom.start()
        return dom

    yield make
    for name in made:
        virsh("destroy", name, check=False)
        virsh("undefine", name, "--checkpoints-metadata", check=False)


def qemu_io(domain: Domain, pattern: int, offset: int, length: int, disk: int = 0) -> None:
    """Write ``pattern`` bytes at ``offset`` into the running domain's disk number ``disk``
    (virtio-disk<N>); qemu-io needs the qdev path, a node name gives a permission conflict."""
    qdev = f"/machine/peripheral/virtio-disk{disk}/virtio-backend"
    # The flush writes QEMU's cached qcow2 metadata, so the file compares as the guest sees it.
    for command in (f"write -P {pattern:#x} {offset} {length}", "flush"):
        out = virsh(
            "qemu-monitor-command", domain.name, "--hmp", f'qemu-io -d {qdev} "{command}"'
        ).stdout
        if out.strip():
            raise AssertionError(f"qemu-io: {out.strip()}")


@dataclass
class Backup:
    """One backup through the connector into the engine, as the jobs layer would run it."""

    outcome: Any  # SnapshotOutcome[BackupResult]
    views: list[Any]  # the DiskViews capture got
    rp_id: str

    @property
    def result(self) -> Any:
        return self.outcome.result

    def view(self, target: str = "vda") -> Any:
        return next(v for v in self.views if v.target == target)

    def disk(self, target: str = "vda") -> Any:
        """The engine's statistics of the disk ``target``."""
        lun = self.view(target).lun
        return next(d for d in self.result.disks if d.lun == lun)


class Protected:
    """A domain under protection: each backup's checkpoint and disks become the next one's
    parent, as the catalog keeps them."""

    def __init__(self, uri: str, domain: Domain, store: Any, work: Path) -> None:
        self.uri = uri
        self.domain = domain
        self.store = store
        self.work = work
        self.parent_rp: str | None = None
        self.parent_checkpoint: str | None = None
        self.parent_disks: dict[str, Any] = {}
        self.targets = list(domain.disks)

    def vm(self, rp_id: str, **hooks: Any) -> Any:
        from engine.connectors import DiskSpec, HookConfig, HypervisorSpec, VMSpec

        hv = HypervisorSpec(
            uri=self.uri,
            domain=self.domain.uuid,
            rp_id=rp_id,
            parent_checkpoint=self.parent_checkpoint,
            parent_disks=dict(self.parent_disks),
            agent_timeout=hooks.pop("agent_timeout", 2.0),
        )
        disks = [
            DiskSpec(lun=i - 1, path=self.domain.disks[t], target=t)
            for i, t in enumerate(self.targets)
        ]
        return VMSpec(self.domain.name, disks=disks, hooks=HookConfig(**hooks), hypervisor=hv)

    def back_up(self, *, crash_only: bool = False, **hooks: Any) -> Backup:
        from engine import BackupRequest, DiskSource, backup
        from engine.connectors import LibvirtConnector, ParentDisk

        rp_id = str(uuid.uuid4())
        seen: list[Any] = []

        def capture(views: list[Any]) -> Any:
            seen.extend(views)
            sources = [DiskSource(v.lun, str(v.path), v.changed_extents, v.reader) for v in views]
            req = BackupRequest(
                self.store, sources, self.domain.name, parent=self.parent_rp, rp_id=rp_id
            )
            return backup(req)

        outcome = LibvirtConnector().take_snapshot(
            self.vm(rp_id, **hooks), crash_only=crash_only, workdir=self.work, capture=capture
        )
        self.parent_rp = rp_id
        self.parent_checkpoint = outcome.checkpoint
        self.parent_disks = {v.target: ParentDisk(v.size, str(v.path)) for v in seen}
        return Backup(outcome, seen, rp_id)

    def restore_and_compare(self, b: Backup, tmp: Path) -> None:
        """Restore ``b`` and compare each disk with the domain's disk (qemu-img compare -U)."""
        from engine import restore

        targets = {v.lun: tmp / f"restored-{b.rp_id[:8]}-{v.target}.raw" for v in b.views}
        restore(self.store, b.rp_id, targets)
        for v in b.views:
            fmt = self.domain.formats[v.target]
            r = subprocess.run(
                [
                    "qemu-img",
                    "compare",
                    "-U",
                    "-f",
                    "raw",
                    "-F",
                    fmt,
                    str(targets[v.lun]),
                    str(self.domain.disks[v.target]),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert r.returncode == 0, f"{v.target}: {r.stdout} {r.stderr}"
            targets[v.lun].unlink()


@pytest.fixture
def store(tmp_path: Path) -> Any:
    from engine import init_store

    return init_store(tmp_path / "vault", os.urandom(32))


@pytest.fixture
def protect(libvirt_uri: str, store: Any, tmp_path: Path) -> Callable[[Domain], Protected]:
    def make(domain: Domain) -> Protected:
        return Protected(libvirt_uri, domain, store, tmp_path / "work")

    return make


G = 64 << 10  # the dirty bitmap granularity QEMU picks for these small qcow2 disks


def granules(ranges: list[tuple[int, int]]) -> set[int]:
    """The bitmap granules (64 KiB) that (offset, length) ranges touch."""
    out: set[int] = set()
    for off, ln in ranges:
        out.update(range(off // G, (off + ln - 1) // G + 1))
    return out
