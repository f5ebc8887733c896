"""Fixtures for tests against real libvirt domains: the guest's boot files, a running real
guest with the QEMU guest agent, and an OS-less domain.

Loaded by tests/kvm's conftest (``from tests.kvm.guests import *``) or ``-p tests.kvm.guests``.
Every domain is named with a prefix (``t-lab-`` by default; pass ``prefix=`` to use your own)
and destroyed + undefined with its checkpoint metadata by the fixture that made it.  Tests
skip with a reason when libvirtd is not reachable.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from inventory.lab import kvm_guest
from inventory.lab.kvm_guest import ExecResult, GuestBoot

__all__ = [
    "LIBVIRT_URI",
    "GuestDomain",
    "adopt_domain",
    "guest_boot",
    "kvm_cache_dir",
    "kvm_conn",
    "libvirt_reachable",
    "osless_domain",
    "require_libvirt",
    "running_guest",
]

LIBVIRT_URI = "qemu:///system"


def kvm_cache_dir() -> Path:
    """Where the guest's packages and boot files are kept between runs."""
    return kvm_guest.default_cache_dir()


def libvirt_reachable(uri: str = LIBVIRT_URI) -> str | None:
    """None when libvirtd answers at ``uri``; otherwise why not."""
    try:
        r = subprocess.run(
            ["virsh", "-c", uri, "version"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        return "virsh is not installed (scripts/kvm-host install)"
    except subprocess.TimeoutExpired:
        return f"virsh -c {uri} version did not answer within 30 s"
    if r.returncode != 0:
        return f"libvirtd not reachable at {uri} (scripts/kvm-host start): {r.stderr.strip()}"
    try:
        import libvirt  # noqa: F401  (Debian's bindings, linked into the venv)
    except ImportError:
        return "the libvirt Python bindings are missing (scripts/kvm-host bindings .venv)"
    return None


def require_libvirt(uri: str = LIBVIRT_URI) -> None:
    why = libvirt_reachable(uri)
    if why:
        pytest.skip(why)


@dataclass
class GuestDomain:
    """A domain a fixture defined and started; ``dom`` is its libvirt handle."""

    name: str
    uuid: str
    disk: Path
    fmt: str
    console: Path | None
    agent_socket: Path | None
    uri: str
    conn: Any = field(repr=False)

    @property
    def dom(self) -> Any:
        return self.conn.lookupByName(self.name)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console else ""

    def agent(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        return kvm_guest.agent_command(self.dom, command, arguments)

    def exec(self, path: str, *args: str, timeout: float = 60.0) -> ExecResult:
        return kvm_guest.guest_exec(self.dom, path, args, timeout=timeout)


def _remove_domain(conn: Any, name: str) -> None:
    import libvirt

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    flags = (
        libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    )
    try:
        dom.undefineFlags(flags)
    except libvirt.libvirtError:
        # Already gone (a test undefined it itself) or transient.
        pass


@pytest.fixture(scope="session")
def guest_boot() -> GuestBoot:
    """Kernel + initramfs of the real guest, built once into the KVM cache directory."""
    require_libvirt()
    return kvm_guest.build_guest_boot(kvm_cache_dir())


@pytest.fixture
def kvm_conn() -> Iterator[Any]:
    """A libvirt connection to qemu:///system (skips when libvirtd is not reachable)."""
    require_libvirt()
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(LIBVIRT_URI)
    yield conn
    conn.close()


@pytest.fixture
def running_guest(
    guest_boot: GuestBoot, kvm_conn: Any, tmp_path: Path
) -> Iterator[Callable[..., GuestDomain]]:
    """``running_guest(files=None, size_mib=64, fmt="qcow2", prefix="t-lab-", memory_mib=256)``
    defines and starts a real guest on a fresh ext4 data disk (``files``: relative path →
    bytes; default ``hello.txt``) and returns once its guest agent answers."""
    made: list[str] = []
    # A unix socket path must stay under 108 bytes; tmp_path may be longer.
    sockets = Path(tempfile.mkdtemp(prefix="t-lab-", dir="/tmp"))

    def make(
        files: Mapping[str, bytes] | None = None,
        size_mib: int = 64,
        fmt: str = "qcow2",
        prefix: str = "t-lab-",
        memory_mib: int = 256,
        agent_timeout: float = 180.0,
    ) -> GuestDomain:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        disk = kvm_guest.make_data_disk(
            tmp_path / f"{name}.{fmt}",
            size_mib,
            {"hello.txt": b"hello\n"} if files is None else files,
            fmt,
        )
        console = tmp_path / f"{name}.console.log"
        sock = sockets / f"{name}.sock"
        xml = kvm_guest.guest_domain_xml(
            name, guest_boot.kernel, guest_boot.initrd, disk, fmt, console, sock, memory_mib
        )
        dom = kvm_conn.defineXML(xml)
        made.append(name)
        dom.create()
        try:
            kvm_guest.wait_for_agent(kvm_conn, name, agent_timeout)
        except TimeoutError as exc:
            tail = console.read_text(errors="replace")[-2000:] if console.exists() else ""
            raise AssertionError(f"{exc}\n--- console of {name} ---\n{tail}") from exc
        return GuestDomain(name, dom.UUIDString(), disk, fmt, console, sock, LIBVIRT_URI, kvm_conn)

    yield make
    for name in made:
        _remove_domain(kvm_conn, name)
    shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture
def osless_domain(kvm_conn: Any, tmp_path: Path) -> Iterator[Callable[..., GuestDomain]]:
    """``osless_domain(disk=None, fmt="qcow2", size_mib=64, prefix="t-lab-", start=True)``
    defines (and starts) a domain with only a disk; without ``disk`` a fresh empty qcow2."""
    made: list[str] = []

    def make(
        disk: Path | None = None,
        fmt: str = "qcow2",
        size_mib: int = 64,
        prefix: str = "t-lab-",
        start: bool = True,
    ) -> GuestDomain:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        if disk is None:
            disk = tmp_path / f"{name}.{fmt}"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", fmt, str(disk), f"{size_mib}M"], check=True
            )
        dom = kvm_conn.defineXML(kvm_guest.osless_domain_xml(name, disk, fmt))
        made.append(name)
        if start:
            dom.create()
        return GuestDomain(name, dom.UUIDString(), disk, fmt, None, None, LIBVIRT_URI, kvm_conn)

    yield make
    for name in made:
        _remove_domain(kvm_conn, name)


@pytest.fixture
def adopt_domain(kvm_conn: Any) -> Iterator[Callable[[str], str]]:
    """``adopt_domain(name)``: a domain the test made another way (a restore) is destroyed
    and undefined, with its checkpoint metadata, at teardown."""
    names: list[str] = []

    def adopt(name: str) -> str:
        names.append(name)
        return name

    yield adopt
    for name in names:
        _remove_domain(kvm_conn, name)
