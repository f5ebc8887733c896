"""Storage statistics of one chunk store, read from its objects alone (no key needed), on any
backend: a local directory, S3 or Azure Blob (`engine.backends`).

Django-free. What the numbers mean (layout in FORMAT.md):

* ``stored_bytes``: bytes of every chunk object under ``chunks/``, as the listing gives them
  (what the store costs, chunk headers and checksums included; temp files of unfinished writes
  are skipped).
* ``unique_bytes``: plaintext bytes of the distinct non-zero chunk ids that the indexes of
  committed recovery points reference (chunk length from each index: the last chunk of a disk
  may be short).
* ``referenced_bytes``: plaintext bytes of every non-zero chunk reference over all recovery
  points (a chunk used by ten RPs counts ten times): the logical data, zeros and holes left out.
* ``delta_chunks``: referenced chunks stored as deltas on a base chunk (FORMAT.md, "Delta
  chunks"), and ``delta_saved_bytes``: their plaintext bytes minus their stored bytes;
  ``base_chunks`` / ``base_bytes``: chunks kept only because a referenced delta is built on
  them (counted in ``live_stored_bytes``, not as garbage).
* ``dedup_ratio`` = referenced / unique; ``compression_ratio`` = unique / the stored bytes of
  the referenced chunks (chunks only awaiting GC are counted apart, as ``garbage_bytes``).

Reading costs one listing of the chunks (a directory walk, or one request per 1000 objects)
and one read of each index (32 bytes per chunk; on object storage a GET each, 16 at a time);
callers cache the result.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .backends import Backend, ObjectTarget, open_backend
from .store import delta_records

INDEX_MAGIC = b"LBINDEX\x00"
INDEX_HEADER = struct.Struct("<8sHHBB2xQQ8x")  # magic, version, flags, shift, dlen, size, count
DIGEST_LEN = 32
ZERO_ID = bytes(DIGEST_LEN)
TEMP_PREFIX = ".tmp-"
OBJECT_READS = 16  # index reads in flight on object storage


@dataclass(frozen=True)
class StoreStats:
    exists: bool = False
    chunks: int = 0
    stored_bytes: int = 0
    recovery_points: int = 0
    disks: int = 0
    logical_bytes: int = 0  # sum of disk sizes over all recovery points
    unique_chunks: int = 0
    unique_bytes: int = 0
    referenced_chunks: int = 0
    referenced_bytes: int = 0
    live_stored_bytes: int = 0  # stored bytes of referenced chunks that are present
    live_plain_bytes: int = 0  # plaintext bytes of those chunks
    missing_chunks: int = 0  # referenced but without a chunk file
    garbage_chunks: int = 0  # chunk files no index references (freed by GC)
    garbage_bytes: int = 0
    delta_chunks: int = 0
    delta_saved_bytes: int = 0
    base_chunks: int = 0
    base_bytes: int = 0
    unreadable: tuple[str, ...] = field(default_factory=tuple)

    @property
    def dedup_ratio(self) -> float | None:
        if not self.unique_bytes:
            return None
        return self.referenced_bytes / self.unique_bytes

    @property
    def compression_ratio(self) -> float | None:
        if not self.live_stored_bytes:
            return None
        return self.live_plain_bytes / self.live_stored_bytes


def _index_refs(data: bytes) -> tuple[int, list[tuple[bytes, int]]]:
    """The disk size of one index and (chunk id, plaintext length) of each non-zero chunk."""
    if len(data) < INDEX_HEADER.size:
        raise ValueError("short index header")
    magic, version, _flags, shift, dlen, size, count = INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC or version != 1 or dlen != DIGEST_LEN or not 0 < shift < 40:
        raise ValueError("not a version 1 index")
    chunk = 1 << shift
    if count != (size + chunk - 1) // chunk:
        raise ValueError("chunk count does not match the disk size")
    body = INDEX_HEADER.size
    if len(data) < body + count * DIGEST_LEN:
        raise ValueError("index is truncated")
    refs = []
    for k in range(count):
        cid = data[body + k * DIGEST_LEN : body + (k + 1) * DIGEST_LEN]
        if cid != ZERO_ID:
            refs.append((cid, min(chunk, size - k * chunk)))
    return int(size), refs


def _name(key: str) -> str:
    return key.rpartition("/")[2]


def _rp_ids(backend: Backend) -> list[str]:
    """Committed recovery points: their manifests (temp files of unfinished writes skipped)."""
    names = (_name(info.key) for info in backend.list("manifests/"))
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json") and n[0] != ".")


def _index_keys(backend: Backend) -> dict[str, list[str]]:
    """Index keys by recovery point (`indexes/<rp>/<lun>.idx`)."""
    found: dict[str, list[str]] = {}
    for info in backend.list("indexes/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2].endswith(".idx") and not parts[2].startswith("."):
            found.setdefault(parts[1], []).append(info.key)
    return {rp: sorted(keys) for rp, keys in found.items()}


def _chunk_objects(backend: Backend) -> Iterator[tuple[bytes, int]]:
    """(chunk id, stored size) of every chunk object, as the listing gives it."""
    for info in backend.list("chunks/"):
        name = _name(info.key)
        if name.startswith(".") or len(name) != 2 * DIGEST_LEN:
            continue
        try:
            yield bytes.fromhex(name), info.size
        except ValueError:
            continue


def _delta_bases(backend: Backend) -> dict[bytes, set[bytes]]:
    """Delta chunk -> its base(s), from the empty records under ``deltas/`` (one listing)."""
    out: dict[bytes, set[bytes]] = {}
    for _key, cid, base in delta_records(backend):
        try:
            out.setdefault(bytes.fromhex(cid), set()).add(bytes.fromhex(base))
        except ValueError:
            continue
    return out


def _bases_of(ids: set[bytes], deltas: dict[bytes, set[bytes]]) -> set[bytes]:
    """The chunks the deltas among `ids` are built on, down each chain, not in `ids`."""
    out: set[bytes] = set()
    todo = [c for c in ids if c in deltas]
    while todo:
        for b in deltas.get(todo.pop(), ()):
            if b not in ids and b not in out:
                out.add(b)
                todo.append(b)
    return out


def _read_all(backend: Backend, keys: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
    """Each key's bytes (or the error reading it), concurrently on object storage, where
    each read is a request with its round trip."""

    def read(key: str) -> tuple[str, bytes | Exception]:
        try:
            return key, backend.get(key)
        except (OSError, ValueError) as e:
            return key, e

    if backend.is_local:
        yield from map(read, keys)
        return
    with ThreadPoolExecutor(OBJECT_READS, thread_name_prefix="lifeboat-stats") as pool:
        yield from pool.map(read, keys)


def store_stats(location: str | os.PathLike[str], target: ObjectTarget | None = None) -> StoreStats:
    """The figures of the store at `location`: a directory, or s3:// / az:// with `target`.
    A service that does not answer raises StoreUnavailable."""
    return backend_stats(open_backend(location, target))


def backend_stats(backend: Backend) -> StoreStats:
    """List one store's chunk objects and read the indexes of its committed recovery points."""
    if not backend.exists("store.json"):
        return StoreStats()
    unique: dict[bytes, int] = {}
    referenced_chunks = referenced_bytes = logical = disks = 0
    unreadable: list[str] = []
    rps = _rp_ids(backend)
    by_rp = _index_keys(backend)
    keys = []
    for rp in rps:
        if rp in by_rp:
            keys += by_rp[rp]
        else:
            unreadable.append(f"indexes/{rp}")
    for key, data in _read_all(backend, keys):
        try:
            if isinstance(data, Exception):
                raise data
            size, refs = _index_refs(data)
        except (OSError, ValueError, struct.error):
            unreadable.append(key)
            continue
        for cid, length in refs:
            unique[cid] = length
            referenced_bytes += length
        referenced_chunks += len(refs)
        disks += 1
        logical += size
    chunks = stored = live_stored = garbage_chunks = garbage_bytes = 0
    present = live_plain = delta_chunks = delta_saved = base_chunks = base_bytes = 0
    deltas = _delta_bases(backend)
    bases = _bases_of(set(unique), deltas) if deltas else set()
    for cid, size in _chunk_objects(backend):
        chunks += 1
        stored += size
        if cid in unique:
            present += 1
            live_stored += size
            live_plain += unique[cid]
            if cid in deltas:
                delta_chunks += 1
                delta_saved += max(0, unique[cid] - size)
        elif cid in bases:
            base_chunks += 1
            base_bytes += size
            live_stored += size
        else:
            garbage_chunks += 1
            garbage_bytes += size
    return StoreStats(
        exists=True,
        chunks=chunks,
        stored_bytes=stored,
        recovery_points=len(rps),
        disks=disks,
        logical_bytes=logical,
        unique_chunks=len(unique),
        unique_bytes=sum(unique.values()),
        referenced_chunks=referenced_chunks,
        referenced_bytes=referenced_bytes,
        live_stored_bytes=live_stored,
        live_plain_bytes=live_plain,
        missing_chunks=len(unique) - present,
        garbage_chunks=garbage_chunks,
        garbage_bytes=garbage_bytes,
        delta_chunks=delta_chunks,
        delta_saved_bytes=delta_saved,
        base_chunks=base_chunks,
        base_bytes=base_bytes,
        unreadable=tuple(sorted(unreadable)),
    )
