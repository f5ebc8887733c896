"""File-level recovery: browse and download files of a recovery point without restoring it.

The file system is read through the engine's random-access reader over the RP's chunks
(`engine.open_disk` → `engine.fs`), so only the blocks a listing or a download needs are
fetched and verified; nothing is mounted and nothing needs root. Browsing needs an open
session for that RP and user: read-only, audited, expiring, and it can be ended at once.
Pages and the API both call these functions.
"""

import mimetypes
import posixpath
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

import engine
import engine.fs as efs
from jobs.stores import kek_for
from vaults import access, audit
from vaults.models import FileRecoverySession, RecoveryPoint

DEFAULT_SESSION_HOURS = 12


def session_lifetime() -> timedelta:
    return timedelta(hours=float(settings.LIFEBOAT.get("FILE_RECOVERY_HOURS", 12)))


def _store_for(rp: RecoveryPoint) -> engine.Store:
    """The snapshot tier when it still holds the RP (fast, local), else the vault tier."""
    kek = kek_for(rp.vault)
    if rp.in_snapshot_tier:
        path = rp.protected_item.vm.host.snapshot_store_path(rp.vault)
        try:
            store = engine.open_store(path, kek)
            if store.has_manifest(str(rp.pk)):
                return store
        except engine.StoreNotFound:
            pass
    return engine.open_store(rp.vault.store_path, kek)


def open_session(rp: RecoveryPoint, *, by, request=None) -> FileRecoverySession:
    access.require(by, rp.vault, "file_recovery")
    if rp.soft_deleted_at is not None:
        raise ValidationError({"detail": "This recovery point is soft-deleted; undelete it first."})
    try:
        _store_for(rp)
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


def end_session(session: FileRecoverySession, *, by, request=None) -> None:
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


def current_session(rp: RecoveryPoint, user) -> FileRecoverySession | None:
    return (
        FileRecoverySession.objects.filter(
            recovery_point=rp, user=user, ended_at=None, expires_at__gt=timezone.now()
        )
        .order_by("-created_at")
        .first()
    )


def require_session(rp: RecoveryPoint, user) -> FileRecoverySession:
    access.require(user, rp.vault, "file_recovery")
    session = current_session(rp, user)
    if session is None:
        raise PermissionDenied(
            "No open file-recovery session for this recovery point (it expired or was ended); "
            "open one first."
        )
    return session


def _disk_lun(rp: RecoveryPoint, disk) -> int:
    luns = [d["lun"] for d in rp.disks]
    try:
        lun = int(disk)
    except (TypeError, ValueError):
        raise ValidationError({"disk": f"Give a LUN of this recovery point: {luns}."}) from None
    if lun not in luns:
        raise ValidationError({"disk": f"LUN {lun} is not in this recovery point ({luns})."})
    return lun


def _partition(value) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError({"partition": "Must be a partition number."}) from None


@contextmanager
def _opened(rp: RecoveryPoint, disk, partition) -> Iterator[efs.FileSystem]:
    lun, part = _disk_lun(rp, disk), _partition(partition)
    try:
        reader = engine.open_disk(_store_for(rp), str(rp.pk), lun)
    except engine.KeyUnavailable as e:
        raise ValidationError({"detail": f"The vault's encryption key is unavailable: {e}"}) from e
    try:
        try:
            fs = efs.open_filesystem(reader, part)
        except efs.PartitionNotFound as e:
            raise ValidationError({"partition": str(e)}) from e
        except efs.UnsupportedFilesystem as e:
            raise ValidationError({"partition": str(e)}) from e
        with fs:
            yield fs
    finally:
        reader.close()


def partitions(rp: RecoveryPoint, user, disk) -> list[efs.Partition]:
    require_session(rp, user)
    lun = _disk_lun(rp, disk)
    with engine.open_disk(_store_for(rp), str(rp.pk), lun) as reader:
        return efs.list_partitions(reader)


def list_dir(rp: RecoveryPoint, user, *, disk, partition=None, path="/") -> list[efs.Entry]:
    require_session(rp, user)
    with _opened(rp, disk, partition) as fs:
        try:
            return fs.listdir(path or "/")
        except (efs.PathNotFound, efs.NotADirectory) as e:
            raise ValidationError({"path": str(e)}) from e


def download(rp: RecoveryPoint, user, *, disk, partition=None, path, request=None):
    """(file name, content type, byte iterator): a file as it is, a folder as a zip archive.

    The iterator opens its own reader, so the response can stream after this returns."""
    require_session(rp, user)
    with _opened(rp, disk, partition) as fs:
        try:
            entry = fs.stat(path)
        except efs.PathNotFound as e:
            raise ValidationError({"path": str(e)}) from e
    if entry.kind not in ("file", "dir"):
        raise ValidationError({"path": f"{path} is a {entry.kind}, not a file or folder."})
    audit.record(
        "file_recovery.download",
        actor=user,
        request=request,
        vault=rp.vault,
        obj=rp,
        after={"disk": disk, "partition": partition, "path": path, "kind": entry.kind},
    )

    if entry.kind == "file":
        name = posixpath.basename(path) or "file"

        def file_bytes() -> Iterator[bytes]:
            with _opened(rp, disk, partition) as fs:
                yield from fs.read_file(path)

        return name, mimetypes.guess_type(name)[0] or "application/octet-stream", file_bytes()

    def archive_bytes() -> Iterator[bytes]:
        # The archive is written by a thread into a bounded queue, so memory stays small
        # however big the folder is, and the file system is used by that one thread only.
        sink = _QueueWriter()

        def produce() -> None:
            try:
                with _opened(rp, disk, partition) as fs:
                    efs.archive_folder(fs, path, sink, fmt="zip")
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

    return efs.archive_name(path, "zip"), "application/zip", archive_bytes()


class _QueueWriter:
    """A non-seekable file object whose writes go into a bounded queue."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue(maxsize=16)
        self.closed = False

    def write(self, data) -> int:
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
