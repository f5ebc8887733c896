"""The libvirt connector: KVM/QEMU domains backed up through libvirt's pull-mode backup jobs
with changed-block tracking (checkpoints and their dirty bitmaps), read over NBD.

A VM is a libvirt domain (``VMSpec.hypervisor``: URI, UUID, the recovery point's id and the
chain it is on); its disks are the domain's file-backed disks, chosen by target (``vda``).

Running domain
--------------
1. Guest agent: unless ``crash_only``, ``guest-ping`` must answer within ``agent_timeout``.
   No answer: warning ``agent_unavailable``, no scripts, no freeze, consistency ``crash`` (the
   VM is still backed up).
2. The chain (a cache, never the truth; see "Chain" below) decides per disk whether the backup
   is incremental; stale ``lifeboat-*`` checkpoints are pruned first.
3. Pre-script *inside the guest* (``guest-exec``, polled with ``guest-exec-status``; argv =
   path + params; ``script_timeout`` per attempt, ``script_retries`` extra attempts; exit code
   and output in the hook log).  Same codes and ``continue_on_failure`` rules as the image
   connector: a failure stops the snapshot (HookFailed) or becomes a warning.
4. Freeze (``freeze_enabled``): ``domainFSFreeze`` through the agent; ``backupBegin`` (pull
   mode, NBD on a unix socket in ``workdir``, scratch files in ``workdir``, new checkpoint
   ``lifeboat-<rp_id>`` for every checkpointable disk); thaw at once, in a ``finally``.  A
   watchdog thaws after ``freeze_timeout`` (warning ``freeze_timeout``, crash).  A failing
   freeze: warning ``freeze_failed``, crash (the thaw is still sent).  Thaw failure: warning
   ``thaw_failed``.  ``freeze_seconds`` runs from the freeze to the end of the thaw.
5. Post-script in the guest (failure only ever a warning); it runs whatever happens once the
   pre-script phase began.
6. ``capture(views)``: one :class:`DiskView` per selected disk whose ``reader`` is an
   :class:`NbdReader` on the job's export, with the dirty extents when incremental.
7. The backup job is ended (``abortJob``: a pull-mode job ends that way), sockets and scratch
   files removed -- also on failure and cancel.

Consistency: ``application`` when the pre-script succeeded and the freeze (if enabled) held;
``file_system`` when the freeze held without a successful pre-script; ``crash`` otherwise.

Chain
-----
Incremental for a disk only when ``parent_checkpoint`` exists in libvirt and covers the disk,
no ``lifeboat-*`` bitmap of the domain is inconsistent (``query-named-block-nodes``: QEMU
killed without saving them), the disk's path and size equal ``parent_disks[target]``, and the
disk is qcow2.  Otherwise the disk is read in full (``changed_extents`` None: the engine
compares hashes with the parent, "full_read", or "full" without one) with a reason:
``no_parent``, ``checkpoint_missing``, ``bitmap_inconsistent``, ``disk_resized``,
``disk_replaced``, ``raw_format``, ``incremental_refused`` (libvirt refused the incremental
backup; its message is recorded).  On inconsistency or refusal every ``lifeboat-*`` checkpoint
is deleted (metadata only, leaves first: ``--children`` crashed libvirtd 9.0) with its stray
bitmaps, and a new chain starts.  Before each backup every ``lifeboat-*`` checkpoint but the
parent is deleted, since libvirt 9 updates every bitmap on each write.  Raw disks get no
checkpoint (libvirt 9 cannot); a domain with only raw disks is backed up without one.

Shut-off domain
---------------
No agent, no job: each disk file is read through its own read-only ``qemu-nbd``; consistency
``crash``, method ``stopped``, reason ``offline``.  The outcome keeps ``parent_checkpoint``
when it still exists: nothing wrote to the disks while off, so its bitmap still covers every
change since.

``cancel`` is polled between steps; what was started is undone (post-script, thaw, job,
sockets).  ``libvirt`` and ``nbd`` are imported on first use; without them every call raises
ConnectorError ``libvirt_unavailable`` saying what to install.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from engine.connectors.hooks import AREA_FREEZE, AREA_GENERAL, AREA_SCRIPTS, RunResult
from engine.connectors.hooks import config_problems as hook_config_problems
from engine.connectors.image import HookRun, PostScript, run_pre_script
from engine.connectors.nbd import (
    INSTALL_HINT,
    LIBVIRT_UNAVAILABLE,
    NbdReader,
    dirty_context,
)
from engine.connectors.spec import (
    AGENT_UNAVAILABLE,
    FREEZE_FAILED,
    FREEZE_TIMEOUT,
    OK,
    THAW_FAILED,
    ChangeDetection,
    ConnectorError,
    Consistency,
    DiskSpec,
    DiskView,
    DomainDisk,
    DomainInfo,
    ExtensionStatus,
    HookConfig,
    HookFailed,
    HostInfo,
    HypervisorSpec,
    SnapshotOutcome,
    VMSpec,
)
from engine.model import SourceReader

T = TypeVar("T")

log = logging.getLogger("lifeboat.connectors.libvirt")

CHECKPOINT_PREFIX = "lifeboat-"
CONNECT_FAILED = "connect_failed"
DOMAIN_NOT_FOUND = "domain_not_found"
DISK_NOT_FOUND = "disk_not_found"
BACKUP_FAILED = "backup_failed"

# Why a disk was not read through its dirty bitmap (DiskView.change_reason).
NO_PARENT = "no_parent"
CHECKPOINT_MISSING = "checkpoint_missing"
BITMAP_INCONSISTENT = "bitmap_inconsistent"
DISK_RESIZED = "disk_resized"
DISK_REPLACED = "disk_replaced"
RAW_FORMAT = "raw_format"
INCREMENTAL_REFUSED = "incremental_refused"
OFFLINE = "offline"
DOMAIN_RESTORED = "domain_restored"
REASONS = {
    NO_PARENT: "no parent checkpoint: read in full",
    CHECKPOINT_MISSING: "the parent checkpoint is gone from libvirt: read in full",
    BITMAP_INCONSISTENT: "a dirty bitmap is inconsistent (QEMU stopped without saving it): "
    "read in full, new chain",
    DISK_RESIZED: "the disk's size changed since the parent: read in full",
    DISK_REPLACED: "the disk's source file changed since the parent: read in full",
    RAW_FORMAT: "libvirt 9 cannot checkpoint raw disks; read in full and compared by hash",
    INCREMENTAL_REFUSED: "libvirt refused the incremental backup",
    OFFLINE: "the domain is shut off: its disk files were read in full",
    DOMAIN_RESTORED: "the domain's disks were replaced by a restore since the parent: read in "
    "full, new chain",
}

POLL_SECONDS = 0.2
TAIL_LINES = 20
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QEMU_IMG_TIMEOUT = 30
# A unix socket path must fit sockaddr_un.sun_path (108 bytes with its NUL).
MAX_SOCKET_PATH = 100


# --------------------------------------------------------------------------- bindings


def require_libvirt() -> ModuleType:
    """The libvirt bindings, or ConnectorError("libvirt_unavailable") saying what to install."""
    try:
        import libvirt
    except ImportError as e:
        raise ConnectorError(
            LIBVIRT_UNAVAILABLE, f"the libvirt Python bindings are missing ({e}); {INSTALL_HINT}"
        ) from e
    _quiet(libvirt)
    module: ModuleType = libvirt  # untyped bindings
    return module


_quieted = False


def _quiet(libvirt: Any) -> None:
    """libvirt prints every error to stderr unless a handler is set; ours arrive as
    exceptions, so the print is noise in the worker's log."""
    global _quieted
    if not _quieted:
        _quieted = True
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _libvirt_qemu() -> ModuleType:
    try:
        import libvirt_qemu
    except ImportError as e:
        raise ConnectorError(
            LIBVIRT_UNAVAILABLE, f"the libvirt_qemu bindings are missing ({e}); {INSTALL_HINT}"
        ) from e
    module: ModuleType = libvirt_qemu  # untyped bindings
    return module


