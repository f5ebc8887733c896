"""Property tests: any sparse disk and any set of writes round-trip, with or without a hint."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import BackupRequest, DiskSource, backup, init_store, open_disk, restore
from engine.pipeline import ExtentCursor, normalise_extents

CS = 4096
SIZE = 64 * CS + 123

writes = st.lists(
    st.tuples(
        st.integers(0, SIZE - 1),
        st.integers(1, 3 * CS),
        st.sampled_from(["random", "zero", "byte"]),
    ),
    max_size=8,
)


def _apply(path: Path, ops: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    done = []
    with open(path, "r+b") as f:
        for off, n, kind in ops:
            n = min(n, SIZE - off)
            data = {"random": os.urandom(n), "zero": bytes(n), "byte": b"\x07" * n}[kind]
            f.seek(off)
            f.write(data)
            done.append((off, n))
    return done


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=writes, second=writes, use_hint=st.booleans())
def test_incremental_round_trip(
    first: list[tuple[int, int, str]], second: list[tuple[int, int, str]], use_hint: bool
) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        store = init_store(tmp / "s", os.urandom(32), chunk_size=CS)
        disk = tmp / "d.img"
        with open(disk, "wb") as f:
            f.truncate(SIZE)
        _apply(disk, first)
        full = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="p"))
        v1 = disk.read_bytes()
        hint = _apply(disk, second)
        src = DiskSource(0, str(disk), changed_extents=hint if use_hint else None)
        inc = backup(BackupRequest(store, [src], vm_name="p", parent=full.rp_id))
        for rp, want in ((full.rp_id, v1), (inc.rp_id, disk.read_bytes())):
            out = tmp / "out.img"
            restore(store, rp, {0: out}, sync=False)
            assert out.read_bytes() == want
            with open_disk(store, rp, 0) as rd:
                assert rd.read_at(CS - 7, 2 * CS) == want[CS - 7 : 3 * CS - 7]


@given(st.lists(st.tuples(st.integers(-10, 200), st.integers(-5, 60))), st.integers(0, 250))
def test_extent_cursor_matches_brute_force(extents: list[tuple[int, int]], limit: int) -> None:
    norm = normalise_extents(extents, limit)
    covered = {x for o, n in extents if n > 0 for x in range(max(0, o), min(limit, o + n))}
    assert {x for s, e in norm for x in range(s, e)} == covered
    assert all(a[1] < b[0] for a, b in zip(norm, norm[1:], strict=False))
    cur = ExtentCursor(norm)
    for start in range(0, limit, 16):
        assert cur.overlaps(start, start + 16) == any(
            x in covered for x in range(start, start + 16)
        )
