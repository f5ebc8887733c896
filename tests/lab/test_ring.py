"""The ring format and its consistency check: synthetic rings, then a real image."""

from __future__ import annotations

import subprocess

import pytest

from inventory.lab import images
from inventory.lab.ring import (
    BLANK_SLOT,
    RECORD_SIZE,
    RING_PATH,
    blank_ring,
    check_bytes,
    check_ring,
    decode,
    encode,
    read_ring,
    ring_extents,
)
from tests.lab.conftest import needs_e2fsprogs

N = 64


def ring_at(highest: int, n: int = N, first: int = 0) -> bytearray:
    """The ring as a writer that wrote seqs first..highest leaves it (a point-in-time view)."""
    buf = bytearray(blank_ring(n * RECORD_SIZE))
    for seq in range(max(first, highest - n + 1), highest + 1):
        slot = seq % n
        buf[slot * RECORD_SIZE : (slot + 1) * RECORD_SIZE] = encode(seq, n, seq)
    return buf


def test_record_roundtrip_and_torn_record():
    raw = encode(123456789, N, 42)
    assert len(raw) == RECORD_SIZE
    rec = decode(raw)
    assert rec is not None and (rec.seq, rec.slot, rec.slots, rec.time_ns) == (
        123456789,
        123456789 % N,
        N,
        42,
    )
    torn = raw[:300] + encode(123456790, N)[300:]  # half of one record, half of the next
    assert decode(torn) is None
    assert decode(BLANK_SLOT) is None


def test_blank_ring_is_ok_and_empty():
    report = check_bytes(blank_ring(N * RECORD_SIZE))
    assert report.ok and report.records == 0 and report.empty == N
    assert check_bytes(bytes(N * RECORD_SIZE)).ok  # zeros count as unwritten too


@pytest.mark.parametrize("highest", [0, 10, N - 1, N, N + 5, 5 * N + 17])
def test_point_in_time_rings_are_ok(highest):
    report = check_bytes(bytes(ring_at(highest)))
    assert report.ok, report.problems
    assert report.highest_seq == highest
    assert report.records == min(highest + 1, N)
    assert report.lowest_seq == max(0, highest - N + 1)


def test_torn_record_is_not_ok():
    buf = ring_at(3 * N + 7)
    slot = 20
    buf[slot * RECORD_SIZE + 100] ^= 0xFF
    report = check_bytes(bytes(buf))
    assert not report.ok and report.torn == 1
    assert report.gaps == 0  # the torn slot stands for its record; no extra gap


def test_two_moments_mixed_is_not_ok():
    # First half read when the writer was at seq 3N+5, second half after one more lap.
    early, late = ring_at(3 * N + 5), ring_at(4 * N + 40)
    half = N // 2 * RECORD_SIZE
    mixed = bytes(early[:half] + late[half:])
    report = check_bytes(mixed)
    assert not report.ok and report.gaps >= 1 and report.torn == 0
    assert check_bytes(bytes(early)).ok and check_bytes(bytes(late)).ok


def test_unwritten_slot_after_a_lap_is_not_ok():
    buf = ring_at(2 * N + 3)
    buf[5 * RECORD_SIZE : 6 * RECORD_SIZE] = BLANK_SLOT
    assert not check_bytes(bytes(buf)).ok


def test_record_in_the_wrong_slot_is_not_ok():
    buf = ring_at(N + 3)
    buf[7 * RECORD_SIZE : 8 * RECORD_SIZE] = encode(N + 8, N)  # belongs in slot 8
    report = check_bytes(bytes(buf))
    assert not report.ok and report.misplaced == 1


def test_check_needs_extents_for_bytes():
    with pytest.raises(TypeError):
        check_ring(b"\0" * 4096)


@needs_e2fsprogs
def test_ring_extents_map_the_file_in_the_image(image):
    extents = ring_extents(image)
    assert sum(length for _, length in extents) == images.RING_BYTES
    with open(image, "rb") as f:
        via_extents = read_ring(f, extents)
    dumped = subprocess.run(
        [images.find_tool("debugfs"), "-R", f"cat {RING_PATH}", str(image)],
        capture_output=True,
        check=True,
    ).stdout
    assert via_extents == dumped  # the physical blocks are the file's contents
    report = check_ring(image)
    assert report.ok and report.records == 0 and report.slots == images.RING_BYTES // 512
