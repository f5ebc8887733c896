"""Storage statistics of one chunk store, read from its files alone (no key needed).

Django-free. What the numbers mean (layout in FORMAT.md):

* ``stored_bytes``: bytes of every chunk file under ``chunks/`` (what the store costs on disk,
  chunk headers and checksums included; temp files of unfinished writes are skipped).
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

Reading costs one ``scandir`` of the chunk directories and one sequential read of each index
(32 bytes per chunk); callers cache the result.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

INDEX_MAGIC = b"LBINDEX\x00"
INDEX_HEADER = struct.Struct("<8sHHBB2xQQ8x")  # magic, version, flags, shift, dlen, size, count
DIGEST_LEN = 32
ZERO_ID = bytes(DIGEST_LEN)
TEMP_PREFIX = ".tmp-"
_READ_IDS = 4096  # ids per read: 128 KiB


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


def _index_ids(path: Path) -> Iterator[tuple[bytes, int]]:
    """(chunk id, plaintext length) of each non-zero chunk of one disk index."""
    with open(path, "rb") as f:
        head = f.read(INDEX_HEADER.size)
        if len(head) < INDEX_HEADER.size:
            raise ValueError("short index header")
        magic, version, _flags, shift, dlen, size, count = INDEX_HEADER.unpack(head)
        if magic != INDEX_MAGIC or version != 1 or dlen != DIGEST_LEN or not 0 < shift < 40:
            raise ValueError("not a version 1 index")
        chunk = 1 << shift
        if count != (size + chunk - 1) // chunk:
            raise ValueError("chunk count does not match the disk size")
        i = 0
        while i < count:
            n = min(_READ_IDS, count - i)
            block = f.read(n * DIGEST_LEN)
            if len(block) != n * DIGEST_LEN:
                raise ValueError("index is truncated")
            for j in range(n):
                cid = block[j * DIGEST_LEN : (j + 1) * DIGEST_LEN]
                if cid != ZERO_ID:
                    k = i + j
                    yield cid, min(chunk, size - k * chunk)
            i += n


def _disk_size(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(INDEX_HEADER.size)
    return int(INDEX_HEADER.unpack(head)[5]) if len(head) == INDEX_HEADER.size else 0


def _rp_ids(root: Path) -> list[str]:
    try:
        names = os.listdir(root / "manifests")
    except FileNotFoundError:
        return []
    return sorted(n[: -len(".json")] for n in names if n.endswith(".json") and n[0] != ".")


def _chunk_files(root: Path) -> Iterator[tuple[bytes, int]]:
    """(chunk id, file size) of every stored chunk file."""
    try:
        subs = list(os.scandir(root / "chunks"))
    except FileNotFoundError:
        return
    for sub in subs:
        if not sub.is_dir(follow_symlinks=False):
            continue
        with os.scandir(sub.path) as it:
            for ent in it:
                if ent.name.startswith(".") or len(ent.name) != 2 * DIGEST_LEN:
                    continue
                try:
                    cid = bytes.fromhex(ent.name)
                    size = ent.stat(follow_symlinks=False).st_size
                except (ValueError, OSError):
                    continue
                yield cid, size


def _delta_bases(root: Path) -> dict[bytes, set[bytes]]:
    """Delta chunk -> its base(s), from the empty records under ``deltas/``."""
    out: dict[bytes, set[bytes]] = {}
    try:
        subs = list(os.scandir(root / "deltas"))
    except FileNotFoundError:
        return out
    for sub in subs:
        if not sub.is_dir(follow_symlinks=False):
            continue
        with os.scandir(sub.path) as it:
            for ent in it:
                cid, dot, base = ent.name.partition(".")
                try:
                    if dot and len(cid) == len(base) == 2 * DIGEST_LEN:
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


def store_stats(path: str | os.PathLike[str]) -> StoreStats:
    """Walk one store's chunk files and the indexes of its committed recovery points."""
    root = Path(path)
    if not (root / "store.json").is_file():
        return StoreStats()
    unique: dict[bytes, int] = {}
    referenced_chunks = referenced_bytes = logical = disks = 0
    unreadable: list[str] = []
    rps = _rp_ids(root)
    for rp in rps:
        try:
            idx_files = sorted(
                p
                for p in (root / "indexes" / rp).iterdir()
                if p.suffix == ".idx" and not p.name.startswith(".")
            )
        except FileNotFoundError:
            unreadable.append(f"indexes/{rp}")
            continue
        for idx in idx_files:
            try:
                size = _disk_size(idx)
                for cid, length in _index_ids(idx):
                    unique[cid] = length
                    referenced_chunks += 1
                    referenced_bytes += length
            except (OSError, ValueError, struct.error):
                unreadable.append(f"indexes/{rp}/{idx.name}")
                continue
            disks += 1
            logical += size
    chunks = stored = live_stored = garbage_chunks = garbage_bytes = 0
    present = live_plain = delta_chunks = delta_saved = base_chunks = base_bytes = 0
    deltas = _delta_bases(root)
    bases = _bases_of(set(unique), deltas) if deltas else set()
    for cid, size in _chunk_files(root):
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
        unreadable=tuple(unreadable),
    )
