"""A small real KVM guest for tests and the KVM lab: Debian's kernel, an initramfs with
busybox and the QEMU guest agent, and an ext4 data disk.

Django-free and standard library only (``wait_for_agent`` imports libvirt when called, so the
module imports on a machine without libvirt).  Boots under TCG in about 15 s.

* ``build_guest_boot(cache_dir)`` downloads three Debian packages once (the kernel,
  ``qemu-guest-agent``, ``busybox-static``) and builds ``vmlinuz`` + an uncompressed newc
  initramfs.  Its init loads the virtio and ext4 modules, mounts the first virtio disk at
  ``/mnt/data`` and runs ``qemu-ga`` on the agent's virtio port.  ``qemu-ga`` takes its
  libraries from this machine (``ldd``), so the host must run the same Debian release as the
  packages apt offers, which is what apt on this machine downloads.
* ``make_data_disk`` makes the ext4 data disk without root (``mkfs.ext4 -d``).
* ``guest_domain_xml`` / ``osless_domain_xml`` write the libvirt domains.

Scripts in the guest (run with the agent's ``guest-exec``): ``/usr/local/bin/pre-ok.sh``
(exit 0), ``pre-fail.sh`` (stderr, exit 3), ``slow.sh`` (sleeps 30 s), ``write-data.sh N``
(N MiB of random data into a new ``/mnt/data/file-<k>``, then sync).
"""

from __future__ import annotations

import base64
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

AGENT_CHANNEL = "org.qemu.guest_agent.0"
# The console line the init prints once the agent has been started.
READY_MARK = "LIFEBOAT-GUEST-READY"
MOUNTED_MARK = "LIFEBOAT-DATA-MOUNTED"

AGENT_PACKAGE = "qemu-guest-agent"
BUSYBOX_PACKAGE = "busybox-static"
KERNEL_META_PACKAGE = "linux-image-amd64"
# Loaded in this order after their dependencies (read from each module's modinfo).
MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "crc32c_generic", "ext4")

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /lib/modules/$m.ko; done
# The first virtio disk appears once virtio_blk has probed it.
for i in $(seq 1 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /mnt/data && echo {mounted}
PORT=""
for i in $(seq 1 50); do
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat $p/name 2>/dev/null)" = {channel} ] && PORT=/dev/$(basename $p)
  done
  [ -n "$PORT" ] && [ -e "$PORT" ] && break
  sleep 0.1
done
/usr/sbin/qemu-ga -m virtio-serial -p "$PORT" -t /run -f /run/qemu-ga.pid &
echo {ready}
# PID 1 never exits (the kernel would panic); the domain ends by destroy or poweroff.
while true; do sleep 3600; done
"""

# qemu-ga's guest-shutdown runs /sbin/shutdown; busybox has no such applet.
SHUTDOWN = """#!/bin/sh
sync
case " $* " in
  *" -r "*) exec reboot -f ;;
  *) exec poweroff -f ;;
esac
"""

SCRIPTS: dict[str, str] = {
    "pre-ok.sh": "#!/bin/sh\necho pre-ok\nexit 0\n",
    "pre-fail.sh": "#!/bin/sh\necho 'pre-fail: refusing on purpose' >&2\nexit 3\n",
    "slow.sh": "#!/bin/sh\nsleep 30\n",
    "write-data.sh": """#!/bin/sh
# write-data.sh N: N MiB of random data into the next free /mnt/data/file-<k>, then sync.
set -e
n=${1:?usage: write-data.sh MIB}
k=1
while [ -e /mnt/data/file-$k ]; do k=$((k + 1)); done
dd if=/dev/urandom of=/mnt/data/file-$k bs=1M count=$n 2>/dev/null
sync
echo /mnt/data/file-$k
""",
}

# Bumped whenever the initramfs layout changes in a way the hash of its texts does not show.
BUILD_VERSION = "1"


def default_cache_dir() -> Path:
    """Where the guest's packages and boot files are kept: ``$LIFEBOAT_KVM_CACHE`` or
    /var/cache/lifeboat-kvm (shared by the tests, the KVM lab and CI)."""
    return Path(os.environ.get("LIFEBOAT_KVM_CACHE") or "/var/cache/lifeboat-kvm")


class GuestBuildError(RuntimeError):
    """The guest's boot files cannot be built (packages not downloadable, tool missing)."""


