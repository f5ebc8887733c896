"""Bit rot on purpose: flip one byte of the stored chunk that holds some bytes of a disk.

The chunk is found through the recovery point's own index, in every store that holds the
recovery point (file recovery reads the snapshot tier while it has the RP, the vault tier
otherwise), so the damage is met whichever tier is read.
"""

from pathlib import Path

import engine
from jobs.models import RestoreTier
from vaults.stores import rp_store


def _stores(rp) -> list[engine.Store]:
    stores = []
    for tier in (RestoreTier.VAULT, RestoreTier.SNAPSHOT):
        try:
            store = rp_store(rp, tier)
        except engine.StoreNotFound:
            continue
        if store.has_manifest(str(rp.pk)):
            stores.append(store)
    return stores


def flip_chunks(rp, lun: int, offsets) -> list[Path]:
    """Flip a byte in the middle of each stored chunk that holds one of `offsets` of disk
    `lun` (each chunk once), in every store of the recovery point; the damaged chunk files."""
    damaged = []
    for store in _stores(rp):
        manifest = store.read_manifest(str(rp.pk))
        disk = next(d for d in manifest["disks"] if int(d["lun"]) == lun)
        index = store.load_index(str(rp.pk), disk)
        for i in sorted({offset // index.chunk_size for offset in offsets}):
            path = store.chunk_path(index.digest(i))
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
            damaged.append(path)
    assert damaged, "no store holds the recovery point"
    return damaged


def flip_chunk(rp, lun: int, offset: int) -> list[Path]:
    return flip_chunks(rp, lun, [offset])


def flip_chunks_holding(rp, lun: int, image: Path, *needles: bytes) -> list[Path]:
    """`flip_chunks` where the `needles` (bytes found in `image`, the disk as it was backed
    up) lie, e.g. a few KiB of a file."""
    disk = image.read_bytes()
    offsets = [disk.find(needle) for needle in needles]
    assert min(offsets) >= 0, "the bytes are not on the disk"
    return flip_chunks(rp, lun, offsets)