def _message(e: BaseException) -> str:
    """libvirt's own message of an error (what virsh prints after "error: ")."""
    get = getattr(e, "get_error_message", None)
    text = get() if callable(get) else None
    return str(text or e)


@contextmanager
def _connection(uri: str) -> Iterator[Any]:
    """An open connection to ``uri``; ConnectorError("connect_failed", libvirt's message)."""
    libvirt = require_libvirt()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise ConnectorError(CONNECT_FAILED, _message(e)) from e
    try:
        yield conn
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            log.debug("closing the connection to %s failed", uri, exc_info=True)


def _lookup(conn: Any, domain: str) -> Any:
    """A domain by UUID (what Lifeboat records) or, failing that, by name."""
    libvirt = require_libvirt()
    try:
        return conn.lookupByUUIDString(domain)
    except libvirt.libvirtError:
        pass
    try:
        return conn.lookupByName(domain)
    except libvirt.libvirtError as e:
        raise ConnectorError(DOMAIN_NOT_FOUND, f"domain {domain}: {_message(e)}") from e


def _version(number: int) -> str:
    """libvirt's packed version number (major * 1e6 + minor * 1e3 + micro) as "9.0.0"."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


# --------------------------------------------------------------------------- host and discovery


def test_connection(uri: str) -> HostInfo:
    """Connect to ``uri`` and report the host; ConnectorError("connect_failed") otherwise."""
    libvirt = require_libvirt()
    with _connection(uri) as conn:
        try:
            return HostInfo(
                uri=uri,
                hostname=conn.getHostname(),
                libvirt_version=_version(conn.getLibVersion()),
                hypervisor_version=_version(conn.getVersion()),
            )
        except libvirt.libvirtError as e:
            raise ConnectorError(CONNECT_FAILED, _message(e)) from e


def _power_state(dom: Any) -> str:
    libvirt = require_libvirt()
    state = dom.state()[0]
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED):
        return "running"  # a QEMU process holds the disks: a backup job is possible
    if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
        return "stopped"
    return "unknown"


@dataclass(frozen=True)
class _XmlDisk:
    """A file-backed disk as the domain XML names it."""

    target: str
    path: str
    format: str
    boot_order: int | None


def _xml_disks(xml: str) -> list[_XmlDisk]:
    """The domain's file-backed device='disk' disks, in the XML's order."""
    out: list[_XmlDisk] = []
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.get("type") != "file":
            continue
        source, target = disk.find("source"), disk.find("target")
        if source is None or target is None or not source.get("file"):
            continue
        driver = disk.find("driver")
        boot = disk.find("boot")
        order = boot.get("order") if boot is not None else None
        out.append(
            _XmlDisk(
                target=target.get("dev", ""),
                path=source.get("file", ""),
                format=(driver.get("type") if driver is not None else None) or "raw",
                boot_order=int(order) if order and order.isdigit() else None,
            )
        )
    return out


def _boot_target(xml: str, disks: Sequence[_XmlDisk]) -> str | None:
    """The disk the domain boots from: the lowest boot order, else the first disk."""
    ordered = [d for d in disks if d.boot_order is not None]
    if ordered:
        return min(ordered, key=lambda d: d.boot_order or 0).target
    return disks[0].target if disks else None


def _virtual_size(dom: Any, disk: _XmlDisk) -> int:
    """The disk's guest-visible size: libvirt's blockInfo, or ``qemu-img info -U``."""
    libvirt = require_libvirt()
    try:
        return int(dom.blockInfo(disk.target)[0])
    except libvirt.libvirtError:
        pass
    r = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", "-f", disk.format, disk.path],
        capture_output=True,
        text=True,
        timeout=QEMU_IMG_TIMEOUT,
        check=False,
    )
    if r.returncode != 0:
        return 0  # unreadable: discovery still lists the disk; a backup reports the error
    return int(json.loads(r.stdout).get("virtual-size", 0))


def _domain_info(dom: Any) -> DomainInfo:
    libvirt = require_libvirt()
    inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    # The live XML names what QEMU has open now; a shut-off domain's is the inactive one.
    disks = _xml_disks(dom.XMLDesc(0))
    boot = _boot_target(inactive, disks)
    return DomainInfo(
        name=dom.name(),
        uuid=dom.UUIDString(),
        power_state=_power_state(dom),
        disks=tuple(
            DomainDisk(d.target, d.path, d.format, _virtual_size(dom, d), d.target == boot)
            for d in disks
        ),
        xml=inactive,
    )


def discover(uri: str) -> list[DomainInfo]:
    """Every domain of the host (running and defined), sorted by name."""
    libvirt = require_libvirt()
    with _connection(uri) as conn:
        try:
            domains = conn.listAllDomains(0)
            infos = []
            for dom in domains:
                try:
                    infos.append(_domain_info(dom))
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    # undefined while we looked: it is simply not there any more
        except libvirt.libvirtError as e:
            raise ConnectorError(CONNECT_FAILED, _message(e)) from e
    return sorted(infos, key=lambda d: d.name)


def _hypervisor(vm: VMSpec) -> HypervisorSpec:
    if vm.hypervisor is None:
        raise ConnectorError("invalid_configuration", f"VM {vm.name} has no libvirt domain set")
    return vm.hypervisor


def probe_power_state(vm: VMSpec) -> str:
    """ "running", "stopped" or "unknown" (also when the host cannot be reached)."""
    try:
        hv = _hypervisor(vm)
        with _connection(hv.uri) as conn:
            return _power_state(_lookup(conn, hv.domain))
    except ConnectorError:
        return "unknown"
    except Exception:  # a libvirtError mid-way: the state is simply not known
        log.debug("power probe of %s failed", vm.name, exc_info=True)
        return "unknown"


def validate_extension(vm: VMSpec) -> ExtensionStatus:
    """The libvirt "extension" is the QEMU guest agent: installed when it answers guest-ping.
    The hook settings are checked for structure only; script paths live in the guest."""
    problems = hook_config_problems(vm.hooks)
    if problems:
        return ExtensionStatus("failed", problems[0].code, problems[0].message)
    hv = _hypervisor(vm)
    with _connection(hv.uri) as conn:
        dom = _lookup(conn, hv.domain)
        if not dom.isActive():
            return ExtensionStatus(
                "failed", AGENT_UNAVAILABLE, "the domain is shut off: its guest agent cannot answer"
            )
        why = _Agent(dom, hv.agent_timeout).ping()
    if why is not None:
        return ExtensionStatus("failed", AGENT_UNAVAILABLE, why)
    return ExtensionStatus("installed", OK, "the QEMU guest agent answers")


def thaw(uri: str, domain: str) -> int:
    """Thaw the guest's file systems (after a worker was lost while a freeze may be held);
    the number thawed.  ConnectorError when the agent cannot be reached."""
    libvirt = require_libvirt()
    with _connection(uri) as conn:
        dom = _lookup(conn, domain)
        try:
            return int(dom.fsThaw())
        except libvirt.libvirtError as e:
            raise ConnectorError(THAW_FAILED, _message(e)) from e


# --------------------------------------------------------------------------- guest agent


class _AgentError(Exception):
    pass


class _Agent:
    """The QEMU guest agent of one domain: ping, freeze/thaw and in-guest scripts."""

    def __init__(self, dom: Any, timeout: float, vm_name: str = "") -> None:
        self.dom = dom
        self.timeout = max(1, int(round(timeout)))
        self.vm_name = vm_name

    def command(self, execute: str, **arguments: Any) -> Any:
        libvirt = require_libvirt()
        cmd: dict[str, Any] = {"execute": execute}
        if arguments:
            cmd["arguments"] = arguments
        try:
            out = _libvirt_qemu().qemuAgentCommand(self.dom, json.dumps(cmd), self.timeout, 0)
        except libvirt.libvirtError as e:
            raise _AgentError(_message(e)) from e
        if out is None:
            raise _AgentError(f"the guest agent gave no answer to {execute}")
        return json.loads(out).get("return")

    def ping(self) -> str | None:
        """None when the agent answers, else why not."""
        try:
            self.command("guest-ping")
        except _AgentError as e:
            return f"the QEMU guest agent does not answer: {e}"
        # Freeze and thaw go through libvirt's own agent calls: bound their wait too.
        try:
            self.dom.agentSetResponseTimeout(self.timeout, 0)
        except Exception:
            log.debug("agentSetResponseTimeout refused", exc_info=True)
        return None

    def execute(self, argv: Sequence[str], timeout: float, phase: str, attempt: int) -> RunResult:
        """Run argv in the guest (no shell), polling until it exits or ``timeout`` passes."""
        started = time.monotonic()
        env = [
            f"PATH={GUEST_PATH}",
            "LANG=C.UTF-8",
            f"LIFEBOAT_VM={self.vm_name}",
            f"LIFEBOAT_PHASE={phase}",
            f"LIFEBOAT_ATTEMPT={attempt}",
        ]
        try:
            pid = self.command(
                "guest-exec", path=argv[0], arg=list(argv[1:]), env=env, **{"capture-output": True}
            )["pid"]
        except (_AgentError, KeyError, TypeError) as e:
            return RunResult(tuple(argv), None, False, time.monotonic() - started, "", "", str(e))
        while True:
            try:
                status = self.command("guest-exec-status", pid=pid) or {}
            except _AgentError as e:
                return RunResult(
                    tuple(argv), None, False, time.monotonic() - started, "", "", str(e)
                )
            if status.get("exited"):
                break
            if time.monotonic() - started >= timeout:
                # The agent cannot kill what it started: the process is left to the guest.
                return RunResult(tuple(argv), None, True, time.monotonic() - started, "", "")
            time.sleep(POLL_SECONDS)
        code = status.get("exitcode")
        if code is None and status.get("signal") is not None:
            code = 128 + int(status["signal"])
        return RunResult(
            argv=tuple(argv),
            returncode=int(code) if code is not None else None,
            timed_out=False,
            seconds=time.monotonic() - started,
            stdout=_tail(status.get("out-data")),
            stderr=_tail(status.get("err-data")),
            error="" if code is not None else "the guest agent reported no exit code",
        )


def _tail(data: str | None) -> str:
    if not data:
        return ""
    text = base64.b64decode(data).decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-TAIL_LINES:])


class _GuestFreeze:
    """One domainFSFreeze/thaw cycle with a watchdog that thaws after ``freeze_timeout``."""

    def __init__(self, run: HookRun, dom: Any, limit: int) -> None:
        self.run = run
        self.dom = dom
        self.limit = limit
        self.ok = False
        self.forced = False
        self.started = 0.0
        self.ended = 0.0
        self._thawed = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.started) if self.started else 0.0

    def freeze(self) -> bool:
        libvirt = require_libvirt()
        self.started = time.monotonic()
        self._timer = threading.Timer(self.limit, self._expire)
        self._timer.daemon = True
        self._timer.start()
        try:
            count = self.dom.fsFreeze()
        except libvirt.libvirtError as e:
            self.run.lines([f"[freeze] domainFSFreeze failed: {_message(e)}"])
            self.run.warn(FREEZE_FAILED, f"guest file system freeze failed: {_message(e)}")
            self.thaw()  # a freeze may fail half-way
            return False
        self.run.lines([f"[freeze] domainFSFreeze: {count} file system(s) frozen"])
        self.ok = True
        return True

    def _expire(self) -> None:
        with self._lock:
            if self._thawed:
                return
            self.forced = True
            self.run.warn(
                FREEZE_TIMEOUT,
                f"freeze held longer than freeze_timeout={self.limit}s; thaw forced "
                f"while the backup job was being started",
            )
            self._thaw_locked()

    def thaw(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if not self._thawed and self.started:
                self._thaw_locked()

    def _thaw_locked(self) -> None:
        libvirt = require_libvirt()
        self._thawed = True
        try:
            count = self.dom.fsThaw()
            self.run.lines([f"[thaw] domainFSThaw: {count} file system(s) thawed"])
        except libvirt.libvirtError as e:
            message = (
                f"THAW FAILED for VM {self.run.vm.name}: {_message(e)}; "
                f"guest file systems may still be frozen"
            )
            log.error(message)
            self.run.lines([f"[thaw] !!! {message}"])
            self.run.warn(THAW_FAILED, message)
        finally:
            self.ended = time.monotonic()


# --------------------------------------------------------------------------- the chain


@dataclass
class _Disk:
    """One selected disk and how this backup reads it."""

    spec: DiskSpec
    xml: _XmlDisk
    size: int
    incremental: bool = False
    reason: str = ""
    detail: str = ""

    @property
    def target(self) -> str:
        return self.xml.target

    @property
    def checkpointable(self) -> bool:
        return self.xml.format == "qcow2"

    def full(self, reason: str, detail: str = "") -> None:
        self.incremental = False
        self.reason = reason
        self.detail = detail


@dataclass
class _Chain:
    """What the chain check decided for one backup."""

    disks: list[_Disk]
    parent: str | None
    checkpoint: str | None  # the checkpoint this backup creates
    notes: list[str] = field(default_factory=list)

    @property
    def incremental(self) -> bool:
        return any(d.incremental for d in self.disks)


def _checkpoint_names(dom: Any, *, topological: bool = False) -> list[str]:
    libvirt = require_libvirt()
    flags = libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL if topological else 0
    return [c.getName() for c in dom.listAllCheckpoints(flags)]


def _ours(names: Sequence[str]) -> list[str]:
    return [n for n in names if n.startswith(CHECKPOINT_PREFIX)]


def _checkpoint_targets(dom: Any, name: str) -> set[str]:
    """The disks a checkpoint holds a bitmap for."""
    xml = dom.checkpointLookupByName(name, 0).getXMLDesc(0)
    return {
        d.get("name", "")
        for d in ET.fromstring(xml).findall("./disks/disk")
        if d.get("checkpoint", "bitmap") == "bitmap"
    }


def _bitmaps(dom: Any) -> list[tuple[str, dict[str, Any]]]:
    """(node name, bitmap) for every dirty bitmap QEMU holds."""
    out = _libvirt_qemu().qemuMonitorCommand(
        dom, json.dumps({"execute": "query-named-block-nodes", "arguments": {"flat": True}}), 0
    )
    return [
        (node["node-name"], bm)
        for node in json.loads(out)["return"]
        for bm in node.get("dirty-bitmaps") or []
    ]


def _inconsistent(dom: Any) -> list[str]:
    return sorted(
        {
            bm["name"]
            for _, bm in _bitmaps(dom)
            if bm.get("inconsistent") and str(bm.get("name", "")).startswith(CHECKPOINT_PREFIX)
        }
    )


def _delete_checkpoint(dom: Any, name: str, *, metadata_only: bool) -> None:
    libvirt = require_libvirt()
    flags = libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY if metadata_only else 0
    dom.checkpointLookupByName(name, 0).delete(flags)


def _prune(dom: Any, keep: str | None, notes: list[str]) -> None:
    """Delete every lifeboat-* checkpoint but ``keep``, leaves first, merging bitmaps as
    libvirt does; one it refuses to delete is dropped from its metadata with its bitmap."""
    libvirt = require_libvirt()
    for name in reversed(_ours(_checkpoint_names(dom, topological=True))):
        if name == keep:
            continue
        try:
            _delete_checkpoint(dom, name, metadata_only=False)
            notes.append(f"[chain] deleted stale checkpoint {name}")
        except libvirt.libvirtError as e:
            notes.append(f"[chain] checkpoint {name} could not be deleted ({_message(e)})")
            _delete_checkpoint(dom, name, metadata_only=True)
            _remove_bitmaps(dom, {name}, notes)


def _reset(dom: Any, notes: list[str]) -> None:
    """Forget the whole chain: every lifeboat-* checkpoint (metadata only, leaves first: the
    bitmaps may be unusable) and every lifeboat-* bitmap QEMU still holds."""
    names = _ours(_checkpoint_names(dom, topological=True))
    for name in reversed(names):
        _delete_checkpoint(dom, name, metadata_only=True)
    if names:
        notes.append(f"[chain] deleted checkpoints {', '.join(names)}: a new chain starts")
    _remove_bitmaps(dom, None, notes)


def _remove_bitmaps(dom: Any, names: set[str] | None, notes: list[str]) -> None:
    """Remove lifeboat-* bitmaps (only ``names`` when given) from every block node."""
    libvirt = require_libvirt()
    for node, bm in _bitmaps(dom):
        name = str(bm.get("name", ""))
        if not name.startswith(CHECKPOINT_PREFIX) or (names is not None and name not in names):
            continue
        cmd = {"execute": "block-dirty-bitmap-remove", "arguments": {"node": node, "name": name}}
        try:
            _libvirt_qemu().qemuMonitorCommand(dom, json.dumps(cmd), 0)
            notes.append(f"[chain] removed bitmap {name} from {node}")
        except libvirt.libvirtError as e:
            notes.append(f"[chain] bitmap {name} on {node} could not be removed: {_message(e)}")


def _plan_chain(dom: Any, disks: list[_Disk], hv: HypervisorSpec) -> _Chain:
    """Decide per disk whether this backup is incremental, and tidy the checkpoints."""
    any_qcow2 = any(d.checkpointable for d in disks)
    chain = _Chain(disks, hv.parent_checkpoint, None)
    parent = hv.parent_checkpoint
    names = _checkpoint_names(dom)
    bad = _inconsistent(dom)
    if bad:
        chain.notes.append(f"[chain] inconsistent bitmaps: {', '.join(bad)}")
        _reset(dom, chain.notes)
        parent = None
    else:
        _prune(dom, parent if parent in names else None, chain.notes)
    covered = _checkpoint_targets(dom, parent) if parent is not None and parent in names else set()
    for d in disks:
        _decide(d, hv, parent, names, covered, bool(bad))
    if any_qcow2:
        chain.checkpoint = f"{CHECKPOINT_PREFIX}{hv.rp_id}"
    chain.parent = parent if chain.incremental else None
    return chain


def _decide(
    d: _Disk,
    hv: HypervisorSpec,
    parent: str | None,
    names: Sequence[str],
    covered: set[str],
    inconsistent: bool,
) -> None:
    before = hv.parent_disks.get(d.target)
    if not d.checkpointable:
        d.full(RAW_FORMAT)
    elif inconsistent:
        d.full(BITMAP_INCONSISTENT)
    elif hv.parent_checkpoint is None or before is None:
        # The parent may say why it has no checkpoint (a restore replaced the domain's disks).
        d.full(hv.parent_chain_break if hv.parent_chain_break in REASONS else NO_PARENT)
    elif parent not in names or d.target not in covered:
        d.full(CHECKPOINT_MISSING, f"checkpoint {hv.parent_checkpoint}")
    elif before.path != d.xml.path:
        d.full(DISK_REPLACED, f"{before.path} -> {d.xml.path}")
    elif before.size != d.size:
        d.full(DISK_RESIZED, f"{before.size} -> {d.size} bytes")
    else:
        d.incremental = True
        d.reason = ""


# --------------------------------------------------------------------------- backup job


def _backup_xml(chain: _Chain, all_targets: Sequence[str], socket: str, work: Path) -> str:
    """Pull mode on ``socket``; each selected disk full or incremental since the parent, its
    scratch file in ``work``; the domain's other disks left out."""
    root = ET.Element("domainbackup", mode="pull")
    ET.SubElement(root, "server", transport="unix", socket=socket)
    xdisks = ET.SubElement(root, "disks")
    chosen = {d.target: d for d in chain.disks}
    for target in all_targets:
        d = chosen.get(target)
        if d is None:
            ET.SubElement(xdisks, "disk", name=target, backup="no")
            continue
        attrs = {"name": target, "backup": "yes", "type": "file"}
        if d.incremental and chain.parent is not None:
            attrs.update(backupmode="incremental", incremental=chain.parent)
        else:
            attrs["backupmode"] = "full"
        xd = ET.SubElement(xdisks, "disk", attrs)
        ET.SubElement(xd, "scratch", file=str(work / f"{target}.scratch.qcow2"))
    return ET.tostring(root, encoding="unicode")


