"""Exact space accounting: what a recovery point is reported to hold alone is what deleting it
and collecting garbage frees; shared chunks are counted once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import BackupRequest, DiskSource, Store, backup, delete_recovery_point, gc
from engine.accounting import IndexCache, StoreAccounting, store_accounting
from engine.stats import store_stats
from engine.tests.tools import REPO, engine_env, require_tool

CHUNK = 256 << 10
pytestmark = pytest.mark.local_store


def _write(path: Path, blocks: list[bytes]) -> Path:
    path.write_bytes(b"".join(blocks))
    return path


def _stored(store: Store) -> int:
    return store_stats(store.location).stored_bytes


def _backup(store: Store, disk: Path, vm: str, parent: str | None = None) -> str:
    return backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name=vm, parent=parent)).rp_id


@pytest.fixture
def world(tmp_path: Path, store: Store) -> dict[str, str]:
    """vm a: a1, then a2 with two blocks changed; vm b: b1 shares six blocks with a1 and repeats
    one of its own four times (one chunk, however often referenced)."""
    blocks = [os.urandom(CHUNK) for _ in range(8)]
    a1 = _backup(store, _write(tmp_path / "a.img", blocks), "a")
    changed = blocks[:6] + [os.urandom(CHUNK), os.urandom(CHUNK)]
    a2 = _backup(store, _write(tmp_path / "a.img", changed), "a", parent=a1)
    own = os.urandom(CHUNK)
    b1 = _backup(store, _write(tmp_path / "b.img", blocks[:6] + [own] * 4), "b")
    return {"a1": a1, "a2": a2, "b1": b1}


def test_unique_bytes_are_what_delete_and_gc_free(store: Store, world: dict[str, str]) -> None:
    groups = {world["a1"]: "a", world["a2"]: "a", world["b1"]: "b"}
    for rp in ("a2", "b1", "a1"):  # each in turn, re-measured after every deletion
        report = store_accounting(store.location, groups=groups)
        reported = report.points[world[rp]].unique_bytes
        before = _stored(store)
        delete_recovery_point(store, world[rp])
        gc(store, grace_seconds=0)
        assert before - _stored(store) == reported, rp
    assert _stored(store) == 0


def test_shared_chunks_are_counted_once(store: Store, world: dict[str, str]) -> None:
    groups = {world["a1"]: "a", world["a2"]: "a", world["b1"]: "b"}
    report = store_accounting(store.location, groups=groups)
    a1, a2, b1 = (report.points[world[k]] for k in ("a1", "a2", "b1"))
    # a1: six blocks shared with a2 and b1, its last two its own.
    assert (a1.unique_chunks, a1.shared_chunks) == (2, 6)
    assert (a2.unique_chunks, a2.shared_chunks) == (2, 6)
    # b1: the repeated block is one chunk.
    assert (b1.unique_chunks, b1.shared_chunks) == (1, 6)
    # The VMs: a owns its four changed blocks; the six common ones are shared with b.
    assert (report.groups["a"].unique_chunks, report.groups["a"].shared_chunks) == (4, 6)
    assert (report.groups["b"].unique_chunks, report.groups["b"].shared_chunks) == (1, 6)
    # Every stored chunk is counted exactly once over the VMs' unique and shared parts.
    stats = store_stats(store.location)
    shared_once = report.groups["a"].shared_bytes  # the same six chunks as b's shared ones
    assert report.groups["b"].shared_bytes == shared_once
    total = report.groups["a"].unique_bytes + report.groups["b"].unique_bytes + shared_once
    assert total == stats.stored_bytes


def test_deleting_a_vm_frees_its_group_figure(store: Store, world: dict[str, str]) -> None:
    groups = {world["a1"]: "a", world["a2"]: "a", world["b1"]: "b"}
    reported = store_accounting(store.location, groups=groups).groups["a"].unique_bytes
    before = _stored(store)
    delete_recovery_point(store, world["a1"])
    delete_recovery_point(store, world["a2"])
    gc(store, grace_seconds=0)
    assert before - _stored(store) == reported


def test_an_empty_place_has_no_figures(tmp_path: Path) -> None:
    assert store_accounting(tmp_path / "nothing").points == {}


def test_benchmark_smoke_run(tmp_path: Path) -> None:
    """The benchmark's own check (reported == freed for every RP) on a small image."""
    require_tool("mkfs.ext4")
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "accounting.py"), "--size", "32M", "--rps", "3"],
        cwd=REPO,
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "largest difference: 0 bytes" in r.stdout


def test_with_a_cache_only_new_indexes_are_read_and_the_figures_equal_a_full_recount(
    tmp_path: Path, store: Store, world: dict[str, str]
) -> None:
    groups = {world["a1"]: "a", world["a2"]: "a", world["b1"]: "b"}
    cache = IndexCache()

    def both() -> tuple[StoreAccounting, StoreAccounting]:
        cached = store_accounting(store.location, groups=groups, cache=cache)
        full = store_accounting(store.location, groups=groups)
        assert (cached.points, cached.groups) == (full.points, full.groups)
        assert cached.stored_bytes == full.stored_bytes == _stored(store)
        return cached, full

    cached, full = both()
    assert cached.index_reads == full.index_reads == 3  # one disk per RP, nothing cached yet
    # A new backup: its index alone is read; the others' figures change (chunks now shared).
    blocks = (tmp_path / "a.img").read_bytes()
    a3 = _backup(store, _write(tmp_path / "a.img", [blocks[: 7 * CHUNK], os.urandom(CHUNK)]), "a")
    groups[a3] = "a"
    cached, full = both()
    assert (cached.index_reads, full.index_reads) == (1, 4)
    # A deletion: nothing to read, and the cache forgets the deleted RP's index.
    refs = cache.refs
    delete_recovery_point(store, world["a1"])
    gc(store, grace_seconds=0)
    del groups[world["a1"]]
    cached, full = both()
    assert cached.index_reads == 0 and cache.refs < refs
    # Bounded: a cache too small for two RPs keeps the latest one read and still agrees.
    small = IndexCache(max_refs=9)
    store_accounting(store.location, groups=groups, cache=small)
    assert small.refs <= 9
    again = store_accounting(store.location, groups=groups, cache=small)
    assert again.index_reads >= 2 and again.points == full.points
