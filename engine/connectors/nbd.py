"""Reading a disk over NBD with libnbd: a :class:`engine.model.SourceReader`.

Two ways to reach an export:

* :meth:`NbdReader.unix` -- a unix socket that QEMU serves during a pull-mode backup job; the
  export is named after the disk's target (``vda``).
* :meth:`NbdReader.file` -- a shut-off domain's disk file, served read-only by a ``qemu-nbd``
  that libnbd starts itself through systemd socket activation (no socket file, no port; the
  server exits when its client disconnects).

The engine reads chunks on several threads.  Each thread gets its own connection when the
server says that is safe (``can_multi_conn``: every connection sees the same data); otherwise
all threads share the first connection under a lock.  ``close()`` shuts every connection.

Extents come from NBD block status: ``base:allocation`` for the data extents (a range whose
flags include ``STATE_ZERO`` reads as zeros, so the engine need not read it) and
``qemu:dirty-bitmap:backup-<target>`` for the blocks written since the incremental backup's
checkpoint (flag 1 = dirty).

``nbd`` (Debian's python3-libnbd) is imported when a reader is made, never at engine import
time, so a machine without libnbd can run everything else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from engine.connectors.spec import ConnectorError

LIBVIRT_UNAVAILABLE = "libvirt_unavailable"
INSTALL_HINT = (
    "install them with `scripts/kvm-host install` (Debian packages python3-libvirt, "
    "python3-libnbd, libnbd-bin, qemu-utils) and `scripts/kvm-host bindings <venv>`"
)
BASE_ALLOCATION = "base:allocation"
DIRTY = 1  # flag of a dirty extent in a qemu:dirty-bitmap context
# One block-status request asks about at most this much; servers answer in pieces anyway.
STATUS_SPAN = 1 << 30

Connect = Callable[[Any], None]


def require_nbd() -> ModuleType:
    """The libnbd bindings, or ConnectorError("libvirt_unavailable") saying what to install."""
    try:
        import nbd
    except ImportError as e:
        raise ConnectorError(
            LIBVIRT_UNAVAILABLE, f"the libnbd Python bindings are missing ({e}); {INSTALL_HINT}"
        ) from e
    module: ModuleType = nbd  # untyped bindings
    return module


def dirty_context(target: str) -> str:
    """The meta context QEMU names a backup job's dirty bitmap of disk ``target`` by."""
    return f"qemu:dirty-bitmap:backup-{target}"


class NbdReader:
    """A read-only NBD export read from several threads.  Made by :meth:`unix` or
    :meth:`file`; the first connection is opened at once, so a dead export fails early."""

    def __init__(self, connect: Connect, *, export: str = "", contexts: Sequence[str] = ()):
        self._nbd = require_nbd()
        self._connect = connect
        self._export = export
        self._contexts = tuple(dict.fromkeys((BASE_ALLOCATION, *contexts)))
        self._handles: list[Any] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._closed = False
        self._first = self._open()
        self._shared = not self._first.can_multi_conn()
        self._size: int = self._first.get_size()
        self._local.handle = self._first

    @classmethod
    def unix(cls, socket: str, export: str, *, contexts: Sequence[str] = ()) -> NbdReader:
        """The export ``export`` served on the unix socket ``socket``."""
        return cls(lambda h: h.connect_unix(socket), export=export, contexts=contexts)

    @classmethod
    def file(cls, path: str, fmt: str) -> NbdReader:
        """The image file ``path`` (format ``fmt``) through a read-only qemu-nbd of its own."""
        argv = ["qemu-nbd", "--read-only", "--format", fmt, path]
        return cls(lambda h: h.connect_systemd_socket_activation(argv))

    def _open(self) -> Any:
        """A new connection asking for every meta context this reader uses."""
        h = self._nbd.NBD()
        for c in self._contexts:
            h.add_meta_context(c)
        h.set_export_name(self._export)
        try:
            self._connect(h)
        except self._nbd.Error as e:
            raise OSError(e.errno or 0, f"NBD connect failed: {e.string}") from e
        with self._lock:
            self._handles.append(h)
        return h

    def _handle(self) -> Any:
        """This thread's connection (the shared one when the server allows only one)."""
        if self._closed:
            raise OSError(0, "NBD reader is closed")
        if self._shared:
            return self._first
        h = getattr(self._local, "handle", None)
        if h is None:
            h = self._local.handle = self._open()
        return h

    def size(self) -> int:
        return self._size

    def pread(self, length: int, offset: int) -> bytes:
        h = self._handle()
        try:
            if self._shared:
                with self._lock:
                    return bytes(h.pread(length, offset))
            return bytes(h.pread(length, offset))
        except self._nbd.Error as e:
            raise OSError(e.errno or 0, f"NBD read failed: {e.string}") from e

    def extents(self, context: str) -> list[tuple[int, int, int]]:
        """(offset, length, flags) over the whole export for ``context``, merged where the
        flags are equal."""
        if context not in self._contexts:
            raise ValueError(f"{context} was not asked for when connecting")
        h = self._first
        if not h.can_meta_context(context):
            raise OSError(0, f"the NBD server does not offer {context}")
        out: list[tuple[int, int, int]] = []
        off = 0
        while off < self._size:
            got = self._status(h, context, off, min(STATUS_SPAN, self._size - off))
            if not got:
                raise OSError(0, f"NBD block status for {context} at {off} answered nothing")
            for ln, flags in got:
                ln = min(ln, self._size - off)
                if out and out[-1][2] == flags:
                    out[-1] = (out[-1][0], out[-1][1] + ln, flags)
                else:
                    out.append((off, ln, flags))
                off += ln
                if off >= self._size:
                    break
        return out

    def _status(self, h: Any, context: str, off: int, count: int) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []

        def seen(meta: str, _offset: int, entries: list[int], _err: list[int]) -> int:
            if meta == context:
                got.extend(zip(entries[0::2], entries[1::2], strict=True))
            return 0

        try:
            h.block_status(count, off, seen)
        except self._nbd.Error as e:
            raise OSError(e.errno or 0, f"NBD block status failed: {e.string}") from e
        return got

    def data_extents(self) -> list[tuple[int, int]]:
        """(start, end) of the ranges that may hold data: everything not reading as zeros."""
        zero = self._nbd.STATE_ZERO
        return [(o, o + ln) for o, ln, f in self.extents(BASE_ALLOCATION) if not f & zero]

    def dirty_extents(self, target: str) -> list[tuple[int, int]]:
        """(offset, length) of the blocks the backup job's bitmap marks as written."""
        return [(o, ln) for o, ln, f in self.extents(dirty_context(target)) if f & DIRTY]

    def close(self) -> None:
        """Shut every connection (a socket-activated qemu-nbd then exits)."""
        with self._lock:
            self._closed = True
            handles, self._handles = self._handles, []
        for h in handles:
            try:
                h.shutdown()
            except self._nbd.Error:
                pass  # already gone: nothing left to shut
        # Dropping the last reference closes each handle and reaps a socket-activated server.
        handles.clear()
        self._first = None
        self._local = threading.local()