def _checkpoint_xml(name: str, disks: Sequence[_XmlDisk]) -> str:
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    xdisks = ET.SubElement(root, "disks")
    for d in disks:
        kind = "bitmap" if d.format == "qcow2" else "no"
        ET.SubElement(xdisks, "disk", name=d.target, checkpoint=kind)
    return ET.tostring(root, encoding="unicode")


@dataclass
class _Job:
    """A running pull-mode backup job and its work folder."""

    dom: Any
    work: Path
    socket: str
    begun: bool = False

    def end(self, run: HookRun) -> None:
        libvirt = require_libvirt()
        if self.begun:
            self.begun = False
            try:
                self.dom.abortJob()
            except libvirt.libvirtError as e:
                run.lines([f"[backup] ending the backup job failed: {_message(e)}"])
        shutil.rmtree(self.work, ignore_errors=True)


def _work_dir(workdir: Path) -> Path:
    """A private folder for the job's socket and scratch files; under ``workdir`` unless its
    path is too long for a unix socket."""
    workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nbd-", dir=workdir))
    if len(str(work / "nbd.sock")) > MAX_SOCKET_PATH:
        work.rmdir()
        work = Path(tempfile.mkdtemp(prefix="lifeboat-nbd-"))
    return work


def _end_leftover_job(dom: Any, run: HookRun) -> None:
    """A pull-mode backup job left running (its worker was killed, or libvirtd restarted under
    it) blocks every later backup ("cannot acquire state change lock") and keeps its export
    open: end it. Only a job exporting on a socket of ours (``nbd.sock`` in an ``nbd-`` folder
    made by ``_work_dir``) is ended; another tool's backup job is left alone and refused."""
    libvirt = require_libvirt()
    try:
        xml = dom.backupGetXMLDesc(0)
    except libvirt.libvirtError:
        return  # no backup job on the domain
    server = ET.fromstring(xml).find("server")
    socket = server.get("socket", "") if server is not None else ""
    ours = Path(socket).name == "nbd.sock" and Path(socket).parent.name.startswith(
        ("nbd-", "lifeboat-nbd-")
    )
    if not ours:
        raise ConnectorError(
            BACKUP_FAILED,
            f"another backup job is running on the domain (export {socket or 'not a socket'}); "
            "Lifeboat does not end it",
        )
    try:
        dom.abortJob()
    except libvirt.libvirtError as e:
        raise ConnectorError(
            BACKUP_FAILED, f"a backup job left behind could not be ended: {_message(e)}"
        ) from e
    run.lines([f"[backup] ended a backup job left behind (export {socket})"])