@dataclass(frozen=True)
class GuestBoot:
    kernel: Path
    initrd: Path


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as exc:
        raise GuestBuildError(f"{cmd[0]} is not installed: {exc}") from exc
    if r.returncode != 0:
        raise GuestBuildError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    return r


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache directory (parallel test workers share it)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached_debs(debs: Path) -> dict[str, Path] | None:
    found: dict[str, Path] = {}
    for key, pattern in (
        ("kernel", "linux-image-*-amd64_*.deb"),
        ("agent", f"{AGENT_PACKAGE}_*.deb"),
        ("busybox", f"{BUSYBOX_PACKAGE}_*.deb"),
    ):
        hits = sorted(glob.glob(str(debs / pattern)))
        if not hits:
            return None
        found[key] = Path(hits[-1])
    return found


def _download_debs(debs: Path) -> dict[str, Path]:
    cached = _cached_debs(debs)
    if cached:
        return cached
    wanted = [f"{KERNEL_META_PACKAGE} (its kernel package)", AGENT_PACKAGE, BUSYBOX_PACKAGE]
    try:
        dep = _run(["apt-cache", "depends", KERNEL_META_PACKAGE]).stdout
        m = re.search(r"Depends: (linux-image-\S+-amd64)", dep)
        if not m:
            raise GuestBuildError(f"apt-cache depends {KERNEL_META_PACKAGE} names no kernel")
        debs.mkdir(parents=True, exist_ok=True)
        # Downloaded beside, then moved in: an interrupted download leaves no half package.
        with tempfile.TemporaryDirectory(dir=debs.parent) as tmp:
            _run(["apt-get", "download", "-q", m.group(1), AGENT_PACKAGE, BUSYBOX_PACKAGE], cwd=tmp)
            for f in os.listdir(tmp):
                os.replace(os.path.join(tmp, f), debs / f)
    except GuestBuildError as exc:
        raise GuestBuildError(
            f"cannot download the guest's Debian packages {', '.join(wanted)} with apt "
            f"(try `apt-get update`, or put the .deb files into {debs}): {exc}"
        ) from exc
    got = _cached_debs(debs)
    if not got:
        raise GuestBuildError(f"apt-get download left no packages {', '.join(wanted)} in {debs}")
    return got


def _module_order(moddir: Path) -> list[tuple[str, Path]]:
    """MODULES and their dependencies, dependencies first."""
    kos: dict[str, Path] = {}
    for root, _, files in os.walk(moddir):
        for f in files:
            if f.endswith(".ko"):
                kos[f[:-3].replace("-", "_")] = Path(root) / f
    order: list[str] = []

    def add(name: str) -> None:
        if name in order:
            return
        if name not in kos:
            raise GuestBuildError(f"kernel module {name} not found under {moddir}")
        m = re.search(rb"depends=([^\0]*)\0", kos[name].read_bytes())
        for d in m.group(1).decode().split(",") if m else []:
            if d:
                add(d.replace("-", "_"))
        order.append(name)

    for n in MODULES:
        add(n)
    return [(n, kos[n]) for n in order]


def _agent_libraries(agent: Path) -> list[Path]:
    libs = []
    for line in _run(["ldd", str(agent)]).stdout.splitlines():
        if "not found" in line:
            raise GuestBuildError(f"qemu-ga needs a library this machine lacks: {line.strip()}")
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


