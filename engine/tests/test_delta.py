"""Delta chunks: a changed chunk stored as its changed pages on the parent's chunk.

Round trips, the chain bound, the threshold, damaged and missing bases (restore, verify and
scrub fail loudly), GC keeping bases, transfers moving deltas with their bases first, and the
encoding itself under random page-change patterns."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    BackupRequest,
    CorruptionError,
    DiskSource,
    Store,
    backup,
    delete_recovery_point,
    init_store,
    open_store,
    restore,
    scrub,
    transfer,
    verify,
)
from engine.delta import DELTA_DEPTH, DELTA_THRESHOLD
from engine.formats import (
    PAGE_SIZE,
    ChunkDamaged,
    Codec,
    DeltaRef,
    apply_delta,
    changed_pages,
    chunk_id,
    decode_chunk,
    delta_body,
    delta_ref,
    encode_delta,
)
from engine.keys import new_keyset
from engine.store import chunk_key
from engine.tests.tools import (
    debugfs_write,
    e2fsck_clean,
    flip_object,
    gc_aged,
    make_ext4,
    require_tool,
    same_bytes,
)

CS = 64 << 10  # 16 pages a chunk
PAGES = CS // PAGE_SIZE


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    """A store of each kind with small chunks (16 pages), so tests stay small."""
    return make_store("vault", chunk_size=CS)


def _poke(path: Path, pages: list[int], rnd: random.Random) -> None:
    """Overwrite whole 4 KiB pages (page numbers over the whole disk) with random bytes."""
    with open(path, "r+b") as f:
        for p in pages:
            f.seek(p * PAGE_SIZE)
            f.write(rnd.randbytes(PAGE_SIZE))


def _deltas(store: Store) -> dict[str, DeltaRef]:
    """Every chunk stored as a delta, with its clear header."""
    out = {}
    for info in store.list_chunks():
        name = info.key.rsplit("/", 1)[-1]
        if name.startswith("."):
            continue
        ref = delta_ref(store.backend.get(info.key))
        if ref is not None:
            out[name] = ref
    return out


def _series(store: Store, image: Path, gens: int, rnd: random.Random) -> list[str]:
    """A full backup, then `gens` incrementals each writing one page in every chunk."""
    rps = [backup(BackupRequest(store, [DiskSource(0, str(image))], vm_name="db")).rp_id]
    chunks = image.stat().st_size // CS
    for _ in range(gens):
        _poke(image, [c * PAGES + rnd.randrange(PAGES) for c in range(chunks)], rnd)
        res = backup(
            BackupRequest(store, [DiskSource(0, str(image))], vm_name="db", parent=rps[-1])
        )
        rps.append(res.rp_id)
    return rps


# ---------------------------------------------------------------------------- the encoding


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pages=st.integers(1, 40),
    short=st.integers(0, PAGE_SIZE - 1),
    changes=st.lists(st.tuples(st.integers(0, 39), st.integers(0, PAGE_SIZE - 1)), max_size=40),
    seed=st.integers(0, 2**32),
)
def test_reconstruct_of_delta_is_the_new_chunk(
    pages: int, short: int, changes: list[tuple[int, int]], seed: int
) -> None:
    """reconstruct(delta(base, new)) == new for any page-change pattern, short last page
    included, and only the pages that differ are carried."""
    rnd = random.Random(seed)
    length = max(1, pages * PAGE_SIZE - short)
    base = rnd.randbytes(length)
    new = bytearray(base)
    for page, at in changes:
        off = (page % pages) * PAGE_SIZE + at
        if off < length:
            new[off] ^= 1 + rnd.randrange(255)
    new_b = bytes(new)
    changed = changed_pages(base, new_b)
    expect = sorted(
        {
            p
            for p in range(pages)
            if base[p * 4096 : p * 4096 + 4096] != new_b[p * 4096 : p * 4096 + 4096]
        }
    )
    assert changed == expect
    body = delta_body(new_b, changed)
    assert len(body) <= (pages + 7) // 8 + len(changed) * PAGE_SIZE
    assert apply_delta(base, body, length) == new_b
    # and through the stored frame: compressed, encrypted, its id checked on the way out
    keys = new_keyset()
    cid = chunk_id(keys, new_b)
    blob = encode_delta(
        keys, cid, DeltaRef(chunk_id(keys, base), 1), body, length, Codec("zstd", 1)
    )
    assert delta_ref(blob) == DeltaRef(chunk_id(keys, base), 1)
    assert decode_chunk(keys, cid, blob, length, lambda bid, n: base) == new_b


def test_a_delta_on_the_wrong_base_or_without_one_is_damage() -> None:
    keys = new_keyset()
    base = os.urandom(CS)
    new = bytearray(base)
    new[100] ^= 1
    cid = chunk_id(keys, bytes(new))
    blob = encode_delta(
        keys,
        cid,
        DeltaRef(chunk_id(keys, base), 1),
        delta_body(bytes(new), [0]),
        CS,
        Codec("none", 0),
    )
    with pytest.raises(ChunkDamaged, match="does not match its id"):
        decode_chunk(keys, cid, blob, CS, lambda bid, n: os.urandom(CS))
    with pytest.raises(ChunkDamaged, match="without its base"):
        decode_chunk(keys, cid, blob, CS)
    with pytest.raises(ChunkDamaged, match="bytes, the chunk"):
        decode_chunk(keys, cid, blob, CS, lambda bid, n: base[:-1])


# ---------------------------------------------------------------------------- backups


def test_scattered_pages_are_stored_as_deltas_and_restore(tmp_path: Path, store: Store) -> None:
    """On every kind of store: one page changed per chunk becomes a delta; more than the
    threshold stays whole; every RP restores byte-identically and verifies."""
    rnd = random.Random(1)
    image = tmp_path / "disk.img"
    image.write_bytes(rnd.randbytes(32 * CS))
    full = backup(BackupRequest(store, [DiskSource(0, str(image))], vm_name="db"))
    first = tmp_path / "first.img"
    shutil.copy(image, first)
    # chunks 0-15: one page each; chunks 16-23: just over the threshold; 24-31 unchanged
    many = int(DELTA_THRESHOLD * PAGES) + 1
    _poke(image, [c * PAGES + 3 for c in range(16)], rnd)
    _poke(image, [c * PAGES + p for c in range(16, 24) for p in range(many)], rnd)
    inc = backup(BackupRequest(store, [DiskSource(0, str(image))], vm_name="db", parent=full.rp_id))
    d = inc.disks[0]
    assert (d.chunks_new, d.chunks_delta) == (24, 16)
    assert d.bytes_stored < 16 * (PAGE_SIZE + 200) + 8 * CS + 8 * 200
    assert d.bytes_saved > 16 * (CS - PAGE_SIZE - 200)
    assert len(_deltas(store)) == 16
    for rp, want in ((full.rp_id, first), (inc.rp_id, image)):
        out = tmp_path / f"{rp}.img"
        restore(store, rp, {0: out})
        assert same_bytes(out, want)
    assert verify(store).ok
    assert scrub(store).ok


def test_chain_length_stays_within_the_bound(tmp_path: Path, store: Store) -> None:
    """Many incrementals touching every chunk: no delta is deeper than DELTA_DEPTH, a parent
    at the bound is not built on (the new delta goes on the chain's whole chunk), and the
    newest RP still restores."""
    rnd = random.Random(2)
    image = tmp_path / "disk.img"
    image.write_bytes(rnd.randbytes(8 * CS))
    rps = _series(store, image, DELTA_DEPTH + 3, rnd)
    depths = {ref.depth for ref in _deltas(store).values()}
    assert max(depths) == DELTA_DEPTH
    assert depths == set(range(1, DELTA_DEPTH + 1))
    out = tmp_path / "out.img"
    restore(store, rps[-1], {0: out})
    assert same_bytes(out, image)


def test_a_damaged_base_fails_every_dependent_restore_verify_and_scrub(
    tmp_path: Path, store: Store
) -> None:
    rnd = random.Random(3)
    image = tmp_path / "disk.img"
    image.write_bytes(rnd.randbytes(8 * CS))
    full, inc = _series(store, image, 1, rnd)
    # chunk 5 of the incremental is a delta on chunk 5 of the full backup
    base = store.load_index(full, store.read_manifest(full)["disks"][0]).digest(5)
    dep = store.load_index(inc, store.read_manifest(inc)["disks"][0]).digest(5)
    assert delta_ref(store.get_chunk(dep)) == DeltaRef(base, 1)
    flip_object(store, chunk_key(base), 100)

    with pytest.raises(CorruptionError, match="delta base .* is damaged") as e:
        restore(store, inc, {0: tmp_path / "out.img"})
    assert e.value.details[0].offset == 5 * CS
    rep = verify(store)
    places = {(d.rp_id, d.offset) for d in rep.damage}
    assert places == {(full, 5 * CS), (inc, 5 * CS)}
    assert any("delta base" in d.reason for d in rep.damage if d.rp_id == inc)
    rep = scrub(store)
    assert {(d.rp_id, d.offset) for d in rep.damage} == {(full, 5 * CS), (inc, 5 * CS)}
    assert any("delta base" in d.reason for d in rep.damage if d.rp_id == inc)


def test_a_missing_base_is_corruption_not_a_missing_chunk(tmp_path: Path, store: Store) -> None:
    rnd = random.Random(4)
    image = tmp_path / "disk.img"
    image.write_bytes(rnd.randbytes(4 * CS))
    full, inc = _series(store, image, 1, rnd)
    delete_recovery_point(store, full)
    base = next(iter(_deltas(store).values())).base
    store.backend.delete(chunk_key(base))
    with pytest.raises(CorruptionError, match="delta base .* is missing"):
        restore(store, inc, {0: tmp_path / "out.img"})
    assert not verify(store).ok
    rep = scrub(store)
    assert any("delta base" in d.reason and "missing" in d.reason for d in rep.damage)


def test_gc_keeps_bases_while_deltas_need_them(tmp_path: Path, store: Store) -> None:
    """Deleting the RPs whose chunks are the bases keeps the bases (down the chain); once no
    delta needs them they go, and their delta records with the deltas."""
    rnd = random.Random(5)
    image = tmp_path / "disk.img"
    image.write_bytes(rnd.randbytes(8 * CS))
    rps = _series(store, image, 3, rnd)
    for rp in rps[:-1]:
        delete_recovery_point(store, rp)
    res = gc_aged(store, 3600, 60)
    chain = {h for ref in _deltas(store).values() for h in [ref.base.hex()]}
    names = {i.key.rsplit("/", 1)[-1] for i in store.list_chunks()}
    assert chain <= names
    assert res.chunks_live == len(names) == 8 * 4  # each chunk: a whole one and 3 deltas
    out = tmp_path / "out.img"
    restore(store, rps[-1], {0: out})
    assert same_bytes(out, image)
    assert verify(store).ok
    # (a full backup of the same data would reference the same chunks, deltas and all:
    # their ids are their contents) a new disk, then the delta RP goes, and its chains with it
    image.write_bytes(rnd.randbytes(8 * CS))
    full = backup(BackupRequest(store, [DiskSource(0, str(image))], vm_name="db"))
    delete_recovery_point(store, rps[-1])
    res = gc_aged(store, 3600, 60)
    assert res.chunks_live == len(list(store.list_chunks())) == 8
    assert store.delta_records() == []
    restore(store, full.rp_id, {0: out})
    assert same_bytes(out, image)


def test_transfer_moves_deltas_with_their_bases_first(
    tmp_path: Path, kek: bytes, make_store: Callable[..., Store]
) -> None:
    """From a local snapshot tier into every kind of store: the incremental alone is copied
    (its bases are not in it), as deltas, with the bases put at the destination too."""
    rnd = random.Random(6)
    snap = init_store(tmp_path / "snap", kek, codec="none", chunk_size=CS)
    image = tmp_path / "disk.img"
    image.write_bytes(rnd.randbytes(8 * CS))
    inc = _series(snap, image, 2, rnd)[-1]
    vault = make_store("vault", keys_from=snap)
    t = transfer(snap, vault, inc)
    assert t.chunks_delta == 8 * 2  # depth-2 deltas and the depth-1 deltas they are built on
    assert t.chunks_copied == 8 * 3
    assert len(vault.delta_bases()) == 16
    out = tmp_path / "out.img"
    restore(vault, inc, {0: out})
    assert same_bytes(out, image)
    assert verify(vault).ok and scrub(vault).ok


def test_a_version_1_destination_gets_whole_chunks(tmp_path: Path, kek: bytes) -> None:
    rnd = random.Random(7)
    snap = init_store(tmp_path / "snap", kek, codec="none", chunk_size=CS)
    image = tmp_path / "disk.img"
    image.write_bytes(rnd.randbytes(4 * CS))
    _full, inc = _series(snap, image, 1, rnd)
    old = init_store(tmp_path / "old", kek, keys_from=snap)
    settings_file = tmp_path / "old" / "store.json"
    settings_file.write_text(settings_file.read_text().replace('"version": 2', '"version": 1'))
    old = open_store(tmp_path / "old", kek)
    assert not old.deltas
    t = transfer(snap, old, inc)
    assert t.chunks_delta == 0 and _deltas(old) == {}
    out = tmp_path / "out.img"
    restore(old, inc, {0: out})
    assert same_bytes(out, image)


# ---------------------------------------------------------------------------- old format

V1_KEK = bytes(range(32))
V1_DATA = Path(__file__).parent / "data" / "store-v1" / "store"
V1_RP2_BLAKE3 = "3172fa2afafaed8b082dc9eff07fd0b44511efa7afacc49ec8b106f98dd4ebe5"


def test_a_store_written_in_format_1_still_reads(tmp_path: Path) -> None:
    """A store written by the format-1 code (kept in engine/tests/data) opens, verifies,
    scrubs and restores; new backups into it keep whole chunks, so format-1 readers still
    read it."""
    root = tmp_path / "store"
    shutil.copytree(V1_DATA, root)
    (root / "leases").mkdir(exist_ok=True)
    store = open_store(root, V1_KEK)
    assert store.version == 1 and not store.deltas
    assert verify(store).ok and scrub(store).ok
    out = tmp_path / "rp2.img"
    restore(store, "22222222-2222-4222-8222-222222222222", {0: out})
    assert blake3.blake3(out.read_bytes()).hexdigest() == V1_RP2_BLAKE3
    data = bytearray(out.read_bytes())
    data[20_000:20_010] = os.urandom(10)
    image = tmp_path / "next.img"
    image.write_bytes(bytes(data))
    res = backup(
        BackupRequest(
            store,
            [DiskSource(0, str(image))],
            vm_name="old",
            parent="22222222-2222-4222-8222-222222222222",
        )
    )
    assert res.chunks_new == 1 and res.chunks_delta == 0
    assert '"version": 1' in (root / "store.json").read_text()
    assert _deltas(store) == {}
    restore(store, res.rp_id, {0: out})
    assert same_bytes(out, image)


# ---------------------------------------------------------------------------- ext4 series


def _file_blocks(image: Path, name: str) -> list[int]:
    out = subprocess.run(
        [require_tool("debugfs"), "-R", f"blocks /{name}", str(image)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [int(b) for b in out.split()]


@pytest.mark.local_store
def test_ext4_series_of_scattered_page_writes_with_retention(tmp_path: Path, store: Store) -> None:
    """A database-like file in a real ext4 image: twelve incrementals, each rewriting random
    4 KiB pages of the file in place (and now and then a new file, so metadata chunks change
    too), retention keeping the newest three RPs and GC sweeping after each delete. Every kept
    RP restores byte-identical and passes `e2fsck -fn`; the deltas stay within the bound."""
    rnd = random.Random(12)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "db.bin").write_bytes(rnd.randbytes(12 << 20))
    image = make_ext4(tmp_path / "disk.img", 24, staging)
    blocks = _file_blocks(image, "db.bin")
    assert len(blocks) == (12 << 20) // PAGE_SIZE
    kept: list[tuple[str, Path]] = []
    parent = None
    written = stored = 0
    for gen in range(12):
        if gen:
            pages = rnd.sample(blocks, 40)
            _poke(image, pages, rnd)
            written += len(pages) * PAGE_SIZE
            if gen % 4 == 0:
                extra = tmp_path / f"new{gen}.bin"
                extra.write_bytes(rnd.randbytes(50_000))
                debugfs_write(image, extra, f"new{gen}.bin")
        res = backup(BackupRequest(store, [DiskSource(0, str(image))], vm_name="db", parent=parent))
        if gen:
            stored += res.bytes_stored
        parent = res.rp_id
        copy = tmp_path / f"gen{gen}.img"
        shutil.copyfile(image, copy)
        kept.append((res.rp_id, copy))
        while len(kept) > 3:  # retention: the oldest goes, then GC
            old, old_copy = kept.pop(0)
            delete_recovery_point(store, old)
            old_copy.unlink()
            gc_aged(store, 3600, 60)
        assert max((r.depth for r in _deltas(store).values()), default=0) <= DELTA_DEPTH
        assert verify(store).ok
    assert len(_deltas(store)) > 50
    # scattered pages cost about what was written (the new files' and metadata chunks aside)
    assert stored < 2 * written + 3 * 50_000 + 20 * (64 << 10)
    for rp, copy in kept:
        out = tmp_path / "restored.img"
        restore(store, rp, {0: out})
        assert same_bytes(out, copy)
        e2fsck_clean(out)
    assert scrub(store).ok