def _begin(job: _Job, chain: _Chain, domain_disks: Sequence[_XmlDisk], run: HookRun) -> None:
    """backupBegin; an incremental one that libvirt refuses is retried as a new full chain."""
    libvirt = require_libvirt()
    targets = [d.target for d in domain_disks]
    cp_xml = _checkpoint_xml(chain.checkpoint, domain_disks) if chain.checkpoint else None
    try:
        job.dom.backupBegin(_backup_xml(chain, targets, job.socket, job.work), cp_xml, 0)
    except libvirt.libvirtError as e:
        if not chain.incremental:
            raise ConnectorError(BACKUP_FAILED, f"backup-begin failed: {_message(e)}") from e
        refusal = _message(e)
        run.lines([f"[backup] incremental backup refused: {refusal}"])
        _reset(job.dom, chain.notes)
        for d in chain.disks:
            if d.incremental:
                d.full(INCREMENTAL_REFUSED, refusal)
        chain.parent = None
        try:
            job.dom.backupBegin(_backup_xml(chain, targets, job.socket, job.work), cp_xml, 0)
        except libvirt.libvirtError as e2:
            raise ConnectorError(BACKUP_FAILED, f"backup-begin failed: {_message(e2)}") from e2
    job.begun = True
    kind = "incremental" if chain.incremental else "full"
    made = f", checkpoint {chain.checkpoint}" if chain.checkpoint else ", no checkpoint"
    run.lines([f"[backup] pull-mode {kind} backup job started{made}"])


