"""The KVM lab: two libvirt domains on this machine and the host row that backs them up.

* ``kvm-web-01``: the real guest (``inventory.lab.kvm_guest``) with the QEMU guest agent on a
  64 MiB ext4 data disk holding a few files, so backups freeze it and run in-guest scripts.
* ``kvm-db-01``: an OS-less domain whose qcow2 disk holds patterns written with qemu-io.

Files live under ``<data dir>/kvm-lab`` (``disks/``, ``restores/``, ``snapshots/``,
``run/``: console logs and domain XML).  ``ensure_kvm_lab`` is idempotent: a domain that
exists is reused (started when shut off), one whose disk file vanished is made again.
``register_kvm_lab_host`` writes the ``kvm-lab`` host row (``manage.py lab kvm`` does both,
then asks discovery for the VMs when it is there).  libvirt is imported only when the KVM
lab runs, so the image lab works on machines without it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from inventory.lab import kvm_guest
from inventory.models import Host

HOST = "kvm-lab"
URI = "qemu:///system"
WEB = "kvm-web-01"
DB = "kvm-db-01"
WEB_DISK_MIB = 64
DB_DISK_MIB = 256
# (pattern byte, offset, length) written into kvm-db-01's disk when it is made.
DB_PATTERNS = ((0x11, 0, 4 << 20), (0x22, 64 << 20, 1 << 20), (0x33, 200 << 20, 512 << 10))
AGENT_TIMEOUT = 180.0


class KvmLabError(RuntimeError):
    """libvirt is not reachable, or a lab domain could not be made or started."""


@dataclass(frozen=True)
class KvmLabPaths:
    root: Path

    @property
    def disks(self) -> Path:
        return self.root / "disks"

    @property
    def restores(self) -> Path:
        return self.root / "restores"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def run(self) -> Path:
        return self.root / "run"

    def disk(self, domain: str) -> Path:
        return self.disks / f"{domain}-data.qcow2"

    def console(self, domain: str) -> Path:
        return self.run / f"{domain}.console.log"

    def make_dirs(self) -> None:
        for d in (self.disks, self.restores, self.snapshots, self.run):
            d.mkdir(parents=True, exist_ok=True)


def kvm_lab_paths() -> KvmLabPaths:
    return KvmLabPaths(Path(settings.DATA_DIR) / "kvm-lab")


def web_files() -> dict[str, bytes]:
    """What kvm-web-01's data disk holds when it is made."""
    lines = "".join(f"line {i}: served by {WEB}\n" for i in range(1, 201))
    return {
        "README.txt": f"{WEB}: the KVM lab's web server; backups freeze this file system.\n".encode(),
        "www/index.html": f"<h1>{WEB}</h1>\n".encode(),
        "www/log/access.log": lines.encode(),
        "etc/app.conf": b"listen = 0.0.0.0:80\nworkers = 2\n",
    }


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError as exc:
        raise KvmLabError(
            "the libvirt Python bindings are missing: run scripts/kvm-host install and "
            "scripts/kvm-host bindings .venv (make lab-kvm does)"
        ) from exc
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def _make_db_disk(path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), f"{DB_DISK_MIB}M"],
        check=True,
        capture_output=True,
    )
    writes = [f"write -P {p:#x} {off} {ln}" for p, off, ln in DB_PATTERNS]
    args = [a for w in writes for a in ("-c", w)]
    subprocess.run(["qemu-io", "-f", "qcow2", *args, str(tmp)], check=True, capture_output=True)
    tmp.rename(path)


def _ensure_domain(
    conn: Any, name: str, disk: Path, make_disk: Callable[[], object], xml: Callable[[], str]
) -> str:
    """Define (if needed) and start one lab domain; what was done, for the summary."""
    libvirt = _libvirt()
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        dom = None
    did = []
    if dom is not None and not disk.exists():
        # Its disk was removed (a clean lab dir): make the domain again from scratch.
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        dom = None
        did.append("redefined (disk was missing)")
    if not disk.exists():
        make_disk()
    if dom is None:
        try:
            dom = conn.defineXML(xml())
        except libvirt.libvirtError as exc:
            raise KvmLabError(f"{name}: libvirt refused the domain: {exc}") from exc
        did.append("defined")
    if not dom.isActive():
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise KvmLabError(f"{name}: did not start: {exc}") from exc
        did.append("started")
    return ", ".join(did) or "already running"


def ensure_kvm_lab(say: Callable[[str], None] = print) -> KvmLabPaths:
    """Build the guest's boot files and make sure both lab domains exist and run."""
    libvirt = _libvirt()
    paths = kvm_lab_paths()
    paths.make_dirs()
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        raise KvmLabError(
            f"libvirtd is not reachable at {URI} (scripts/kvm-host start): {exc}"
        ) from exc
    try:
        cache = kvm_guest.default_cache_dir()
        say(f"KVM lab: guest boot files in {cache} (the first time downloads ~70 MB)")
        try:
            boot = kvm_guest.build_guest_boot(cache)
        except kvm_guest.GuestBuildError as exc:
            raise KvmLabError(str(exc)) from exc
        web_disk = paths.disk(WEB)
        done = _ensure_domain(
            conn,
            WEB,
            web_disk,
            lambda: kvm_guest.make_data_disk(web_disk, WEB_DISK_MIB, web_files(), "qcow2"),
            lambda: kvm_guest.guest_domain_xml(
                WEB, boot.kernel, boot.initrd, web_disk, "qcow2", paths.console(WEB), None
            ),
        )
        say(f"KVM lab: {WEB}: {done}; disk {web_disk}; console {paths.console(WEB)}")
        db_disk = paths.disk(DB)
        done = _ensure_domain(
            conn,
            DB,
            db_disk,
            lambda: _make_db_disk(db_disk),
            lambda: kvm_guest.osless_domain_xml(DB, db_disk, "qcow2"),
        )
        say(f"KVM lab: {DB}: {done}; disk {db_disk}")
        try:
            secs = kvm_guest.wait_for_agent(conn, WEB, AGENT_TIMEOUT)
        except TimeoutError as exc:
            raise KvmLabError(f"{exc}; see {paths.console(WEB)}") from exc
        say(f"KVM lab: {WEB}: guest agent answers (waited {secs:.0f}s)")
    finally:
        conn.close()
    return paths


def register_kvm_lab_host(paths: KvmLabPaths) -> tuple[Host, bool]:
    """The ``kvm-lab`` host row (libvirt at qemu:///system); made once, then left as the
    administrator keeps it.  Its allowed roots are the lab's disks and restores."""
    return Host.objects.get_or_create(
        name=HOST,
        defaults={
            "connector": "libvirt",
            "libvirt_uri": URI,
            "snapshot_root": str(paths.snapshots),
            "allowed_roots": [str(paths.disks), str(paths.restores)],
        },
    )
