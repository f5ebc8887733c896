"""Copy a recovery point between stores that share vault keys (snapshot tier -> vault)."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NamedTuple

from .errors import CorruptionError, Damage, KeyMismatch
from .formats import ZERO_DIGEST, ChunkDamaged, DiskIndex, manifest_from_bytes, recode_chunk
from .model import CancelFn, ProgressFn, TransferResult
from .pipeline import Throttle, default_threads, run_bounded
from .store import Store, Syncer


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
    threads = threads or default_threads()
    if dst.has_manifest(rp_id):
        dst.read_manifest(rp_id)  # must be a valid copy
        return TransferResult(rp_id, 0, 0, 0, True, time.monotonic() - started)

    with src.operation("transfer-out", rp_id=rp_id), dst.operation("transfer-in", rp_id=rp_id):
        manifest_bytes = src.read_manifest_bytes(rp_id)
        body = src.parse_manifest(rp_id, manifest_bytes, keyed=True)
        indexes = [(int(disk["lun"]), src.load_index(rp_id, disk)) for disk in body["disks"]]
        copied = _copy_chunks(src, dst, rp_id, _wanted(indexes), progress, cancel, threads)
        try:
            dst.sync_dirs(copied.dirs)
            for lun, idx in indexes:
                dst.write_index(rp_id, lun, idx.to_bytes())
            manifest_from_bytes(manifest_bytes, dkeys)  # still the authenticated manifest
            dst.commit_manifest_bytes(rp_id, manifest_bytes, replace=False)
        except BaseException:
            if not dst.has_manifest(rp_id):
                with contextlib.suppress(OSError):
                    shutil.rmtree(dst.index_dir(rp_id))
            raise
    return TransferResult(
        rp_id,
        copied.chunks,
        copied.bytes,
        copied.present,
        False,
        time.monotonic() - started,
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
    dirs: set[Path] = field(default_factory=set)  # to sync before the indexes are written


def _copy_chunks(
    src: Store,
    dst: Store,
    rp_id: str,
    wanted: dict[bytes, _Place],
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    threads: int,
) -> _Copied:
    """Copy the wanted chunks dst lacks, each verified; returns when they are durable."""
    skeys = src.require_keys()
    throttle = Throttle(progress, "transfer", sum(p.length for p in wanted.values()))
    copied = _Copied()

    def copy(cid: bytes, place: _Place, syncer: Syncer) -> tuple[int, int, Path | None]:
        if dst.has_chunk(cid):
            return place.length, 0, None
        try:
            blob = recode_chunk(skeys, cid, src.get_chunk(cid), dst.codec)
        except (ChunkDamaged, FileNotFoundError) as e:
            reason = "missing" if isinstance(e, FileNotFoundError) else str(e)
            raise CorruptionError(
                f"source chunk of rp {rp_id} lun {place.lun} at offset {place.offset}: {reason}",
                [Damage(rp_id, place.lun, place.offset, "chunk", reason, cid.hex())],
            ) from e
        return place.length, len(blob), dst.put_chunk(cid, blob, syncer)

    def count(r: tuple[int, int, Path | None]) -> None:
        ln, nbytes, chunk_dir = r
        if chunk_dir is None:
            copied.present += 1
        else:
            copied.chunks += 1
            copied.bytes += nbytes
            copied.dirs.add(chunk_dir)
        throttle.add(ln)

    with Syncer() as syncer:
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