# --------------------------------------------------------------------------- snapshot


def _select(vm: VMSpec, domain_disks: Sequence[_XmlDisk]) -> list[tuple[DiskSpec, _XmlDisk]]:
    """The domain disk of each of the VM's disks, by target (or by source path)."""
    by_target = {d.target: d for d in domain_disks}
    by_path = {d.path: d for d in domain_disks}
    out = []
    for spec in vm.disks:
        found = by_target.get(spec.target) if spec.target else by_path.get(str(spec.path))
        if found is None:
            what = spec.target or str(spec.path)
            raise ConnectorError(DISK_NOT_FOUND, f"the domain has no file-backed disk {what}")
        out.append((spec, found))
    return out


def _detection(d: _Disk, hv: HypervisorSpec) -> ChangeDetection:
    if d.incremental:
        return "dirty_bitmap"
    return "full_read" if d.target in hv.parent_disks else "full"


def _disk_lines(disks: Sequence[_Disk]) -> list[str]:
    """Hook-log lines saying how each disk is read and why."""
    lines = []
    for d in disks:
        if d.incremental:
            lines.append(f"[chain] {d.target}: dirty extents since the parent checkpoint")
            continue
        detail = f" ({d.detail})" if d.detail else ""
        lines.append(f"[chain] {d.target}: read in full: {d.reason}{detail}: {REASONS[d.reason]}")
    return lines


