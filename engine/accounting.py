"""Exact space accounting of one chunk store: what each recovery point (and each group of them,
e.g. a VM's) holds alone, and what it shares. Django-free; no key needed.

A chunk's cost is its *stored* size as the store reports it for that chunk id (the object's
size: header, compressed payload, tag and checksum; whatever form the store keeps the chunk in).
For a recovery point:

* ``unique_bytes``: stored bytes of the chunks no other committed recovery point references -
  exactly what deleting it and collecting garbage frees;
* ``shared_bytes``: stored bytes of its chunks that other recovery points reference too (each
  chunk counted once per recovery point, however often its disks repeat it).

For a group (all recovery points of one VM), the same with "other" meaning outside the group:
``unique_bytes`` is what deleting the whole group frees. A chunk is counted once per point or
group, never per reference. A delta chunk's bases count as referenced by every point that
references the delta (GC keeps them for it). Referenced chunks missing from the store count zero (verify names
them). Reading costs what ``engine.stats`` costs: one chunk listing and one read per index -
or, with an ``IndexCache`` kept between accountings, one read per index not seen before: a
committed index never changes (written once before its manifest, deleted only with it), so an
accounting after a job reads the indexes that job wrote and nothing else. The listings (chunks,
indexes, manifests, delta records) are still made each time; they say what is there now.
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from .backends import Backend, ObjectInfo, ObjectTarget, open_backend
from .stats import (
    _bases_of,
    _chunk_objects,
    _delta_bases,
    _index_refs,
    _read_all,
    _rp_ids,
)

# The chunk references an IndexCache keeps at most (about 100 bytes each): the size of one
# accounting of a store of that many references, which holds them all at once anyway.
CACHE_REFS = 1 << 20


@dataclass(frozen=True)
class SpaceUse:
    unique_bytes: int = 0
    shared_bytes: int = 0
    unique_chunks: int = 0
    shared_chunks: int = 0


@dataclass(frozen=True)
class StoreAccounting:
    points: dict[str, SpaceUse] = field(default_factory=dict)
    groups: dict[str, SpaceUse] = field(default_factory=dict)
    # Recovery points (or their index keys) that could not be read: their chunks count as
    # nobody's, so the figures of the others may be too high; callers say so.
    unreadable: tuple[str, ...] = ()
    # Stored bytes of every chunk object in the store (referenced or awaiting GC).
    stored_bytes: int = 0
    # Indexes read this time (the others came from the cache).
    index_reads: int = 0


class IndexCache:
    """The chunk ids of committed indexes, by store and index (its key, size and modification
    time, so an index written again is read again), least recently used dropped first beyond
    ``max_refs`` references. Safe to share between threads."""

    def __init__(self, max_refs: int = CACHE_REFS) -> None:
        self.max_refs = max_refs
        self._entries: OrderedDict[tuple[str, ObjectInfo], frozenset[bytes]] = OrderedDict()
        self._refs = 0
        self._lock = threading.Lock()

    def get(self, place: str, info: ObjectInfo) -> frozenset[bytes] | None:
        with self._lock:
            ids = self._entries.get((place, info))
            if ids is not None:
                self._entries.move_to_end((place, info))
            return ids

    def put(self, place: str, info: ObjectInfo, ids: frozenset[bytes]) -> None:
        if len(ids) > self.max_refs:
            return
        with self._lock:
            old = self._entries.pop((place, info), None)
            self._refs += len(ids) - (len(old) if old is not None else 0)
            self._entries[(place, info)] = ids
            while self._refs > self.max_refs:
                _, dropped = self._entries.popitem(last=False)
                self._refs -= len(dropped)

    def keep_only(self, place: str, present: set[ObjectInfo]) -> None:
        """Forget the indexes of `place` that are gone (their recovery points deleted)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == place and k[1] not in present]:
                self._refs -= len(self._entries.pop(key))

    @property
    def refs(self) -> int:
        return self._refs


