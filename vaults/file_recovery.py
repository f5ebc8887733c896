"""File-level recovery: browse and download files of a recovery point without restoring it.

The file system is read through the engine's random-access reader over the RP's chunks
(`engine.open_disk` → `engine.fs`), so only the blocks a listing or a download needs are
fetched and verified; nothing is mounted and nothing needs root. Browsing needs an open
session for that RP and user: read-only, audited, expiring, and it can be ended at once.
Pages and the API both call these functions.

Damaged stored data is never served as a success. A chunk that fails its check stops the
read: before the first byte of a download (or during a listing) the caller gets `Unreadable`
(pages and the API answer 409); later, the download's iterator raises, so the web server
aborts the connection and the client sees a body shorter than its Content-Length (a folder's
zip also lacks its central directory). Either way the damage is logged, audited for a download,
and raised as a Sev-1 alert on the recovery point, which the file-recovery page shows.
"""

import logging
import mimetypes
import posixpath
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO, cast

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from django.utils.http import content_disposition_header

import engine
import engine.fs as efs
from portal.options import option
from security import alerts
from vaults import access, audit
from vaults.models import FileRecoverySession, RecoveryPoint, lun_label
from vaults.stores import read_store

log = logging.getLogger(__name__)

# A disk, partition or path as a page's query string or the API's parameters give it.
Param = str | int | None


def display_name(name: str) -> str:
    """A file name as pages and the API show it. ext4 names need not be UTF-8: the engine keeps
    such bytes as lone surrogates (so the path still opens), which no page or JSON can carry;
    they are shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_utf8(name: str) -> bool:
    """Whether the name is shown as it is on disk (`display_name` changes nothing)."""
    return display_name(name) == name


class Unreadable(Exception):
    """Reading the recovery point failed (damaged stored data, or a file system that
    contradicts itself); the text says what and where, for the user."""


def session_lifetime() -> timedelta:
    return timedelta(hours=option("FILE_RECOVERY_HOURS", 12))


def open_session(
    rp: RecoveryPoint, *, by: User, request: HttpRequest | None = None
) -> FileRecoverySession:
    access.require(by, rp.vault, "file_recovery")
    if rp.soft_deleted_at is not None:
        raise ValidationError({"detail": "This recovery point is soft-deleted; undelete it first."})
    try:
        read_store(rp)
    except engine.KeyUnavailable as e:
        raise ValidationError({"detail": f"The vault's encryption key is unavailable: {e}"}) from e
    except engine.EngineError as e:
        raise ValidationError({"detail": f"The recovery point cannot be read: {e}"}) from e
    session = FileRecoverySession.objects.create(
        vault=rp.vault,
        recovery_point=rp,
        user=by,
        expires_at=timezone.now() + session_lifetime(),
    )
    audit.record(
        "file_recovery.open",
        actor=by,
        request=request,
        vault=rp.vault,
        obj=rp,
        after={"session": str(session.pk), "expires_at": session.expires_at.isoformat()},
    )
    return session


def end_session(
    session: FileRecoverySession, *, by: User, request: HttpRequest | None = None
) -> None:
    access.require(by, session.vault, "file_recovery")
    if session.ended_at is None:
        session.ended_at = timezone.now()
        session.save(update_fields=["ended_at"])
        audit.record(
            "file_recovery.end",
            actor=by,
            request=request,
            vault=session.vault,
            obj=session.recovery_point,
            after={"session": str(session.pk)},
        )


def current_session(rp: RecoveryPoint, user: User) -> FileRecoverySession | None:
    return (
        FileRecoverySession.objects.filter(
            recovery_point=rp, user=user, ended_at=None, expires_at__gt=timezone.now()
        )
        .order_by("-created_at")
        .first()
    )


def require_session(rp: RecoveryPoint, user: User) -> FileRecoverySession:
    access.require(user, rp.vault, "file_recovery")
    session = current_session(rp, user)
    if session is None:
        raise PermissionDenied(
            "No open file-recovery session for this recovery point (it expired or was ended); "
            "open one first."
        )
    return session


def _disk_lun(rp: RecoveryPoint, disk: Param) -> int:
    luns = [d["lun"] for d in rp.disks]
    try:
        lun = int(disk if disk is not None else "")
    except ValueError:
        raise ValidationError({"disk": f"Give a LUN of this recovery point: {luns}."}) from None
    if lun not in luns:
        raise ValidationError({"disk": f"LUN {lun} is not in this recovery point ({luns})."})
    return lun


def _partition(value: Param) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError({"partition": "Must be a partition number."}) from None


def _damage(exc: BaseException) -> engine.CorruptionError | None:
    """The chunk check that failed under `exc`: the file-system layer reports a failed disk
    read as its own error, caused by the engine's."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, engine.CorruptionError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _reading_failed(rp: RecoveryPoint, what: str, exc: BaseException) -> str:
    """Log a failed read of `rp` (`what`: which read, of what) and raise the alert that
    damage deserves; the sentence for the user."""
    damage = _damage(exc)
    if damage is None:
        log.error("recovery point %s (vault %s): %s failed: %s", rp.pk, rp.vault, what, exc)
        return f"{what[:1].upper()}{what[1:]} failed: {exc}"
    where = damage.details[0] if damage.details else damage
    log.error(
        "recovery point %s (vault %s): %s failed on damaged stored data: %s",
        rp.pk,
        rp.vault,
        what,
        where,
    )
    alerts.data_damaged(
        rp,
        f"The recovery point of {rp.protected_item.vm.name} taken {rp.time:%Y-%m-%d %H:%M} UTC "
        f"is damaged: the {what} failed ({where}). What the damaged part held cannot be "
        "recovered from this recovery point; use another one and verify the vault.",
    )
    return (
        f"The stored data of this recovery point is damaged: the {what} failed ({where}). "
        "An alert was raised; try another recovery point."
    )