def _views(
    disks: list[_Disk], hv: HypervisorSpec, readers: list[NbdReader], open_reader: Any
) -> list[DiskView]:
    """One view per disk, its reader already connected (dirty extents are read now)."""
    views = []
    for d in disks:
        reader: NbdReader = open_reader(d)
        readers.append(reader)
        changed = reader.dirty_extents(d.target) if d.incremental else None
        views.append(
            DiskView(
                lun=d.spec.lun,
                path=Path(d.xml.path),
                source=Path(d.xml.path),
                cloned=False,
                reader=_handing(reader),
                size=reader.size(),
                changed_extents=changed,
                change_detection=_detection(d, hv),
                change_reason=d.reason,
                target=d.target,
            )
        )
    return views


def _handing(reader: NbdReader) -> Callable[[], SourceReader]:
    def open_reader() -> SourceReader:
        return reader

    return open_reader


def _close_all(readers: list[NbdReader]) -> None:
    for r in readers:
        try:
            r.close()
        except Exception:
            log.debug("closing an NBD reader failed", exc_info=True)


def _usable_hooks(run: HookRun, h: HookConfig) -> tuple[bool, bool]:
    """(scripts usable, freeze usable) after the structural checks; like the image connector,
    a problem stops the snapshot or, with continue_on_failure, disables what it concerns."""
    problems = hook_config_problems(h)
    # freeze_command/thaw_command belong to image hosts; the guest agent freezes here.
    problems = [p for p in problems if "freeze_command" not in p.message]
    if problems and h.continue_on_failure is not True:
        raise run.fail(HookFailed(problems[0].code, problems[0].message))
    areas = {p.area for p in problems}
    for p in problems:
        effect = "scripts skipped" if p.area == AREA_SCRIPTS else "freeze skipped"
        run.warn(p.code, f"{p.message}; {effect}")
    scripts = bool(h.pre_script or h.post_script) and not areas & {AREA_SCRIPTS, AREA_GENERAL}
    freeze = h.freeze_enabled is True and not areas & {AREA_FREEZE, AREA_GENERAL}
    return scripts, freeze