def store_accounting(
    location: str | os.PathLike[str],
    target: ObjectTarget | None = None,
    *,
    groups: Mapping[str, str] | None = None,
    cache: IndexCache | None = None,
) -> StoreAccounting:
    """Accounting of the store at ``location`` (directory, or s3:// / az:// with ``target``);
    ``groups`` maps recovery point ids to a group name (RPs it does not name form no group);
    ``cache`` spares the reads of indexes an earlier accounting read."""
    return backend_accounting(open_backend(location, target), groups=groups or {}, cache=cache)


def _index_infos(backend: Backend) -> dict[str, list[ObjectInfo]]:
    """Index objects by recovery point (`indexes/<rp>/<lun>.idx`), as listed."""
    found: dict[str, list[ObjectInfo]] = {}
    for info in backend.list("indexes/"):
        parts = info.key.split("/")
        if len(parts) == 3 and parts[2].endswith(".idx") and not parts[2].startswith("."):
            found.setdefault(parts[1], []).append(info)
    return found


def _use(chunks: set[bytes], owners: Mapping[bytes, int], stored: Mapping[bytes, int]) -> SpaceUse:
    unique = shared = unique_n = shared_n = 0
    for cid in chunks:
        size = stored.get(cid, 0)
        if owners[cid] == 1:
            unique, unique_n = unique + size, unique_n + 1
        else:
            shared, shared_n = shared + size, shared_n + 1
    return SpaceUse(unique, shared, unique_n, shared_n)


def backend_accounting(
    backend: Backend, *, groups: Mapping[str, str], cache: IndexCache | None = None
) -> StoreAccounting:
    if not backend.exists("store.json"):
        return StoreAccounting()
    by_rp = _index_infos(backend)
    chunks_of: dict[str, set[bytes]] = {}
    unreadable: list[str] = []
    to_read: dict[str, ObjectInfo] = {}
    for rp in _rp_ids(backend):
        chunks_of[rp] = set()
        if rp not in by_rp:
            unreadable.append(rp)
            continue
        for info in by_rp[rp]:
            known = cache.get(backend.location, info) if cache is not None else None
            if known is None:
                to_read[info.key] = info
            else:
                chunks_of[rp] |= known
    for key, data in _read_all(backend, sorted(to_read)):
        try:
            if isinstance(data, Exception):
                raise data
            _, refs = _index_refs(data)
        except (OSError, ValueError, struct.error):
            unreadable.append(key)
            continue
        ids = frozenset(cid for cid, _ in refs)
        chunks_of[key.split("/")[1]] |= ids
        if cache is not None:
            cache.put(backend.location, to_read[key], ids)
    if cache is not None:
        committed = {info for rp in chunks_of for info in by_rp.get(rp, ())}
        cache.keep_only(backend.location, committed)
    # A delta needs its base (and the base's base): GC keeps them while the delta is
    # referenced, so they belong to every recovery point that references the delta.
    deltas = _delta_bases(backend)
    if deltas:
        for chunks in chunks_of.values():
            chunks |= _bases_of(chunks, deltas)
    stored = dict(_chunk_objects(backend))
    # How many recovery points, and how many groups, reference each chunk.
    point_owners: dict[bytes, int] = {}
    group_chunks: dict[str, set[bytes]] = {}
    for rp, chunks in chunks_of.items():
        for cid in chunks:
            point_owners[cid] = point_owners.get(cid, 0) + 1
        if rp in groups:
            group_chunks.setdefault(groups[rp], set()).update(chunks)
    group_owners: dict[bytes, int] = {}
    for chunks in group_chunks.values():
        for cid in chunks:
            group_owners[cid] = group_owners.get(cid, 0) + 1
    # A chunk of an RP outside every group is shared with "somebody else" for each group.
    for rp, chunks in chunks_of.items():
        if rp not in groups:
            for cid in chunks:
                if cid in group_owners:
                    group_owners[cid] += 1
    return StoreAccounting(
        points={rp: _use(chunks, point_owners, stored) for rp, chunks in chunks_of.items()},
        groups={g: _use(chunks, group_owners, stored) for g, chunks in group_chunks.items()},
        unreadable=tuple(sorted(unreadable)),
        stored_bytes=sum(stored.values()),
        index_reads=len(to_read),
    )
