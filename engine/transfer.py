"""Copy a recovery point between stores that share vault keys (snapshot tier -> vault)."""

from __future__ import annotations

import contextlib
import shutil
import time
from functools import partial
from pathlib import Path

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
        indexes: list[tuple[int, DiskIndex, bytes]] = []
        for disk in body["disks"]:
            idx = src.load_index(rp_id, disk)
            indexes.append((int(disk["lun"]), idx, idx.to_bytes()))
        # unique chunks in disk order, with the first place each is used (for error reports)
        wanted: dict[bytes, tuple[int, int, int]] = {}
        for lun, idx, _ in indexes:
            for i in range(idx.count):
                cid = idx.digest(i)
                if cid != ZERO_DIGEST and cid not in wanted:
                    wanted[cid] = (lun, i * idx.chunk_size, idx.chunk_len(i))
        throttle = Throttle(progress, "transfer", sum(w[2] for w in wanted.values()))
        copied = [0, 0, 0]  # chunks copied, bytes copied, chunks present
        dirs: set[Path] = set()

        def work(cid: bytes, lun: int, off: int, ln: int) -> tuple[int, int, Path | None]:
            if dst.has_chunk(cid):
                return ln, 0, None
            try:
                blob = recode_chunk(skeys, cid, src.get_chunk(cid), dst.codec)
            except (ChunkDamaged, FileNotFoundError) as e:
                reason = "missing" if isinstance(e, FileNotFoundError) else str(e)
                raise CorruptionError(
                    f"source chunk of rp {rp_id} lun {lun} at offset {off}: {reason}",
                    [Damage(rp_id, lun, off, "chunk", reason, cid.hex())],
                ) from e
            return ln, len(blob), dst.put_chunk(cid, blob, syncer)

        def on_result(r: tuple[int, int, Path | None]) -> None:
            ln, nbytes, d = r
            if d is None:
                copied[2] += 1
            else:
                copied[0] += 1
                copied[1] += nbytes
                dirs.add(d)
            throttle.add(ln)

        with Syncer() as syncer:
            run_bounded(
                (partial(work, cid, *w) for cid, w in wanted.items()),
                on_result,
                threads=threads,
                window=threads * 3,
                cancel=cancel,
            )
            throttle.finish()
            syncer.wait()
        try:
            dst.sync_dirs(dirs)
            for lun, _idx, data in indexes:
                dst.write_index(rp_id, lun, data)
            manifest_from_bytes(manifest_bytes, dkeys)  # still the authenticated manifest
            dst.commit_manifest_bytes(rp_id, manifest_bytes, replace=False)
        except BaseException:
            if not dst.has_manifest(rp_id):
                with contextlib.suppress(OSError):
                    shutil.rmtree(dst.index_dir(rp_id))
            raise
    return TransferResult(rp_id, copied[0], copied[1], copied[2], False, time.monotonic() - started)