def _what(action: str, lun: int, partition: Param, path: str) -> str:
    part = f", partition {partition}" if partition not in (None, "") else ""
    return f"{action} {path} ({lun_label(lun)}{part})"


def _key_unavailable(e: engine.KeyUnavailable) -> ValidationError:
    return ValidationError({"detail": f"The vault's encryption key is unavailable: {e}"})


@contextmanager
def _reading(rp: RecoveryPoint, what: str) -> Iterator[None]:
    """Engine errors in the block become `Unreadable`, logged (and alerted when the stored
    data is damaged)."""
    try:
        yield
    except engine.KeyUnavailable as e:
        raise _key_unavailable(e) from e
    except engine.EngineError as e:
        raise Unreadable(_reading_failed(rp, what, e)) from e


@contextmanager
def _opened(
    rp: RecoveryPoint, disk: Param, partition: Param, store: engine.Store | None = None
) -> Iterator[efs.FileSystem]:
    """The file system of a disk (and partition) of `rp`; engine errors pass through."""
    lun, part = _disk_lun(rp, disk), _partition(partition)
    reader = engine.open_disk(store or read_store(rp), str(rp.pk), lun)
    try:
        try:
            fs = efs.open_filesystem(reader, part)
        except efs.PartitionNotFound as e:
            raise ValidationError({"partition": str(e)}) from e
        except efs.UnsupportedFilesystem as e:
            if _damage(e) is not None:
                raise
            raise ValidationError({"partition": str(e)}) from e
        with fs:
            yield fs
    finally:
        reader.close()


def partitions(rp: RecoveryPoint, user: User, disk: Param) -> list[efs.Partition]:
    require_session(rp, user)
    lun = _disk_lun(rp, disk)
    with _reading(rp, f"listing of the partitions ({lun_label(lun)})"):
        with engine.open_disk(read_store(rp), str(rp.pk), lun) as reader:
            return efs.list_partitions(reader)


def list_dir(
    rp: RecoveryPoint, user: User, *, disk: Param, partition: Param = None, path: str = "/"
) -> list[efs.Entry]:
    require_session(rp, user)
    path = path or "/"
    what = _what("listing of", _disk_lun(rp, disk), partition, path)
    with _reading(rp, what), _opened(rp, disk, partition) as fs:
        try:
            return fs.listdir(path)
        except (efs.PathNotFound, efs.NotADirectory) as e:
            raise ValidationError({"path": str(e)}) from e


@dataclass(frozen=True)
class Download:
    """What a download response needs: the byte stream, and `size` (the Content-Length) for
    a single file; a folder's zip is as long as it turns out."""

    name: str
    content_type: str
    chunks: Iterator[bytes]
    size: int | None

    def response(self, filename: str) -> StreamingHttpResponse:
        """The streamed response, named `filename`. A file's Content-Length lets the client
        tell a body cut short by a failed read from the whole file."""
        response = StreamingHttpResponse(self.chunks, content_type=self.content_type)
        if self.size is not None:
            response["Content-Length"] = str(self.size)
        disposition = content_disposition_header(True, filename)
        assert disposition is not None  # an attachment always has one
        response["Content-Disposition"] = disposition
        response["X-Content-Type-Options"] = "nosniff"
        return response