class _Cpio:
    """An uncompressed newc archive (what the kernel unpacks as its initramfs)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[int, bytes]] = {}

    def mkdir(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            self.entries.setdefault("/".join(parts[:i]), (stat.S_IFDIR | 0o755, b""))

    def add(self, path: str, data: bytes, mode: int = 0o755) -> None:
        path = path.strip("/")
        if "/" in path:
            self.mkdir(path.rsplit("/", 1)[0])
        self.entries[path] = (stat.S_IFREG | mode, data)

    def write(self, out: Path) -> None:
        def header(name: str, mode: int, size: int, ino: int) -> bytes:
            fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
            return b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0"

        def pad(n: int) -> bytes:
            return b"\0" * ((4 - n % 4) % 4)

        with open(out, "wb") as fh:
            for ino, name in enumerate(sorted(self.entries), 1):
                mode, data = self.entries[name]
                h = header(name, mode, len(data), ino)
                fh.write(h + pad(len(h)) + data + pad(len(data)))
            h = header("TRAILER!!!", 0, 0, 0)
            fh.write(h + pad(len(h)))


def _recipe_digest(debs: Mapping[str, Path]) -> str:
    h = hashlib.sha256(BUILD_VERSION.encode())
    for key in sorted(debs):
        h.update(debs[key].name.encode() + b"\0")
    for text in (INIT, SHUTDOWN, *SCRIPTS.values(), *SCRIPTS.keys(), *MODULES):
        h.update(text.encode() + b"\0")
    return h.hexdigest()[:12]


def build_guest_boot(cache_dir: Path | str) -> GuestBoot:
    """The guest's kernel and initramfs, built once into ``cache_dir`` and reused after."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / ".build.lock"):
        debs = _download_debs(cache / "debs")
        digest = _recipe_digest(debs)
        done = cache / f"guest-{digest}.json"
        if done.is_file():
            meta = json.loads(done.read_text())
            boot = GuestBoot(Path(meta["kernel"]), Path(meta["initrd"]))
            if boot.kernel.is_file() and boot.initrd.is_file():
                return boot
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            tree = Path(tmp) / "x"
            for deb in debs.values():
                _run(["dpkg-deb", "-x", str(deb), str(tree)])
            kvers = os.listdir(tree / "lib/modules")
            if len(kvers) != 1:
                raise GuestBuildError(f"expected one kernel in {debs['kernel']}, found {kvers}")
            kver = kvers[0]
            modules = _module_order(tree / "lib/modules" / kver / "kernel")
            img = _Cpio()
            for d in ("proc", "sys", "dev", "run", "tmp", "root", "mnt/data", "bin", "sbin"):
                img.mkdir(d)
            img.add("bin/busybox", (tree / "bin/busybox").read_bytes())
            agent = tree / "usr/sbin/qemu-ga"
            img.add("usr/sbin/qemu-ga", agent.read_bytes())
            for lib in _agent_libraries(agent):
                img.add(str(lib), Path(os.path.realpath(lib)).read_bytes())
            for name, path in modules:
                img.add(f"lib/modules/{name}.ko", path.read_bytes(), 0o644)
            names = " ".join(n for n, _ in modules)
            img.add(
                "init",
                INIT.format(
                    modules=names, mounted=MOUNTED_MARK, ready=READY_MARK, channel=AGENT_CHANNEL
                ).encode(),
            )
            img.add("sbin/shutdown", SHUTDOWN.encode())
            for name, text in SCRIPTS.items():
                img.add(f"usr/local/bin/{name}", text.encode())
            kernel = cache / f"vmlinuz-{kver}"
            initrd = cache / f"initrd-{digest}.cpio"
            shutil.copyfile(tree / "boot" / f"vmlinuz-{kver}", Path(tmp) / "vmlinuz")
            img.write(Path(tmp) / "initrd")
            os.replace(Path(tmp) / "vmlinuz", kernel)
            os.replace(Path(tmp) / "initrd", initrd)
        done.write_text(json.dumps({"kernel": str(kernel), "initrd": str(initrd)}))
        return GuestBoot(kernel, initrd)


def make_data_disk(
    path: Path | str, size_mib: int, files: Mapping[str, bytes] | None = None, fmt: str = "qcow2"
) -> Path:
    """An ext4 disk image holding ``files`` (relative paths → contents), raw or qcow2."""
    if fmt not in ("raw", "qcow2"):
        raise ValueError(f"format {fmt!r}: raw or qcow2")
    out = Path(path)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        for rel, data in (files or {}).items():
            dest = root / rel.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        raw = out if fmt == "raw" else Path(tmp) / "fs.raw"
        _run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(raw), f"{size_mib}M"])
        if fmt == "qcow2":
            _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)])
    return out


