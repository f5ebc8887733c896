"""A store: layout, chunk/index/manifest access and operation locks, on a local directory or
an object store (S3, Azure Blob) through engine.backends."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Self

from .backends import Backend, ObjectInfo, ObjectTarget, open_backend
from .backends.local import TMP_PREFIX, LocalBackend, atomic_write, fsync_dir
from .backends.objects import ObjectBackend, lock_date
from .errors import (
    CorruptionError,
    Damage,
    EngineError,
    KeyUnavailable,
    RecoveryPointExists,
    RecoveryPointNotFound,
    StoreBusy,
    StoreExists,
    StoreNotFound,
    StoreUnavailable,
)
from .formats import (
    ChunkDamaged,
    Codec,
    DeltaRef,
    DiskIndex,
    IndexDamaged,
    ManifestDamaged,
    decode_chunk,
    delta_ref,
    file_digest,
    manifest_from_bytes,
    manifest_to_bytes,
)
from .keys import KeySet, new_keyset, unwrap_keys, vault_key_id_of, wrap_keys

STORE_FORMAT = "lifeboat-store"
# Version 2 stores may hold delta chunks (FORMAT.md); version 1 stores are read as before and
# are never given a delta, so code that reads only version 1 can still read them.
STORE_VERSION = 2
READABLE_VERSIONS = (1, 2)
# Base blobs read ahead by prefetch_chunk and not yet taken by read_chunk, at most (1 MiB each
# with the default chunk size).
PREFETCH_CAP = 32
# A reader follows at most this many deltas to a whole chunk: far above what writers make
# (DELTA_DEPTH in engine.delta), so only a damaged store reaches it.
MAX_CHAIN = 64
DEFAULT_CHUNK_SIZE = 1 << 20
DEFAULT_CODEC = "zstd:1"


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


class Backlog:
    """Work run on a few background threads with a bounded backlog, so the pipeline's threads
    go on reading and encoding meanwhile; wait() before committing raises the first error."""

    def __init__(self, threads: int, max_pending: int, name: str) -> None:
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self.slots = threading.BoundedSemaphore(max_pending)
        self.futures: list[Future[None]] = []
        self.lock = threading.Lock()

    def run(self, call: Callable[[], None]) -> None:
        self.slots.acquire()

        def job() -> None:
            try:
                call()
            finally:
                self.slots.release()

        with self.lock:
            self.futures.append(self.pool.submit(job))

    def wait(self) -> None:
        """Wait for everything submitted; raises the first error."""
        with self.lock:
            futures, self.futures = self.futures, []
        for f in futures:
            f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Syncer(Backlog):
    """Background fsync + rename of freshly written chunk files, one at a time."""

    def __init__(self, max_pending: int = 64) -> None:
        super().__init__(1, max_pending, "lifeboat-sync")

    def submit(self, fd: int, tmp: Path, path: Path) -> None:
        self.run(partial(_finish_put, fd, tmp, path, True))


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


class Uploader(Backlog):
    """Chunk puts to an object store, many in flight (a bounded backlog), so the pipeline's
    threads go on reading and encoding while requests travel. wait() before committing."""

    def __init__(self, in_flight: int = 16) -> None:
        super().__init__(in_flight, in_flight * 2, "lifeboat-put")


# Object stores: how long a lease or the GC lock lives without a refresh (its holder refreshes
# it every third of that), and how many requests an operation keeps in flight.
LEASE_SECONDS = 120.0
OBJECT_IO_THREADS = 16
GC_LOCK = "gc.lock"

# S3 Object Lock: a chunk's lock is extended to the date a recovery point needs rounded up to
# the next step (on a grid from the epoch), so a chunk that daily backups keep referencing
# costs one PutObjectRetention a week instead of one a day; it is kept at most a step longer.
LOCK_STEP = timedelta(days=7)
# The lock ledger (`locks/`): more parts than this after a load are merged into one.
LEDGER_PARTS = 16
LEDGER_KIND = "chunk-locks"


def chunk_key(cid: bytes) -> str:
    h = cid.hex()
    return f"chunks/{h[:2]}/{h}"


def delta_key(cid: bytes, base: bytes) -> str:
    """The empty object that records "chunk `cid` is stored as a delta on `base`", so GC learns
    every chain from one listing of `deltas/` without reading chunks."""
    h = cid.hex()
    return f"deltas/{h[:2]}/{h}.{base.hex()}"


def delta_records(backend: Backend) -> list[tuple[str, str, str]]:
    """(key, delta chunk hex id, base hex id) of every `delta_key` record in `backend`."""
    out = []
    for info in backend.list("deltas/"):
        cid, dot, base = info.key.rsplit("/", 1)[-1].partition(".")
        if dot and len(cid) == 64 and len(base) == 64:
            out.append((info.key, cid, base))
    return out


def index_key(rp_id: str, lun: int) -> str:
    return f"indexes/{rp_id}/{lun}.idx"


def manifest_key(rp_id: str) -> str:
    return f"manifests/{rp_id}.json"


class Store:
    """An open store. `keys` is None for a keyless handle (scrub only).

    `location` is where it lives (a path, s3://bucket/prefix or az://container/prefix);
    `path` is the directory of a local store and None for an object store."""

    def __init__(
        self,
        backend: Backend,
        settings: dict[str, Any],
        keys: KeySet | None,
        target: ObjectTarget | None = None,
    ) -> None:
        self.backend = backend
        self.location = backend.location
        self.path: Path | None = backend.root if isinstance(backend, LocalBackend) else None
        self.target = target
        self.settings = settings
        self.keys = keys
        self.store_id: str = settings["store_id"]
        self.codec = Codec.parse(settings["codec"])
        self.version = int(settings["version"])
        # Whether new chunks may be stored as deltas (a version 1 store keeps whole chunks).
        self.deltas = self.version >= 2
        self._ref_dirs: set[Path] = set()
        self._prefetched: OrderedDict[bytes, bytes] = OrderedDict()
        self.chunk_size: int = int(settings["chunk_size"])
        self.durable = os.environ.get("LIFEBOAT_UNSAFE_NO_FSYNC") != "1"
        self.lease_seconds = float(os.environ.get("LIFEBOAT_LEASE_SECONDS") or LEASE_SECONDS)
        # Object stores: the chunk ids present, from one listing inside an operation (so GC,
        # which never runs during one, cannot make it lie) and kept up by this handle's puts.
        self._chunk_ids: set[str] | None = None
        self._state = threading.Lock()
        self._ops = 0
        self._gc_token: str | None = None
        # S3 Object Lock: the retention of chunks is read and extended through the backend.
        self._retention: ObjectBackend | None = (
            backend
            if isinstance(backend, ObjectBackend) and target is not None and target.object_lock
            else None
        )
        # The lock ledger, read once inside an operation (None: not read yet), and the locks
        # this handle's puts set that no ledger part records yet.
        self._lock_dates: dict[str, datetime] | None = None
        self._lock_parts: list[str] = []
        self._locks_unsaved: dict[str, datetime] = {}

    def __repr__(self) -> str:
        return f"Store({self.location!r}, codec={self.codec}, chunk_size={self.chunk_size})"

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def object_lock(self) -> bool:
        return self.target is not None and self.target.object_lock

    def io_threads(self, threads: int) -> int:
        """Threads for an operation that reads chunks: object stores want many requests in
        flight, local disks do not."""
        return threads if self.is_local else max(threads, OBJECT_IO_THREADS)

    # ------------------------------------------------------------------ open / init

    @staticmethod
    def _read_settings(backend: Backend) -> dict[str, Any]:
        where = backend.location
        try:
            settings = json.loads(backend.get("store.json"))
        except FileNotFoundError as e:
            raise StoreNotFound(f"no store at {where}") from e
        except (OSError, ValueError) as e:
            raise StoreNotFound(f"store settings at {where} unreadable: {e}") from e
        if (
            settings.get("format") != STORE_FORMAT
            or settings.get("version") not in READABLE_VERSIONS
        ):
            raise StoreNotFound(f"{where} is not a lifeboat store of a known version")
        return dict(settings)

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str],
        kek: bytes | None,
        *,
        target: ObjectTarget | None = None,
    ) -> Store:
        backend = open_backend(location, target)
        settings = cls._read_settings(backend)
        keys = None
        if kek is not None:
            keys = unwrap_keys(_keys_doc(backend), kek)
        return cls(backend, settings, keys, target)

    @staticmethod
    def read_keys_file(path: str | os.PathLike[str]) -> bytes:
        """The wrapped keys document of a local store."""
        return _keys_doc(LocalBackend(path))

    def keys_doc(self) -> bytes:
        return _keys_doc(self.backend)

    @classmethod
    def init(
        cls,
        location: str | os.PathLike[str],
        kek: bytes,
        *,
        codec: str = DEFAULT_CODEC,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        keys_from: str | os.PathLike[str] | Store | None = None,
        target: ObjectTarget | None = None,
    ) -> Store:
        """Create a store. keys_from (a store, or a local store's path) gives the new store
        that store's wrapped keys, so chunk ids match and one KEK governs both."""
        backend = open_backend(location, target)
        where = backend.location
        parsed = Codec.parse(codec)
        if chunk_size < 4096 or chunk_size > (64 << 20) or chunk_size & (chunk_size - 1):
            raise ValueError("chunk_size must be a power of two between 4 KiB and 64 MiB")
        if backend.exists("store.json"):
            raise StoreExists(f"a store already exists at {where}")
        if keys_from is not None:
            keys_doc = (
                keys_from.keys_doc()
                if isinstance(keys_from, Store)
                else cls.read_keys_file(keys_from)
            )
            unwrap_keys(keys_doc, kek)  # the same KEK must open both tiers
        else:
            keys_doc = wrap_keys(new_keyset(), kek)
        if isinstance(backend, LocalBackend):
            p = backend.root
            p.mkdir(parents=True, exist_ok=True)
            for sub in ("chunks", "indexes", "manifests", "leases"):
                (p / sub).mkdir(exist_ok=True)
            (p / "lock").touch()
        if not backend.put_if_absent("keys.json", keys_doc):
            # Another init of this store (a second worker's first backup of a new vault) wrote
            # its keys first: those are the store's. Replacing them would leave that writer
            # encrypting under keys the store no longer holds, and its data unreadable.
            keys_doc = _keys_doc(backend)
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
        data = (json.dumps(settings, indent=2) + "\n").encode()
        if not backend.put_if_absent("store.json", data):
            raise StoreExists(f"a store already exists at {where}")
        return cls.open(location, kek, target=target)

    def require_keys(self) -> KeySet:
        if self.keys is None:
            raise KeyUnavailable("this store handle was opened without a key")
        return self.keys

    def rewrap(self, keys_doc: bytes) -> None:
        self.backend.put("keys.json", keys_doc)

    # ------------------------------------------------------------------ chunks

    def chunk_path(self, cid: bytes) -> Path:
        """The file of a chunk (local stores only)."""
        return self._local_root() / chunk_key(cid)

    def _local_root(self) -> Path:
        if self.path is None:
            raise TypeError(f"{self.location} is not a local store")
        return self.path

    def syncer(self) -> Syncer | Uploader:
        """What chunk puts of one operation go through: batched fsyncs on a local disk,
        requests in flight on an object store. Wait on it before committing."""
        return Syncer() if self.is_local else Uploader(OBJECT_IO_THREADS)

    def has_chunk(self, cid: bytes) -> bool:
        if self.path is not None:
            return os.path.exists(self.chunk_path(cid))
        with self._state:
            known = self._chunk_ids
        if known is None:
            if self._ops == 0:  # outside an operation a listing could go stale: ask
                return self.backend.exists(chunk_key(cid))
            known = self._load_chunk_ids()
        return cid.hex() in known

    def _load_chunk_ids(self) -> set[str]:
        ids = {info.key.rsplit("/", 1)[-1] for info in self.backend.list("chunks/")}
        with self._state:
            if self._chunk_ids is None and self._ops > 0:
                self._chunk_ids = ids
            return self._chunk_ids if self._chunk_ids is not None else ids

    def put_chunk(
        self,
        cid: bytes,
        blob: bytes,
        syncer: Syncer | Uploader | None = None,
        *,
        retain_until: datetime | None = None,
    ) -> Path | None:
        """Store a framed chunk atomically under its id; returns its directory (local).

        Local: the final name appears only once the data is durable (fsync of the temp file,
        then rename), so an existing chunk file is always complete. With a syncer the fsync
        and rename happen on the syncer's thread, overlapping with the caller's next chunk;
        call syncer.wait() before committing anything that references the chunk. Directory
        entries are made durable by sync_dirs().

        Object stores: a conditional create (an object is whole once it exists), so a chunk
        another writer stored meanwhile is never overwritten; with an Uploader it runs among
        many others in flight.
        """
        ref = delta_ref(blob)
        if ref is not None:
            self._put_delta_ref(cid, ref)
        if self.path is None:
            key = chunk_key(cid)
            lock_until = retain_until if self.object_lock else None

            def put() -> None:
                created = self.backend.put_if_absent(key, blob, retain_until=lock_until)
                if created and lock_until is not None and self._retention is not None:
                    self._note_locks({cid.hex(): lock_date(lock_until)})

            if isinstance(syncer, Uploader):
                syncer.run(put)
            else:
                put()
            with self._state:
                if self._chunk_ids is not None:
                    self._chunk_ids.add(cid.hex())
            return None
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
        if isinstance(syncer, Syncer) and self.durable:
            syncer.submit(fd, tmp, path)
        else:
            _finish_put(fd, tmp, path, self.durable)
        return path.parent

    def _put_delta_ref(self, cid: bytes, ref: DeltaRef) -> None:
        """Record a delta's base BEFORE the delta is stored, so no delta ever exists that GC
        does not know the base of. Locally an empty file created without its own fsync: the
        file system journals its creation before the later rename of the chunk, and
        sync_dirs() makes both durable before anything references the chunk."""
        key = delta_key(cid, ref.base)
        if self.path is None:
            self.backend.put(key, b"")
            return
        path = self.path / key
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
        with self._state:
            self._ref_dirs.add(path.parent)

    def sync_dirs(self, dirs: set[Path]) -> None:
        if self.path is not None and self.durable:
            with self._state:
                refs, self._ref_dirs = self._ref_dirs, set()
            for d in sorted(refs):
                fsync_dir(d)
            if refs:
                fsync_dir(self.path / "deltas")
            for d in sorted(dirs):
                fsync_dir(d)
            fsync_dir(self.path / "chunks")

    def read_chunk(
        self,
        cid: bytes,
        expected_len: int | None = None,
        blob: bytes | None = None,
        *,
        check_id: bool = True,
    ) -> bytes:
        """The plaintext of a chunk, verified against its id; a delta is rebuilt on its base.
        `blob` is the chunk's stored bytes when already read. FileNotFoundError if the chunk
        is absent; ChunkDamaged if it or any base in its chain is damaged or missing (a delta
        without its base is corruption).

        Every frame of a chain is authenticated (AES-GCM), but only the chunk asked for has
        its id recomputed: a wrong base anywhere below fails that check, and hashing each
        base again would make a restore of deltas cost a hash per link. When that check fails,
        the chain is read again with every id checked, to name the damaged base.
        `check_id=False` (a backup reading the parent's chunk to diff against) skips the id
        check of the chunk too: a delta records the pages that differ from the base as it
        reads, so it rebuilds the new chunk whatever those bytes are."""
        if blob is None:
            blob = self.get_chunk(cid)
        try:
            if not check_id:
                return self._read_chunk(cid, expected_len, blob, 1, False)
            return self._read_chunk(cid, expected_len, blob, 0, False)
        except ChunkDamaged as e:
            if delta_ref(blob) is None or str(e).startswith("delta base"):
                raise
            return self._read_chunk(cid, expected_len, blob, 0, True)

    def _read_chunk(
        self, cid: bytes, expected_len: int | None, blob: bytes | None, depth: int, thorough: bool
    ) -> bytes:
        if depth > MAX_CHAIN:
            raise ChunkDamaged(f"delta chain longer than {MAX_CHAIN}")
        keys = self.require_keys()
        if blob is None:
            blob = self._take_prefetched(cid) or self.get_chunk(cid)

        def base(bid: bytes, length: int) -> bytes:
            try:
                return self._read_chunk(bid, length, None, depth + 1, thorough)
            except FileNotFoundError as e:
                raise ChunkDamaged(f"delta base {bid.hex()[:16]} is missing") from e
            except OSError as e:
                raise ChunkDamaged(f"delta base {bid.hex()[:16]} unreadable: {e}") from e
            except ChunkDamaged as e:
                if str(e).startswith("delta base"):
                    raise
                raise ChunkDamaged(f"delta base {bid.hex()[:16]} is damaged: {e}") from e

        return decode_chunk(keys, cid, blob, expected_len, base, check_id=depth == 0 or thorough)

    def delta_records(self) -> list[tuple[str, str, str]]:
        """(key, delta chunk hex id, base hex id) of every record under `deltas/`."""
        return delta_records(self.backend)

    def delta_bases(self, records: list[tuple[str, str, str]] | None = None) -> dict[str, set[str]]:
        """Each chunk stored as a delta (hex id) -> its base(s). A chunk stored again after GC
        may have a record from each time: all bases count."""
        out: dict[str, set[str]] = {}
        for _key, cid, base in self.delta_records() if records is None else records:
            out.setdefault(cid, set()).add(base)
        return out

    @staticmethod
    def with_bases(ids: set[str], bases: dict[str, set[str]]) -> set[str]:
        """`ids` and every chunk their deltas are built on, down to whole chunks."""
        out = set(ids)
        todo = [h for h in ids if h in bases]
        while todo:
            for b in bases.get(todo.pop(), ()):
                if b not in out:
                    out.add(b)
                    todo.append(b)
        return out

    def get_chunk(self, cid: bytes) -> bytes:
        """Raw stored bytes of a chunk; FileNotFoundError if absent."""
        return self.backend.get(chunk_key(cid))

    def prefetch_chunk(self, cid: bytes) -> bytes:
        """get_chunk for a read-ahead: a delta's bases are read too, on the caller's thread,
        and kept (a few, PREFETCH_CAP) until read_chunk rebuilds the delta, so a restore's
        read-ahead threads wait for every object of a chain, not its decoding threads."""
        blob = self.get_chunk(cid)
        self.prefetch_bases(blob)
        return blob

    def prefetch_bases(self, blob: bytes) -> None:
        """Read and keep the bases of the chunk stored as `blob`, if it is a delta."""
        ref = delta_ref(blob)
        for _ in range(MAX_CHAIN):
            if ref is None:
                break
            try:
                base = self.get_chunk(ref.base)
            except OSError:
                break  # read_chunk reads it again and reports it
            with self._state:
                self._prefetched[ref.base] = base
                while len(self._prefetched) > PREFETCH_CAP:
                    self._prefetched.popitem(last=False)
            ref = delta_ref(base)

    def _take_prefetched(self, cid: bytes) -> bytes | None:
        with self._state:
            return self._prefetched.pop(cid, None)

    def list_chunks(self) -> Iterator[ObjectInfo]:
        """Every stored chunk object (and, locally, chunk temp files: names from TMP_PREFIX)."""
        return self.backend.list("chunks/")

    def iter_chunk_files(self) -> Iterator[Path]:
        root = self._local_root()
        for info in self.list_chunks():
            yield root / info.key

    def delete_chunks(self, keys: list[str]) -> None:
        self.backend.delete_many(keys)

    # ------------------------------------------------------------------ indexes

    def index_dir(self, rp_id: str) -> Path:
        return self._local_root() / "indexes" / rp_id

    def index_path(self, rp_id: str, lun: int) -> Path:
        return self._local_root() / index_key(rp_id, lun)

    def write_index(
        self, rp_id: str, lun: int, data: bytes, *, retain_until: datetime | None = None
    ) -> None:
        self.backend.put(
            index_key(rp_id, lun), data, retain_until=retain_until if self.object_lock else None
        )

    def read_index_bytes(self, rp_id: str, lun: int) -> bytes:
        """FileNotFoundError if absent."""
        return self.backend.get(index_key(rp_id, lun))

    def remove_indexes(self, rp_id: str) -> None:
        """Remove a recovery point's indexes (uncommitted, or deleted with its manifest)."""
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self.index_dir(rp_id))
            return
        self.backend.delete_many([i.key for i in self.backend.list(f"indexes/{rp_id}/")])

    def list_index_dirs(self) -> dict[str, tuple[float, list[str]]]:
        """Each name under indexes/: (newest mtime, its keys). A local store's directories
        count with their own mtime too, empty ones included."""
        out: dict[str, tuple[float, list[str]]] = {}
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError), os.scandir(self.path / "indexes") as it:
                for ent in it:
                    with contextlib.suppress(FileNotFoundError):
                        out[ent.name] = (ent.stat(follow_symlinks=False).st_mtime, [])
        for info in self.backend.list("indexes/"):
            parts = info.key.split("/")
            if len(parts) < 3:
                continue
            mtime, keys = out.get(parts[1], (0.0, []))
            keys.append(info.key)
            out[parts[1]] = (max(mtime, info.mtime), keys)
        return out

    def load_index(self, rp_id: str, disk: dict[str, Any]) -> DiskIndex:
        """Read and check a disk index against the manifest's recorded checksum."""
        lun = int(disk["lun"])
        try:
            data = self.read_index_bytes(rp_id, lun)
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
        return self._local_root() / manifest_key(rp_id)

    def has_manifest(self, rp_id: str) -> bool:
        return self.backend.exists(manifest_key(rp_id))

    def list_rp_ids(self) -> list[str]:
        out = []
        for info in self.backend.list("manifests/"):
            name = info.key.rsplit("/", 1)[-1]
            if name.endswith(".json") and not name.startswith(".") and "/" not in info.key[10:]:
                out.append(name[: -len(".json")])
        return sorted(out)

    def list_manifest_temps(self) -> list[ObjectInfo]:
        """Manifest temp files an interrupted commit left (local stores only have them)."""
        return [
            i
            for i in self.backend.list("manifests/")
            if i.key.rsplit("/", 1)[-1].startswith(TMP_PREFIX)
        ]

    def read_manifest_bytes(self, rp_id: str) -> bytes:
        _check_rp_id(rp_id)
        try:
            return self.backend.get(manifest_key(rp_id))
        except FileNotFoundError as e:
            raise RecoveryPointNotFound(
                f"recovery point {rp_id} not found in {self.location}"
            ) from e

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
        self.commit_manifest_bytes(
            rp_id, data, replace=replace, retain_until=parse_iso(body.get("retain_until"))
        )
        return data

    def commit_manifest_bytes(
        self, rp_id: str, data: bytes, *, replace: bool, retain_until: datetime | None = None
    ) -> None:
        key = manifest_key(rp_id)
        lock_until = retain_until if self.object_lock else None
        if replace:
            self.backend.put(key, data, retain_until=lock_until)
        elif not self.backend.put_if_absent(key, data, retain_until=lock_until):
            raise RecoveryPointExists(f"recovery point {rp_id} already exists")

    def delete_manifest(self, rp_id: str) -> None:
        self.read_manifest_bytes(rp_id)  # RecoveryPointNotFound if absent
        self.backend.delete_many([manifest_key(rp_id)])

    # ------------------------------------------------------------------ S3 Object Lock

    @property
    def enforces_retention(self) -> bool:
        """Objects are locked (S3 Object Lock, COMPLIANCE) until their recovery points' dates."""
        return self._retention is not None

    def _note_locks(self, dates: dict[str, datetime]) -> None:
        with self._state:
            for h, d in dates.items():
                if self._lock_dates is not None and self._lock_dates.get(h, d) <= d:
                    self._lock_dates[h] = d
                if self._locks_unsaved.get(h, d) <= d:
                    self._locks_unsaved[h] = d

    def _read_lock_ledger(self) -> dict[str, datetime]:
        """Each chunk's known lock date: the latest any ledger part records. A part that fails
        authentication is ignored (its chunks count as unknown, so their lock is read)."""
        with self._state:
            if self._lock_dates is not None:
                return self._lock_dates
        keys = self.keys
        dates: dict[str, datetime] = {}
        parts = []
        for info in self.backend.list("locks/"):
            if keys is None:
                break
            try:
                body = manifest_from_bytes(self.backend.get(info.key), keys)
            except (FileNotFoundError, ManifestDamaged):
                continue
            if body.get("kind") != LEDGER_KIND:
                continue
            parts.append(info.key)
            for stamp, ids in dict(body.get("until", {})).items():
                d = parse_iso(stamp)
                if d is None:
                    continue
                for h in ids:
                    if dates.get(h, d) <= d:
                        dates[h] = d
        with self._state:
            for h, d in self._locks_unsaved.items():
                if dates.get(h, d) <= d:
                    dates[h] = d
            if self._ops > 0:
                if self._lock_dates is None:  # else another thread read it meanwhile
                    self._lock_dates, self._lock_parts = dates, parts
                return self._lock_dates
        return dates

    def _write_lock_part(self, dates: dict[str, datetime]) -> str:
        by_date: dict[str, list[str]] = {}
        for h, d in dates.items():
            by_date.setdefault(iso(d) or "", []).append(h)
        body = {
            "kind": LEDGER_KIND,
            "written": iso(utcnow()),
            "until": {k: sorted(v) for k, v in sorted(by_date.items())},
        }
        key = f"locks/{uuid.uuid4()}.json"
        self.backend.put(key, manifest_to_bytes(body, self.require_keys()))
        return key

    def _save_locks(self) -> None:
        """Record the locks this handle set in a new ledger part; when the ledger has grown to
        many parts, merge them all into that one and drop the parts merged (never a part
        written by anyone after this handle read the ledger)."""
        with self._state:
            unsaved, self._locks_unsaved = self._locks_unsaved, {}
            merged, parts = self._lock_dates, list(self._lock_parts)
        if not unsaved and len(parts) <= LEDGER_PARTS:
            return
        try:
            if merged is not None and len(parts) > LEDGER_PARTS:
                now = utcnow()
                # An expired lock is as good as none: leave it out.
                self._write_lock_part({h: d for h, d in merged.items() if d > now})
                self.backend.delete_many(parts)
                with self._state:
                    self._lock_parts = []
            else:
                self._write_lock_part(unsaved)
        except BaseException:
            with self._state:
                for h, d in unsaved.items():
                    self._locks_unsaved.setdefault(h, d)
            raise

    def hold_chunks(self, cids: Iterable[bytes], until: datetime | None) -> int:
        """Make sure every chunk in `cids` is locked at least until `until` (S3 Object Lock;
        nothing elsewhere or without a date). Only chunks whose known lock is shorter cost a
        request: a lock the ledger does not know is read first (HEAD), a shorter one extended
        to `until` rounded up to LOCK_STEP; never shortened. The locks set are recorded in the
        ledger before this returns. Returns how many locks were extended."""
        if self._retention is None or until is None:
            return 0
        retention = self._retention
        need = lock_date(until)
        target = _step_up(need)
        known = self._read_lock_ledger()
        ids = {cid.hex() for cid in cids}
        if self.deltas:  # a delta's bases must stay as long as the delta
            ids = self.with_bases(ids, self.delta_bases())
        unknown = {h for h in ids if h not in known}
        todo = unknown | {h for h in ids - unknown if known[h] < need}
        if not todo:
            self._save_locks()
            return 0
        extended = 0
        counter = threading.Lock()

        def hold(h: str) -> None:
            nonlocal extended
            key = f"chunks/{h[:2]}/{h}"
            try:
                if h in unknown:
                    current = retention.retention(key)
                    if current is not None and current >= need:
                        self._note_locks({h: current})
                        return
                self._extend(retention, key, target)
            except FileNotFoundError:
                return  # nothing to lock: verify reports a missing chunk
            self._note_locks({h: target})
            with counter:
                extended += 1

        with ThreadPoolExecutor(OBJECT_IO_THREADS, thread_name_prefix="lifeboat-lock") as pool:
            for f in [pool.submit(hold, h) for h in sorted(todo)]:
                f.result()
        self._save_locks()
        return extended

    def hold_objects(self, keys: Iterable[str], until: datetime | None) -> int:
        """hold_chunks for a few other objects (a recovery point's indexes): each lock is read
        and, when shorter, extended to exactly `until`. Returns how many were extended."""
        if self._retention is None or until is None:
            return 0
        need = lock_date(until)
        extended = 0
        for key in keys:
            current = self._retention.retention(key)
            if current is None or current < need:
                self._extend(self._retention, key, need)
                extended += 1
        return extended

    @staticmethod
    def _extend(retention: ObjectBackend, key: str, until: datetime) -> None:
        try:
            retention.extend_retention(key, until)
        except StoreUnavailable:
            # S3 refuses to shorten a COMPLIANCE lock: another writer extended this one
            # further since the ledger was read. That is as good as done.
            current = retention.retention(key)
            if current is None or current < until:
                raise

    def prune_locks(self, live: set[str]) -> None:
        """Under GC's exclusive lock: rewrite the ledger with the live chunks only, so a chunk
        swept now and stored again later is not taken for locked by its old version's date."""
        if self._retention is None:
            return
        keys = [i.key for i in self.backend.list("locks/")]
        if self.keys is not None:
            dates = self._read_lock_ledger()
            now = utcnow()
            self._write_lock_part({h: d for h, d in dates.items() if h in live and d > now})
        self.backend.delete_many(keys)
        with self._state:
            self._lock_dates = None
            self._lock_parts = []
            self._locks_unsaved = {}

    # ------------------------------------------------------------------ locks and leases

    @contextlib.contextmanager
    def operation(self, op: str, **info: Any) -> Iterator[str]:
        """Hold off GC for an in-flight operation; yields the lease's key.

        Local stores: a shared flock on `lock` (it dies with the process, so a killed backup
        never blocks GC) and a lease file. Object stores: a lease object written FIRST, then
        `gc.lock` checked (GC creates that first, then lists leases, so one of the two always
        sees the other); the lease is refreshed while the operation runs and expires if its
        process dies. See FORMAT.md, "Locks and GC"."""
        doc = {"op": op, "pid": os.getpid(), "host": socket.gethostname()}
        doc.update({k: v for k, v in info.items() if v is not None})
        doc["started"] = iso(utcnow())
        lease = f"leases/{uuid.uuid4()}.json"
        with self._state:
            self._ops += 1
        try:
            if self.path is not None:
                with self._local_operation(lease, doc):
                    yield lease
            else:
                with self._object_operation(lease, doc):
                    yield lease
        finally:
            with self._state:
                self._ops -= 1
                if self._ops == 0:
                    self._chunk_ids = None
                    self._lock_dates = None
                    self._lock_parts = []

    @contextlib.contextmanager
    def _local_operation(self, lease: str, doc: dict[str, Any]) -> Iterator[None]:
        root = self._local_root()
        fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            atomic_write(root / lease, json.dumps(doc).encode(), sync=False)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(root / lease)
        finally:
            os.close(fd)

    def _expiring(self, doc: dict[str, Any]) -> bytes:
        doc["expires"] = iso(utcnow() + timedelta(seconds=self.lease_seconds))
        return json.dumps(doc).encode()

    @contextlib.contextmanager
    def _object_operation(self, lease: str, doc: dict[str, Any]) -> Iterator[None]:
        while True:
            self.backend.put(lease, self._expiring(doc))
            if self._live_gc_lock() is None:
                break
            # GC holds the store: step back so it can finish, then try again.
            self.backend.delete(lease)
            time.sleep(min(1.0, self.lease_seconds / 10))
        refresher = _Refresher(self, lease, doc)
        try:
            yield
        finally:
            refresher.stop()
            with contextlib.suppress(StoreUnavailable):
                self.backend.delete(lease)

    def _live_gc_lock(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.backend.get(GC_LOCK))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # being written or damaged: treat as held until it expires by age
        return doc if not _expired(doc) else None

    @contextlib.contextmanager
    def exclusive(self, wait_seconds: float) -> Iterator[None]:
        """Exclusive store lock (GC sweep); StoreBusy if in-flight operations hold it."""
        if self.path is None:
            with self._object_exclusive(wait_seconds):
                yield
            return
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
                            f"store {self.location} is busy with in-flight operations"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _object_exclusive(self, wait_seconds: float) -> Iterator[None]:
        deadline = time.monotonic() + wait_seconds
        token = str(uuid.uuid4())
        doc = {"op": "gc", "pid": os.getpid(), "host": socket.gethostname(), "token": token}
        doc["started"] = iso(utcnow())
        busy = f"store {self.location} is busy with in-flight operations"
        while not self.backend.put_if_absent(GC_LOCK, self._expiring(doc)):
            held = self._live_gc_lock()
            if held is None:  # its holder died: the lock expired
                self.backend.delete(GC_LOCK)
                continue
            if time.monotonic() >= deadline:
                raise StoreBusy(f"{busy} (another GC)")
            time.sleep(0.2)
        self._gc_token = token
        refresher = _Refresher(self, GC_LOCK, doc)
        try:
            while self.live_leases():
                if time.monotonic() >= deadline:
                    raise StoreBusy(busy)
                time.sleep(0.2)
            yield
        finally:
            refresher.stop()
            self._gc_token = None
            with contextlib.suppress(StoreUnavailable):
                self.backend.delete(GC_LOCK)

    def check_exclusive(self) -> None:
        """Before GC deletes anything on an object store: StoreBusy unless its lock is still
        its own and no operation holds a lease (a GC whose lock expired under it stops)."""
        if self.path is not None:
            return
        held = self._live_gc_lock()
        if not held or held.get("token") != self._gc_token:
            raise StoreBusy(f"store {self.location}: the GC lock was lost")
        if self.live_leases():
            raise StoreBusy(f"store {self.location} is busy with in-flight operations")

    def leases(self) -> list[dict[str, Any]]:
        out = []
        for info in self.backend.list("leases/"):
            name = info.key.rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            try:
                out.append(json.loads(self.backend.get(info.key)) | {"file": name})
            except (FileNotFoundError, ValueError):
                continue
        return out

    def live_leases(self) -> list[dict[str, Any]]:
        """Leases of running operations (object stores: those not yet expired)."""
        return [d for d in self.leases() if not _expired(d)]

    def clear_leases(self, dry_run: bool) -> int:
        """Remove every lease left: under the exclusive lock each one is stale (its process
        died). Returns how many there were."""
        keys = [i.key for i in self.backend.list("leases/")]
        if not dry_run:
            for key in keys:
                with contextlib.suppress(OSError):
                    self.backend.delete(key)
        return len(keys)


