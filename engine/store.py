"""On-disk store: layout, atomic writes, chunk/index/manifest access and operation locks."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import (
    CorruptionError,
    Damage,
    KeyUnavailable,
    RecoveryPointExists,
    RecoveryPointNotFound,
    StoreBusy,
    StoreExists,
    StoreNotFound,
)
from .formats import (
    Codec,
    DiskIndex,
    IndexDamaged,
    ManifestDamaged,
    file_digest,
    manifest_from_bytes,
    manifest_to_bytes,
)
from .keys import KeySet, new_keyset, unwrap_keys, vault_key_id_of, wrap_keys

STORE_FORMAT = "lifeboat-store"
STORE_VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_CODEC = "zstd:1"
TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, replace: bool = True, sync: bool = True) -> None:
    """Write data to path via a temp file + rename (+ fsync of file and directory).

    With replace=False the final step is a hard link, failing with FileExistsError if the
    name exists, so two writers can never both commit the same name.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:12]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


def _finish_put(fd: int, tmp: Path, path: Path, durable: bool) -> None:
    try:
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


class Syncer:
    """Background fsync + rename of freshly written chunk files (bounded backlog)."""

    def __init__(self, max_pending: int = 64) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifeboat-sync")
        self.slots = threading.BoundedSemaphore(max_pending)
        self.futures: list[Future[None]] = []
        self.lock = threading.Lock()

    def submit(self, fd: int, tmp: Path, path: Path) -> None:
        self.slots.acquire()

        def job() -> None:
            try:
                _finish_put(fd, tmp, path, True)
            finally:
                self.slots.release()

        with self.lock:
            self.futures.append(self.pool.submit(job))

    def wait(self) -> None:
        """Wait for every submitted chunk; raises the first error."""
        with self.lock:
            futures, self.futures = self.futures, []
        for f in futures:
            f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> Syncer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(s: str | None) -> datetime | None:
    if s is None:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class Store:
    """An open store. `keys` is None for a keyless handle (scrub only)."""

    def __init__(self, path: Path, settings: dict[str, Any], keys: KeySet | None) -> None:
        self.path = path
        self.settings = settings
        self.keys = keys
        self.store_id: str = settings["store_id"]
        self.codec = Codec.parse(settings["codec"])
        self.chunk_size: int = int(settings["chunk_size"])
        self.durable = os.environ.get("LIFEBOAT_UNSAFE_NO_FSYNC") != "1"

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, codec={self.codec}, chunk_size={self.chunk_size})"

    # ------------------------------------------------------------------ open / init

    @staticmethod
    def _read_settings(path: Path) -> dict[str, Any]:
        try:
            settings = json.loads((path / "store.json").read_bytes())
        except FileNotFoundError as e:
            raise StoreNotFound(f"no store at {path}") from e
        except (OSError, ValueError) as e:
            raise StoreNotFound(f"store settings at {path} unreadable: {e}") from e
        if settings.get("format") != STORE_FORMAT or settings.get("version") != STORE_VERSION:
            raise StoreNotFound(f"{path} is not a lifeboat store of a known version")
        return dict(settings)

    @classmethod
    def open(cls, path: str | os.PathLike[str], kek: bytes | None) -> Store:
        p = Path(path)
        settings = cls._read_settings(p)
        keys = None
        if kek is not None:
            keys = unwrap_keys(cls.read_keys_file(p), kek)
        return cls(p, settings, keys)

    @staticmethod
    def read_keys_file(path: Path) -> bytes:
        try:
            return (path / "keys.json").read_bytes()
        except FileNotFoundError as e:
            raise StoreNotFound(f"no keys file in store {path}") from e

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        kek: bytes,
        *,
        codec: str = DEFAULT_CODEC,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        keys_from: str | os.PathLike[str] | None = None,
    ) -> Store:
        p = Path(path)
        parsed = Codec.parse(codec)
        if chunk_size < 4096 or chunk_size > (64 << 20) or chunk_size & (chunk_size - 1):
            raise ValueError("chunk_size must be a power of two between 4 KiB and 64 MiB")
        if (p / "store.json").exists():
            raise StoreExists(f"a store already exists at {p}")
        if keys_from is not None:
            keys_doc = cls.read_keys_file(Path(keys_from))
            unwrap_keys(keys_doc, kek)  # the same KEK must open both tiers
        else:
            keys_doc = wrap_keys(new_keyset(), kek)
        p.mkdir(parents=True, exist_ok=True)
        for sub in ("chunks", "indexes", "manifests", "leases"):
            (p / sub).mkdir(exist_ok=True)
        (p / "lock").touch()
        try:
            atomic_write(p / "keys.json", keys_doc, replace=False)
        except FileExistsError:
            # Another init of this store (a second worker's first backup of a new vault) wrote
            # its keys first: those are the store's. Replacing them would leave that writer
            # encrypting under keys the store no longer holds, and its data unreadable.
            keys_doc = cls.read_keys_file(p)
            unwrap_keys(keys_doc, kek)
        settings = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "store_id": str(uuid.uuid4()),
            "vault_key_id": vault_key_id_of(keys_doc),
            "codec": str(parsed),
            "chunk_size": chunk_size,
            "created": iso(utcnow()),
        }
        try:
            atomic_write(
                p / "store.json",
                (json.dumps(settings, indent=2) + "\n").encode(),
                replace=False,
            )
        except FileExistsError as e:
            raise StoreExists(f"a store already exists at {p}") from e
        return cls.open(p, kek)

    def require_keys(self) -> KeySet:
        if self.keys is None:
            raise KeyUnavailable("this store handle was opened without a key")
        return self.keys

    # ------------------------------------------------------------------ chunks

    def chunk_path(self, cid: bytes) -> Path:
        h = cid.hex()
        return self.path / "chunks" / h[:2] / h

    def has_chunk(self, cid: bytes) -> bool:
        return os.path.exists(self.chunk_path(cid))

    def put_chunk(self, cid: bytes, blob: bytes, syncer: Syncer | None = None) -> Path:
        """Store a framed chunk atomically under its id; returns its directory.

        The final name appears only once the data is durable (fsync of the temp file, then
        rename), so an existing chunk file is always complete. With a syncer the fsync and
        rename happen on the syncer's thread, overlapping with the caller's next chunk; call
        syncer.wait() before committing anything that references the chunk. Directory
        entries are made durable by sync_dirs().
        """
        path = self.chunk_path(cid)
        tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:12]}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if syncer is not None and self.durable:
            syncer.submit(fd, tmp, path)
        else:
            _finish_put(fd, tmp, path, self.durable)
        return path.parent

    def sync_dirs(self, dirs: set[Path]) -> None:
        if self.durable:
            for d in sorted(dirs):
                fsync_dir(d)
            fsync_dir(self.path / "chunks")

    def get_chunk(self, cid: bytes) -> bytes:
        """Raw stored bytes of a chunk; FileNotFoundError if absent."""
        with open(self.chunk_path(cid), "rb") as f:
            return f.read()

    def iter_chunk_files(self) -> Iterator[Path]:
        root = self.path / "chunks"
        for sub in sorted(os.scandir(root), key=lambda e: e.name):
            if not sub.is_dir():
                continue
            for ent in os.scandir(sub.path):
                yield Path(ent.path)

    # ------------------------------------------------------------------ indexes

    def index_dir(self, rp_id: str) -> Path:
        return self.path / "indexes" / rp_id

    def index_path(self, rp_id: str, lun: int) -> Path:
        return self.index_dir(rp_id) / f"{lun}.idx"

    def write_index(self, rp_id: str, lun: int, data: bytes) -> None:
        d = self.index_dir(rp_id)
        d.mkdir(exist_ok=True)
        atomic_write(self.index_path(rp_id, lun), data, sync=self.durable)

    def load_index(self, rp_id: str, disk: dict[str, Any]) -> DiskIndex:
        """Read and check a disk index against the manifest's recorded checksum."""
        lun = int(disk["lun"])
        try:
            data = self.index_path(rp_id, lun).read_bytes()
        except FileNotFoundError as e:
            raise CorruptionError(
                f"index of rp {rp_id} lun {lun} is missing",
                [Damage(rp_id, lun, None, "index", "missing")],
            ) from e
        if file_digest(data) != disk["index_blake3"]:
            raise CorruptionError(
                f"index of rp {rp_id} lun {lun} is damaged",
                [Damage(rp_id, lun, None, "index", "checksum does not match manifest")],
            )
        try:
            idx = DiskIndex.from_bytes(data)
        except IndexDamaged as e:
            raise CorruptionError(
                f"index of rp {rp_id} lun {lun} is damaged",
                [Damage(rp_id, lun, None, "index", str(e))],
            ) from e
        if idx.disk_size != int(disk["size"]):
            raise CorruptionError(
                f"index of rp {rp_id} lun {lun} has the wrong size",
                [Damage(rp_id, lun, None, "index", "size does not match manifest")],
            )
        return idx

    # ------------------------------------------------------------------ manifests

    def manifest_path(self, rp_id: str) -> Path:
        return self.path / "manifests" / f"{rp_id}.json"

    def has_manifest(self, rp_id: str) -> bool:
        return self.manifest_path(rp_id).exists()

    def list_rp_ids(self) -> list[str]:
        out = []
        for ent in os.scandir(self.path / "manifests"):
            name = ent.name
            if name.endswith(".json") and not name.startswith("."):
                out.append(name[: -len(".json")])
        return sorted(out)

    def read_manifest_bytes(self, rp_id: str) -> bytes:
        _check_rp_id(rp_id)
        try:
            return self.manifest_path(rp_id).read_bytes()
        except FileNotFoundError as e:
            raise RecoveryPointNotFound(f"recovery point {rp_id} not found in {self.path}") from e

    def read_manifest(self, rp_id: str) -> dict[str, Any]:
        return self.parse_manifest(rp_id, self.read_manifest_bytes(rp_id), keyed=True)

    def parse_manifest(self, rp_id: str, data: bytes, *, keyed: bool) -> dict[str, Any]:
        """Check a manifest (checksum; MAC when keyed) and return its body."""
        try:
            body = manifest_from_bytes(data, self.require_keys() if keyed else None)
        except ManifestDamaged as e:
            raise CorruptionError(
                f"manifest of rp {rp_id} is damaged: {e}",
                [Damage(rp_id, None, None, "manifest", str(e))],
            ) from e
        if body.get("rp_id") != rp_id:
            raise CorruptionError(
                f"manifest of rp {rp_id} names another rp",
                [Damage(rp_id, None, None, "manifest", "rp id mismatch")],
            )
        return body

    def commit_manifest(self, rp_id: str, body: dict[str, Any], *, replace: bool) -> bytes:
        data = manifest_to_bytes(body, self.require_keys())
        self.commit_manifest_bytes(rp_id, data, replace=replace)
        return data

    def commit_manifest_bytes(self, rp_id: str, data: bytes, *, replace: bool) -> None:
        try:
            atomic_write(self.manifest_path(rp_id), data, replace=replace, sync=self.durable)
        except FileExistsError as e:
            raise RecoveryPointExists(f"recovery point {rp_id} already exists") from e

    # ------------------------------------------------------------------ locks and leases

    @contextlib.contextmanager
    def operation(self, op: str, **info: Any) -> Iterator[Path]:
        """Hold a shared store lock and a lease file for an in-flight operation.

        GC sweeps only under the exclusive lock, so nothing is swept while this is held. The
        lock is an flock: it dies with the process, so a killed backup never blocks GC.
        """
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            lease = self.path / "leases" / f"{uuid.uuid4()}.json"
            doc = {"op": op, "pid": os.getpid(), "host": socket.gethostname()}
            doc.update({k: v for k, v in info.items() if v is not None})
            doc["started"] = iso(utcnow())
            atomic_write(lease, json.dumps(doc).encode(), sync=False)
            try:
                yield lease
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(lease)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def exclusive(self, wait_seconds: float) -> Iterator[None]:
        """Exclusive store lock (GC sweep); StoreBusy if in-flight operations hold it."""
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + wait_seconds
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreBusy(
                            f"store {self.path} is busy with in-flight operations"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def leases(self) -> list[dict[str, Any]]:
        out = []
        for ent in os.scandir(self.path / "leases"):
            if ent.name.startswith("."):
                continue
            try:
                out.append(json.loads(Path(ent.path).read_bytes()) | {"file": ent.name})
            except (OSError, ValueError):
                continue
        return out


def _check_rp_id(rp_id: str) -> None:
    try:
        ok = str(uuid.UUID(rp_id)) == rp_id
    except (ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise RecoveryPointNotFound(f"not a recovery point id: {rp_id!r}")