def _disk_xml(disk: Path | str, fmt: str) -> str:
    return f"""    <disk type='file' device='disk'>
      <driver name='qemu' type={quoteattr(fmt)}/>
      <source file={quoteattr(str(disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>"""


def guest_domain_xml(
    name: str,
    kernel: Path | str,
    initrd: Path | str,
    disk: Path | str,
    fmt: str,
    console_log: Path | str,
    agent_socket: Path | str | None,
    memory_mib: int = 256,
) -> str:
    """A TCG domain booting the guest kernel directly, with its data disk as vda, the serial
    console in a file and the guest agent's channel on a unix socket (None: libvirt picks
    the path, which keeps it under the 108 bytes a socket path may have)."""
    sock = f" path={quoteattr(str(agent_socket))}" if agent_socket is not None else ""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
{_disk_xml(disk, fmt)}
    <serial type='file'>
      <source path={quoteattr(str(console_log))}/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <source mode='bind'{sock}/>
      <target type='virtio' name='{AGENT_CHANNEL}'/>
    </channel>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def osless_domain_xml(name: str, disk: Path | str, fmt: str = "qcow2", memory_mib: int = 64) -> str:
    """A TCG domain with only a disk: the firmware finds nothing to boot and idles, which is
    all a backup of its disk needs."""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{int(memory_mib)}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
  </os>
  <on_reboot>destroy</on_reboot>
  <devices>
{_disk_xml(disk, fmt)}
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def wait_for_agent(conn_or_uri: Any, name: str, timeout: float = 120.0) -> float:
    """Wait until the guest agent of domain ``name`` answers guest-ping; the seconds taken.
    Raises TimeoutError (with the domain's state) when it does not within ``timeout``."""
    # libvirt is optional for this module (the image lab runs without it).
    import libvirt
    import libvirt_qemu

    # Errors come back as exceptions; without a handler libvirt also prints each one of the
    # expected "agent is not connected" answers to stderr while the guest boots.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(conn_or_uri) if isinstance(conn_or_uri, str) else conn_or_uri
    try:
        dom = conn.lookupByName(name)
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            if not dom.isActive():
                raise TimeoutError(f"domain {name} stopped before its guest agent answered")
            try:
                libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 2, 0)
                return time.monotonic() - start
            except libvirt.libvirtError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise TimeoutError(f"guest agent of {name} did not answer within {timeout:.0f}s: {last}")
    finally:
        if isinstance(conn_or_uri, str):
            conn.close()


def agent_command(
    dom: Any, command: str, arguments: Mapping[str, Any] | None = None, timeout: int = 30
) -> Any:
    """Run one guest-agent command on a libvirt domain; its ``return`` value."""
    import libvirt_qemu  # optional, as in wait_for_agent

    msg: dict[str, Any] = {"execute": command}
    if arguments is not None:
        msg["arguments"] = dict(arguments)
    return json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(msg), timeout, 0))["return"]


@dataclass(frozen=True)
class ExecResult:
    exitcode: int
    stdout: bytes
    stderr: bytes


def guest_exec(
    dom: Any, path: str, args: tuple[str, ...] = (), timeout: float = 60.0
) -> ExecResult:
    """Run ``path args`` in the guest through the agent and wait for it to end."""
    pid = agent_command(
        dom, "guest-exec", {"path": path, "arg": list(args), "capture-output": True}
    )["pid"]
    deadline = time.monotonic() + timeout
    while True:
        st = agent_command(dom, "guest-exec-status", {"pid": pid})
        if st.get("exited"):
            return ExecResult(
                int(st.get("exitcode", -1)),
                base64.b64decode(st.get("out-data", "")),
                base64.b64decode(st.get("err-data", "")),
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} still runs in the guest after {timeout:.0f}s")
        time.sleep(0.1)