def download(
    rp: RecoveryPoint,
    user: User,
    *,
    disk: Param,
    partition: Param = None,
    path: str,
    request: HttpRequest | None = None,
) -> Download:
    """A file as it is, or a folder as a zip archive, checked as it streams.

    The first piece is read here, so damage at the start is `Unreadable` before any response.
    The stream opens its own reader, so the response can stream after this returns; if a
    later piece fails, it raises (it never just ends)."""
    require_session(rp, user)
    what = _what("download of", _disk_lun(rp, disk), partition, path)
    details: dict[str, Param] = {"disk": disk, "partition": partition, "path": path}
    try:
        with _opened(rp, disk, partition) as fs:
            try:
                entry = fs.stat(path)
            except efs.PathNotFound as e:
                raise ValidationError({"path": str(e)}) from e
        if entry.kind not in ("file", "dir"):
            raise ValidationError({"path": f"{path} is a {entry.kind}, not a file or folder."})
        details["kind"] = entry.kind
        if entry.kind == "file":
            name = posixpath.basename(path) or "file"
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            size = entry.size
            chunks = _file_bytes(rp, disk, partition, path)
        else:
            name, content_type, size = efs.archive_name(path, "zip"), "application/zip", None
            chunks = _archive_bytes(rp, disk, partition, path)
        first = next(chunks, b"")
    except engine.KeyUnavailable as e:
        raise _key_unavailable(e) from e
    except engine.EngineError as e:
        raise Unreadable(_failed_download(rp, user, request, what, details, e)) from e
    audit.record(
        "file_recovery.download",
        actor=user,
        request=request,
        vault=rp.vault,
        obj=rp,
        after=details,
    )
    stream = _checked(rp, user, request, what, details, first, chunks)
    return Download(name, content_type, stream, size)


def _failed_download(
    rp: RecoveryPoint,
    user: User,
    request: HttpRequest | None,
    what: str,
    details: dict[str, Param],
    exc: BaseException,
) -> str:
    text = _reading_failed(rp, what, exc)
    audit.record(
        "file_recovery.download_failed",
        actor=user,
        request=request,
        vault=rp.vault,
        obj=rp,
        after={**details, "error": text},
    )
    return text


def _checked(
    rp: RecoveryPoint,
    user: User,
    request: HttpRequest | None,
    what: str,
    details: dict[str, Param],
    first: bytes,
    rest: Iterator[bytes],
) -> Iterator[bytes]:
    """`first`, then `rest`; a failure part-way is logged, audited and alerted, then raised
    again, so the server aborts the response instead of ending it as if it were whole."""
    try:
        yield first
        yield from rest
    except Exception as e:
        _failed_download(rp, user, request, what, details, e)
        raise


def _file_bytes(rp: RecoveryPoint, disk: Param, partition: Param, path: str) -> Iterator[bytes]:
    with _opened(rp, disk, partition) as fs:
        yield from fs.read_file(path)


def _archive_bytes(rp: RecoveryPoint, disk: Param, partition: Param, path: str) -> Iterator[bytes]:
    # The archive is written by a thread into a bounded queue, so memory stays small
    # however big the folder is, and the file system is used by that one thread only.
    sink = _QueueWriter()
    store = read_store(rp)  # here: the thread needs no database

    def produce() -> None:
        try:
            with _opened(rp, disk, partition, store) as fs:
                # The zip writer needs only write, flush and tell of a file.
                efs.archive_folder(fs, path, cast(BinaryIO, sink), fmt="zip")
        except BaseException as e:  # handed to the consumer, which re-raises it
            sink.queue.put(e)
        else:
            sink.queue.put(None)

    worker = threading.Thread(target=produce, daemon=True, name="file-recovery-archive")
    worker.start()
    try:
        while (item := sink.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        sink.closed = True
        worker.join(timeout=1)


class _QueueWriter:
    """A non-seekable file object whose writes go into a bounded queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = bytes(data)
        while True:
            if self.closed:
                raise BrokenPipeError("download aborted")
            try:
                self.queue.put(chunk, timeout=1)
                return len(chunk)
            except queue.Full:
                continue

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise OSError("not seekable")