def _consistency(freezer: _GuestFreeze | None, pre_ok: bool) -> Consistency:
    if freezer is not None and (not freezer.ok or freezer.forced):
        return "crash"
    if pre_ok:
        return "application"
    return "file_system" if freezer is not None else "crash"


def take_snapshot(
    vm: VMSpec,
    *,
    crash_only: bool,
    workdir: Path,
    capture: Callable[[list[DiskView]], T],
    cancel: Callable[[], bool] | None = None,
) -> SnapshotOutcome[T]:
    """Back up ``vm``'s domain through libvirt and hand its disks to ``capture``; see the
    module docstring.  Raises HookFailed, SnapshotCancelled, ConnectorError or whatever
    ``capture`` raises."""
    libvirt = require_libvirt()
    hv = _hypervisor(vm)
    run = HookRun(vm, cancel)
    run.check("start")
    with _connection(hv.uri) as conn:
        try:
            dom = _lookup(conn, hv.domain)
            domain_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            domain_disks = _xml_disks(dom.XMLDesc(0))
            selected = _select(vm, domain_disks)
            if not dom.isActive():
                return _offline(run, dom, hv, selected, domain_xml, capture)
            return _online(
                run, dom, hv, selected, domain_disks, domain_xml, crash_only, workdir, capture
            )
        except ConnectorError as e:
            raise run.fail(e) from None
        except libvirt.libvirtError as e:
            raise run.fail(ConnectorError(BACKUP_FAILED, _message(e))) from e


