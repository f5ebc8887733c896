"""Catalog, verification, scrub, deletion, metadata updates, garbage collection, key rotation."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from .backends import ObjectInfo, ObjectTarget
from .backends.local import TMP_PREFIX
from .errors import CorruptionError, Damage, RecoveryPointNotFound
from .formats import (
    ZERO_DIGEST,
    ChunkDamaged,
    DiskIndex,
    IndexDamaged,
    check_outer,
    delta_ref,
    file_digest,
)
from .keys import unwrap_keys, wrap_keys
from .model import (
    KEEP,
    CancelFn,
    DiskInfo,
    GcResult,
    Keep,
    ProgressFn,
    RecoveryPoint,
    VerifyReport,
)
from .pipeline import Throttle, default_threads, run_bounded
from .store import MAX_CHAIN, Store, chunk_key, index_key, iso, parse_iso

# ---------------------------------------------------------------------------- catalog


def _to_rp(body: dict[str, Any]) -> RecoveryPoint:
    created = parse_iso(body["created"])
    completed = parse_iso(body["completed"])
    assert created is not None and completed is not None
    return RecoveryPoint(
        rp_id=body["rp_id"],
        vm_name=body["vm_name"],
        created=created,
        completed=completed,
        parent=body.get("parent"),
        consistency=body.get("consistency", ""),
        retain_until=parse_iso(body.get("retain_until")),
        tags=list(body.get("tags", [])),
        labels=dict(body.get("labels", {})),
        disks=[
            DiskInfo(
                lun=int(d["lun"]),
                size=int(d["size"]),
                chunk_size=int(d["chunk_size"]),
                chunks=int(d["chunks"]),
                index_blake3=d["index_blake3"],
                change_detection=d.get("change_detection", ""),
                bytes_read=int(d.get("bytes_read", 0)),
                bytes_changed=int(d.get("bytes_changed", 0)),
                bytes_stored=int(d.get("bytes_stored", 0)),
                chunks_new=int(d.get("chunks_new", 0)),
            )
            for d in body["disks"]
        ],
        vault_key_id=body.get("vault_key_id", ""),
    )


def get_recovery_point(store: Store, rp_id: str) -> RecoveryPoint:
    return _to_rp(store.read_manifest(rp_id))


def list_recovery_points(
    store: Store, *, damaged: list[Damage] | None = None
) -> list[RecoveryPoint]:
    """Every committed recovery point, read from the store alone (oldest first).

    Manifests that fail authentication are left out; pass a list as `damaged` to learn which.
    """
    out = []
    for rp_id in store.list_rp_ids():
        try:
            out.append(_to_rp(store.read_manifest(rp_id)))
        except RecoveryPointNotFound:
            continue  # deleted meanwhile
        except CorruptionError as e:
            if damaged is not None:
                damaged.extend(e.details)
    out.sort(key=lambda rp: (rp.created, rp.rp_id))
    return out


def update_manifest_metadata(
    store: Store,
    rp_id: str,
    *,
    retain_until: datetime | None | Keep = KEEP,
    tags: list[str] | Keep = KEEP,
    labels: dict[str, str] | Keep = KEEP,
    consistency: str | Keep = KEEP,
) -> RecoveryPoint:
    """Rewrite a manifest's retention, tags, labels or consistency atomically (re-authenticated).

    Consistency is known only after the post-snapshot hooks ran, so a backup commits the
    conservative level first and raises it here."""
    with store.operation("update-metadata", rp_id=rp_id):
        body = store.read_manifest(rp_id)
        if not isinstance(consistency, Keep):
            body["consistency"] = consistency
        if not isinstance(retain_until, Keep):
            body["retain_until"] = iso(retain_until)
            if store.enforces_retention:
                _hold_rp(store, rp_id, body, retain_until)
        if not isinstance(tags, Keep):
            body["tags"] = list(tags)
        if not isinstance(labels, Keep):
            body["labels"] = {str(k): str(v) for k, v in labels.items()}
        store.commit_manifest(rp_id, body, replace=True)
    return _to_rp(body)


def _hold_rp(store: Store, rp_id: str, body: dict[str, Any], until: datetime | None) -> None:
    """S3 Object Lock: extend the locks of a recovery point's indexes and of every chunk they
    reference to its new date (never shortened), before its manifest names that date."""
    cids: set[bytes] = set()
    for disk in body.get("disks", []):
        idx = store.load_index(rp_id, disk)
        cids.update(idx.digest(i) for i in range(idx.count))
    cids.discard(ZERO_DIGEST)
    store.hold_chunks(cids, until)
    store.hold_objects([index_key(rp_id, int(d["lun"])) for d in body.get("disks", [])], until)


def delete_recovery_point(store: Store, rp_id: str) -> None:
    """Remove a recovery point (manifest first, then its indexes). Chunks go at the next GC."""
    store.require_keys()
    with store.operation("delete", rp_id=rp_id):
        store.delete_manifest(rp_id)  # RecoveryPointNotFound if absent
        store.remove_indexes(rp_id)


# ---------------------------------------------------------------------------- verify / scrub


def _collect(
    store: Store, rp_ids: Iterable[str], keyed: bool, damage: list[Damage]
) -> tuple[list[str], dict[bytes, list[tuple[str, int, int, int]]]]:
    """Check manifests and indexes; map each referenced chunk to the places using it."""
    refs: dict[bytes, list[tuple[str, int, int, int]]] = {}
    checked = []
    for rp_id in rp_ids:
        checked.append(rp_id)
        try:
            data = store.read_manifest_bytes(rp_id)
            body = store.parse_manifest(rp_id, data, keyed=keyed)
        except CorruptionError as e:
            damage.extend(e.details)
            continue
        for disk in body.get("disks", []):
            try:
                idx = store.load_index(rp_id, disk)
            except CorruptionError as e:
                damage.extend(e.details)
                continue
            lun = int(disk["lun"])
            for i in range(idx.count):
                cid = idx.digest(i)
                if cid != ZERO_DIGEST:
                    refs.setdefault(cid, []).append(
                        (rp_id, lun, i * idx.chunk_size, idx.chunk_len(i))
                    )
    return checked, refs


def verify(
    store: Store,
    rp_ids: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    threads: int | None = None,
) -> VerifyReport:
    """Keyed verification of all (or the given) recovery points: manifest MACs, index
    checksums, and every referenced chunk decrypted, authenticated and its id recomputed.
    Each damaged chunk is reported at every (rp, lun, offset) that uses it."""
    return _check(store, rp_ids, progress, cancel, threads, keyed=True)


def scrub(
    store: Store | str | os.PathLike[str],
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    threads: int | None = None,
) -> VerifyReport:
    """Keyless check of a whole store: manifest and index checksums, and the outer checksum of
    every chunk file (referenced or not). Needs no key; finds bit rot, not tampering."""
    if not isinstance(store, Store):
        store = Store.open(store, None)
    return _check(store, None, progress, cancel, threads, keyed=False)


def _check(
    store: Store,
    rp_ids: Iterable[str] | None,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    threads: int | None,
    *,
    keyed: bool,
) -> VerifyReport:
    started = time.monotonic()
    keys = store.require_keys() if keyed else None
    threads = store.io_threads(threads or default_threads())
    damage: list[Damage] = []
    with store.operation("verify" if keyed else "scrub"):
        ids = list(rp_ids) if rp_ids is not None else store.list_rp_ids()
        checked, refs = _collect(store, ids, keyed, damage)
        todo: list[bytes] = list(refs)
        if not keyed:  # scrub also reads unreferenced chunk files
            known = {c.hex() for c in refs}
            for info in store.list_chunks():
                name = info.key.rsplit("/", 1)[-1]
                if not name.startswith(TMP_PREFIX) and name not in known:
                    try:
                        todo.append(bytes.fromhex(name))
                    except ValueError:
                        continue
        throttle = Throttle(progress, "verify" if keyed else "scrub", len(todo))
        bad: dict[bytes, str] = {}  # chunk -> why it is damaged
        bases: dict[bytes, bytes] = {}  # delta chunk -> its base (scrub)

        def work(cid: bytes) -> tuple[bytes, str | None, bytes | None]:
            try:
                blob = store.get_chunk(cid)
            except FileNotFoundError:
                return cid, "missing", None
            except OSError as e:
                return cid, f"unreadable: {e.strerror or e}", None
            if keys is None:
                reason = check_outer(blob)
                ref = delta_ref(blob) if reason is None else None
                return cid, reason, ref.base if ref is not None else None
            try:
                # Rebuilds a delta on its base: a damaged or missing base fails it here.
                store.read_chunk(cid, refs[cid][0][3], blob)
            except ChunkDamaged as e:
                return cid, str(e), None
            return cid, None, None

        def on_result(r: tuple[bytes, str | None, bytes | None]) -> None:
            cid, reason, base = r
            throttle.add(1)
            if base is not None:
                bases[cid] = base
            if reason is not None:
                bad[cid] = reason

        run_bounded(
            (partial(work, c) for c in todo),
            on_result,
            threads=threads,
            window=threads * 4,
            cancel=cancel,
        )
        throttle.finish()
        if not keyed:
            _chain_damage(store, bases, bad)
        for cid, reason in bad.items():
            places = refs.get(cid)
            if not places:
                damage.append(
                    Damage(None, None, None, "chunk", reason + " (unreferenced)", cid.hex())
                )
            for rp_id, lun, off, _ln in places or []:
                damage.append(Damage(rp_id, lun, off, "chunk", reason, cid.hex()))
    damage.sort(key=lambda d: (d.rp_id or "", d.lun or 0, d.offset or 0, d.kind))
    return VerifyReport(checked, len(todo), damage, keyed, time.monotonic() - started)


def _chain_damage(store: Store, bases: dict[bytes, bytes], bad: dict[bytes, str]) -> None:
    """Scrub: a delta whose base (or any chunk further down its chain) is damaged or missing
    is damaged too. Bases not scrubbed (none should be) are looked up one by one."""
    scrubbed = set(bases) | set(bad)

    def fault(cid: bytes, depth: int) -> str | None:
        base = bases.get(cid)
        if base is None:
            return None
        if depth > MAX_CHAIN:
            return "delta chain too long"
        if base in bad:
            why = "is missing" if bad[base] == "missing" else "is damaged"
            return f"delta base {base.hex()[:16]} {why}"
        if base not in scrubbed and not store.backend.exists(chunk_key(base)):
            return f"delta base {base.hex()[:16]} is missing"
        return fault(base, depth + 1)

    for cid in list(bases):
        if cid not in bad:
            reason = fault(cid, 0)
            if reason is not None:
                bad[cid] = reason


# ---------------------------------------------------------------------------- gc


def gc(
    store: Store,
    grace_seconds: float = 86400.0,
    *,
    wait_seconds: float = 60.0,
    dry_run: bool = False,
) -> GcResult:
    """Mark-and-sweep unreferenced chunks.

    Runs under the store's exclusive lock, so it waits (up to wait_seconds, then StoreBusy)
    while backups, transfers, restores or verifies hold their shared lock (object stores: their
    leases); marking happens after the lock is taken, so every committed recovery point is seen. Chunks, temp files and
    uncommitted index directories younger than grace_seconds (mtime) are never removed.
    A manifest or index that cannot be read aborts GC (CorruptionError) rather than risk
    sweeping chunks it references.
    """
    started = time.monotonic()
    with store.exclusive(wait_seconds):
        leases = store.clear_leases(dry_run)
        rp_ids = set(store.list_rp_ids())
        live = _live_chunks(store, rp_ids)
        cutoff = time.time() - grace_seconds
        sweep = _sweep_chunks(store, live, cutoff, dry_run)
        live = sweep.kept
        if sweep.chunks and not dry_run and store.enforces_retention:
            store.check_exclusive()
            store.prune_locks(live)
        index_dirs = _sweep_index_dirs(store, rp_ids, cutoff, dry_run)
        temps = sweep.temp_files + _sweep_temp_files(store, cutoff, dry_run)
    return GcResult(
        chunks_live=len(live),
        chunks_swept=sweep.chunks,
        bytes_swept=sweep.bytes,
        chunks_in_grace=sweep.in_grace,
        temp_files_removed=temps,
        index_dirs_removed=index_dirs,
        leases_cleared=leases,
        duration=time.monotonic() - started,
    )


def _live_chunks(store: Store, rp_ids: set[str]) -> set[str]:
    """The names of the chunk files that committed recovery points reference."""
    live: set[str] = set()
    for rp_id in sorted(rp_ids):
        data = store.read_manifest_bytes(rp_id)
        body = store.parse_manifest(rp_id, data, keyed=False)
        for disk in body["disks"]:
            d = _checked_index(store, rp_id, disk).digests
            for i in range(0, len(d), 32):
                live.add(bytes(d[i : i + 32]).hex())
    live.discard(ZERO_DIGEST.hex())
    return live


def _checked_index(store: Store, rp_id: str, disk: dict[str, Any]) -> DiskIndex:
    """A disk's index, matching its manifest's checksum; CorruptionError aborts GC."""
    lun = int(disk["lun"])
    try:
        idx = DiskIndex.from_bytes(store.read_index_bytes(rp_id, lun))
    except (FileNotFoundError, IndexDamaged) as e:
        raise CorruptionError(
            f"gc aborted: index of rp {rp_id} lun {disk['lun']} unreadable ({e})",
            [Damage(rp_id, lun, None, "index", str(e))],
        ) from e
    if file_digest(idx.to_bytes()) != disk["index_blake3"]:
        raise CorruptionError(
            f"gc aborted: index of rp {rp_id} lun {disk['lun']} does not match",
            [Damage(rp_id, lun, None, "index", "checksum mismatch")],
        )
    return idx


@dataclass
class _ChunkSweep:
    chunks: int = 0
    bytes: int = 0
    in_grace: int = 0
    temp_files: int = 0  # chunk files a writer left half-written
    kept: set[str] = field(default_factory=set)  # the referenced chunks and their bases


# Objects deleted per request (and per check that GC still holds the store).
SWEEP_BATCH = 1000


def _sweep_chunks(store: Store, live: set[str], cutoff: float, dry_run: bool) -> _ChunkSweep:
    """Remove the chunks (and chunk temp files) no recovery point references, unless they
    changed after `cutoff`: a running backup may be about to reference them. A chunk a kept
    delta is built on is kept too, down its whole chain; then the delta records of chunks
    no longer stored go (after the chunks: a record outliving its chunk only keeps a base a
    little longer, a chunk outliving its record could lose its base)."""
    sweep = _ChunkSweep()
    listed = list(store.list_chunks())
    young = {
        name
        for info in listed
        if info.mtime > cutoff and not (name := info.key.rsplit("/", 1)[-1]).startswith(".")
    }
    refs = store.delta_records()
    bases = store.delta_bases(refs)
    keep = Store.with_bases(live | young, bases)
    sweep.kept = Store.with_bases(live, bases)
    doomed: list[str] = []

    def flush() -> None:
        if doomed and not dry_run:
            store.check_exclusive()
            store.delete_chunks(doomed)
        doomed.clear()

    stored: set[str] = set()
    for info in listed:
        name = info.key.rsplit("/", 1)[-1]
        if name in keep:
            stored.add(name)
            if name not in live and name in young:
                sweep.in_grace += 1
            continue
        if info.mtime > cutoff:
            sweep.in_grace += 1
            continue
        doomed.append(info.key)
        if name.startswith(TMP_PREFIX):
            sweep.temp_files += 1
        else:
            sweep.chunks += 1
            sweep.bytes += info.size
        if len(doomed) >= SWEEP_BATCH:
            flush()
    flush()
    for key, cid, _base in refs:
        if cid not in stored:
            doomed.append(key)
            if len(doomed) >= SWEEP_BATCH:
                flush()
    flush()
    return sweep


def _sweep_index_dirs(store: Store, rp_ids: set[str], cutoff: float, dry_run: bool) -> int:
    """Remove index directories older than `cutoff` whose manifest was never committed."""
    removed = 0
    for name, (mtime, _keys) in store.list_index_dirs().items():
        if name in rp_ids or mtime > cutoff or name.startswith(TMP_PREFIX):
            continue
        if store.has_manifest(name):
            continue
        removed += 1
        if not dry_run:
            store.check_exclusive()
            store.remove_indexes(name)
    return removed


def _sweep_temp_files(store: Store, cutoff: float, dry_run: bool) -> int:
    """Remove manifest and index temp files older than `cutoff` (local stores leave them)."""
    old = [i for i in store.list_manifest_temps() if i.mtime <= cutoff]
    old += [
        ObjectInfo(name, 0, mtime)
        for name, (mtime, _keys) in store.list_index_dirs().items()
        if name.startswith(TMP_PREFIX) and mtime <= cutoff
    ]
    if not dry_run:
        store.backend.delete_many([i.key if "/" in i.key else f"indexes/{i.key}" for i in old])
    return len(old)


# ---------------------------------------------------------------------------- keys


def rewrap_keys(
    store_path: str | os.PathLike[str],
    old_kek: bytes,
    new_kek: bytes,
    *,
    target: ObjectTarget | None = None,
) -> None:
    """Re-wrap a store's vault keys under a new KEK; chunks, indexes and manifests unchanged.
    WrongKey if old_kek does not open the store. Rewrap each tier (vault, snapshot) that
    shares the keys."""
    store = Store.open(store_path, None, target=target)
    keys = unwrap_keys(store.keys_doc(), old_kek)
    new_doc = wrap_keys(keys, new_kek)
    unwrap_keys(new_doc, new_kek)
    store.rewrap(new_doc)
