"""Copy a recovery point between stores that share vault keys (snapshot tier -> vault)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import NamedTuple

from .errors import CorruptionError, Damage, KeyMismatch
from .formats import (
    ZERO_DIGEST,
    ChunkDamaged,
    DiskIndex,
    delta_ref,
    encode_chunk,
    manifest_from_bytes,
    recode_frame,
)
from .model import CancelFn, ProgressFn, TransferResult
from .pipeline import Throttle, default_threads, run_bounded
from .store import Store, Syncer, Uploader, parse_iso


def transfer(
    src: Store,
    dst: Store,
    rp_id: str,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    *,
    threads: int | None = None,
) -> TransferResult:
    """Copy rp_id from src to dst: the chunks dst lacks (each verified, re-compressed for dst's
    codec when the codec family differs; ids unchanged), then the indexes, then the manifest."""
    started = time.monotonic()
    skeys, dkeys = src.require_keys(), dst.require_keys()
    if skeys.vault_key_id != dkeys.vault_key_id or skeys.dek != dkeys.dek:
        raise KeyMismatch("source and destination stores do not share vault keys")
    threads = dst.io_threads(src.io_threads(threads or default_threads()))
    if dst.has_manifest(rp_id):
        dst.read_manifest(rp_id)  # must be a valid copy
        return TransferResult(rp_id, 0, 0, 0, True, time.monotonic() - started)

    with src.operation("transfer-out", rp_id=rp_id), dst.operation("transfer-in", rp_id=rp_id):
        manifest_bytes = src.read_manifest_bytes(rp_id)
        body = src.parse_manifest(rp_id, manifest_bytes, keyed=True)
        indexes = [(int(disk["lun"]), src.load_index(rp_id, disk)) for disk in body["disks"]]
        retain_until = parse_iso(body.get("retain_until"))
        wanted = _wanted(indexes)
        copied = _copy_chunks(src, dst, rp_id, wanted, progress, cancel, threads, retain_until)
        try:
            dst.sync_dirs(copied.dirs)
            # The chunks dst already had keep their own lock: it must reach this RP's date.
            dst.hold_chunks(wanted, retain_until)
            for lun, idx in indexes:
                dst.write_index(rp_id, lun, idx.to_bytes(), retain_until=retain_until)
            manifest_from_bytes(manifest_bytes, dkeys)  # still the authenticated manifest
            dst.commit_manifest_bytes(
                rp_id, manifest_bytes, replace=False, retain_until=retain_until
            )
        except BaseException:
            with contextlib.suppress(Exception):
                if not dst.has_manifest(rp_id):
                    dst.remove_indexes(rp_id)
            raise
    return TransferResult(
        rp_id,
        copied.chunks,
        copied.bytes,
        copied.present,
        False,
        time.monotonic() - started,
        copied.present_bytes,
        copied.deltas,
    )


class _Place(NamedTuple):
    """The first place a chunk is used (for error reports), and its length."""

    lun: int
    offset: int
    length: int


def _wanted(indexes: list[tuple[int, DiskIndex]]) -> dict[bytes, _Place]:
    """The recovery point's unique non-zero chunks, in disk order."""
    wanted: dict[bytes, _Place] = {}
    for lun, idx in indexes:
        for i in range(idx.count):
            cid = idx.digest(i)
            if cid != ZERO_DIGEST and cid not in wanted:
                wanted[cid] = _Place(lun, i * idx.chunk_size, idx.chunk_len(i))
    return wanted


@dataclass
class _Copied:
    chunks: int = 0
    bytes: int = 0
    present: int = 0  # chunks the destination already had
    present_bytes: int = 0  # their plaintext length: what deduplication saved
    deltas: int = 0  # chunks copied as deltas (their bases included)
    dirs: set[Path] = field(default_factory=set)  # to sync before the indexes are written


def _copy_chunks(
    src: Store,
    dst: Store,
    rp_id: str,
    wanted: dict[bytes, _Place],
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    threads: int,
    retain_until: datetime | None,
) -> _Copied:
    """Copy the wanted chunks dst lacks, each verified; returns when they are durable.

    A delta is copied as a delta when dst may hold deltas (else whole), and only once its
    base, and the base's base, are stored at dst: those are put first, synchronously, so dst
    never holds a delta without its base, even after a crash."""
    skeys = src.require_keys()
    by_lun: dict[int, int] = {}
    for p in wanted.values():
        by_lun[p.lun] = by_lun.get(p.lun, 0) + p.length
    throttle = Throttle(progress, "transfer", sum(by_lun.values()), disks=by_lun)
    copied = _Copied()
    lock = threading.Lock()

    def frame(cid: bytes, blob: bytes, data: bytes | None) -> bytes:
        """The chunk framed for dst (`data`: its plaintext, verified; None to read it when
        needed): a delta stays one, on bases put first, if dst may hold deltas."""
        ref = delta_ref(blob)
        if ref is None:
            return recode_frame(skeys, cid, blob, dst.codec)
        if not dst.deltas:
            plain = data if data is not None else src.read_chunk(cid, None, blob)
            return encode_chunk(skeys, cid, plain, dst.codec)
        put_base(ref.base)
        with lock:
            copied.deltas += 1
        return recode_frame(skeys, cid, blob, dst.codec)

    def put_base(bid: bytes) -> None:
        if dst.has_chunk(bid):
            return
        blob = src.get_chunk(bid)  # read_chunk of the delta just verified the whole chain
        out = frame(bid, blob, None)
        chunk_dir = dst.put_chunk(bid, out, None, retain_until=retain_until)
        dst.sync_dirs({chunk_dir} if chunk_dir is not None else set())
        with lock:
            copied.chunks += 1
            copied.bytes += len(out)

    def copy(
        cid: bytes, place: _Place, syncer: Syncer | Uploader
    ) -> tuple[int, int, bool, Path | None, int]:
        if dst.has_chunk(cid):
            return place.length, 0, False, None, place.lun
        try:
            blob = src.get_chunk(cid)
            data = src.read_chunk(cid, place.length, blob)
            out = frame(cid, blob, data)
        except (ChunkDamaged, FileNotFoundError) as e:
            reason = "missing" if isinstance(e, FileNotFoundError) else str(e)
            raise CorruptionError(
                f"source chunk of rp {rp_id} lun {place.lun} at offset {place.offset}: {reason}",
                [Damage(rp_id, place.lun, place.offset, "chunk", reason, cid.hex())],
            ) from e
        chunk_dir = dst.put_chunk(cid, out, syncer, retain_until=retain_until)
        return place.length, len(out), True, chunk_dir, place.lun

    def count(r: tuple[int, int, bool, Path | None, int]) -> None:
        ln, nbytes, stored, chunk_dir, lun = r
        with lock:
            _count(copied, ln, nbytes, stored, chunk_dir)
        throttle.add(ln, lun)

    with dst.syncer() as syncer:
        run_bounded(
            (partial(copy, cid, place, syncer) for cid, place in wanted.items()),
            count,
            threads=threads,
            window=threads * 3,
            cancel=cancel,
        )
        throttle.finish()
        syncer.wait()
    return copied


def _count(copied: _Copied, length: int, nbytes: int, stored: bool, chunk_dir: Path | None) -> None:
    if not stored:
        copied.present += 1
        copied.present_bytes += length
        return
    copied.chunks += 1
    copied.bytes += nbytes
    if chunk_dir is not None:
        copied.dirs.add(chunk_dir)