def _offline(
    run: HookRun,
    dom: Any,
    hv: HypervisorSpec,
    selected: list[tuple[DiskSpec, _XmlDisk]],
    domain_xml: str,
    capture: Callable[[list[DiskView]], T],
) -> SnapshotOutcome[T]:
    """A shut-off domain: each disk file through its own read-only qemu-nbd."""
    run.lines(["[snapshot] offline: the domain is shut off; disk files read through qemu-nbd"])
    disks = [_Disk(spec, x, 0, reason=OFFLINE) for spec, x in selected]
    run.lines(_disk_lines(disks))
    readers: list[NbdReader] = []
    try:
        run.check("capture")
        views = _views(disks, hv, readers, lambda d: _file_reader(d))
        result = capture(views)
    finally:
        _close_all(readers)
    parent = hv.parent_checkpoint
    kept = parent if parent is not None and parent in _checkpoint_names(dom) else None
    return SnapshotOutcome(
        "crash", "stopped", "stopped", result, run.warnings, 0.0, run.log, kept, domain_xml
    )


def _file_reader(d: _Disk) -> NbdReader:
    try:
        return NbdReader.file(d.xml.path, d.xml.format)
    except OSError as e:
        raise ConnectorError(DISK_NOT_FOUND, f"disk {d.target} ({d.xml.path}): {e}") from e


def _online(
    run: HookRun,
    dom: Any,
    hv: HypervisorSpec,
    selected: list[tuple[DiskSpec, _XmlDisk]],
    domain_disks: list[_XmlDisk],
    domain_xml: str,
    crash_only: bool,
    workdir: Path,
    capture: Callable[[list[DiskView]], T],
) -> SnapshotOutcome[T]:
    """A running domain: agent, chain, scripts and freeze around backupBegin, then capture."""
    h = run.vm.hooks
    agent = _Agent(dom, hv.agent_timeout, run.vm.name)
    scripts = freeze = False
    if not crash_only:
        why = agent.ping()
        if why is None:
            run.execute = agent.execute
            scripts, freeze = _usable_hooks(run, h)
        else:
            run.warn(AGENT_UNAVAILABLE, f"{why}; backed up crash-consistent")
    disks = [_Disk(spec, x, int(dom.blockInfo(x.target)[0])) for spec, x in selected]
    run.check("chain")
    _end_leftover_job(dom, run)
    chain = _plan_chain(dom, disks, hv)
    run.lines(chain.notes)
    chain.notes.clear()
    job = _Job(dom, _work_dir(workdir), "")
    job.socket = str(job.work / "nbd.sock")
    post = PostScript(run, h)
    freezer = _GuestFreeze(run, dom, h.freeze_timeout) if freeze else None
    pre_ok = False
    readers: list[NbdReader] = []
    try:
        if scripts:
            post.due = bool(h.post_script)
            pre_ok = run_pre_script(run, h)
        run.check("freeze")
        if freezer is not None:
            freezer.freeze()
        try:
            run.check("backup job")
            _begin(job, chain, domain_disks, run)
        finally:
            if freezer is not None:
                freezer.thaw()
            run.lines(chain.notes)
        post.run_once()
        run.lines(_disk_lines(disks))
        run.check("capture")
        views = _views(disks, hv, readers, lambda d: _export_reader(job, d))
        result = capture(views)
    finally:
        _close_all(readers)
        post.run_once(cancellable=False)
        if freezer is not None:
            freezer.thaw()
        job.end(run)
    return SnapshotOutcome(
        consistency="crash" if crash_only else _consistency(freezer, pre_ok),
        method="backup_job",
        power_state="running",
        result=result,
        warnings=run.warnings,
        freeze_seconds=freezer.seconds if freezer is not None else 0.0,
        hook_log=run.log,
        checkpoint=chain.checkpoint,
        domain_xml=domain_xml,
    )


def _export_reader(job: _Job, d: _Disk) -> NbdReader:
    contexts = [dirty_context(d.target)] if d.incremental else []
    try:
        return NbdReader.unix(job.socket, d.target, contexts=contexts)
    except OSError as e:
        raise ConnectorError(BACKUP_FAILED, f"disk {d.target}: NBD export: {e}") from e


class LibvirtConnector:
    """Connector for KVM/QEMU domains on a libvirt host."""

    kind = "libvirt"

    def probe_power_state(self, vm: VMSpec) -> str:
        return probe_power_state(vm)

    def validate_extension(self, vm: VMSpec) -> ExtensionStatus:
        return validate_extension(vm)

    def take_snapshot(
        self,
        vm: VMSpec,
        *,
        crash_only: bool,
        workdir: Path,
        capture: Callable[[list[DiskView]], T],
        cancel: Callable[[], bool] | None = None,
    ) -> SnapshotOutcome[T]:
        return take_snapshot(
            vm, crash_only=crash_only, workdir=workdir, capture=capture, cancel=cancel
        )

    def test_connection(self, uri: str) -> HostInfo:
        return test_connection(uri)

    def discover(self, uri: str) -> list[DomainInfo]:
        return discover(uri)

    def thaw(self, uri: str, domain: str) -> int:
        return thaw(uri, domain)