class _Refresher:
    """Rewrites a lease (or the GC lock) with a later expiry while its holder runs."""

    def __init__(self, store: Store, key: str, doc: dict[str, Any]) -> None:
        self.store, self.key, self.doc = store, key, dict(doc)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="lifeboat-lease", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.store.lease_seconds / 3):
            with contextlib.suppress(EngineError):
                self.store.backend.put(self.key, self.store._expiring(self.doc))

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def _step_up(dt: datetime) -> datetime:
    """`dt` rounded up to the next LOCK_STEP boundary from the epoch."""
    step = int(LOCK_STEP.total_seconds())
    t = int(dt.timestamp())
    return datetime.fromtimestamp(-(-t // step) * step, UTC)


def _expired(doc: dict[str, Any]) -> bool:
    """A lease or lock past its expiry. Local leases have none: they are never expired."""
    try:
        expires = parse_iso(doc.get("expires"))
    except (TypeError, ValueError):
        return False
    return expires is not None and expires < utcnow()


def _keys_doc(backend: Backend) -> bytes:
    try:
        return backend.get("keys.json")
    except FileNotFoundError as e:
        raise StoreNotFound(f"no keys file in store {backend.location}") from e


def _check_rp_id(rp_id: str) -> None:
    try:
        ok = str(uuid.UUID(rp_id)) == rp_id
    except (ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise RecoveryPointNotFound(f"not a recovery point id: {rp_id!r}")
