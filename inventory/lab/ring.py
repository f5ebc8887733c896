"""The demo lab's ring: sequence-numbered records written into a file's physical blocks.

A lab VM's "application" is a writer (``inventory.lab.writer``) that keeps appending records to
``/lab/ring.dat`` inside each of the VM's ext4 disk images.  It does not go through the file
system: it looks up the file's physical extents once (``debugfs``) and ``pwrite``s straight into
those bytes of the image, so the file system's metadata never changes and stays valid for
``e2fsck``, while the data keeps moving under any reader -- like a database writing into a
preallocated file.

Format (pure Python, no Django).  The ring file is an array of ``RECORD_SIZE`` (512-byte)
slots; ``N = file size // 512``.  Record ``seq`` always goes to slot ``seq % N``::

    0   8  magic        b"LBRING1\\n"
    8   8  seq          u64 little endian, 0, 1, 2, ...
    16  4  slot         u32, seq % N (where the writer meant to put it)
    20  4  slots        u32, N
    24  8  time_ns      u64, the writer's wall clock (informational)
    32 476 payload      derived from seq (BLAKE2b of seq, repeated)
    508 4  crc32        of bytes 0..507

An unwritten slot holds ``BLANK_SLOT`` (what the lab stages into the image: mkfs.ext4 -d
leaves all-zero blocks as holes, so a zero-filled ring would have no physical blocks) or all
zeros.

A point-in-time copy of a ring whose highest sequence number is ``H`` holds exactly the seqs
``max(0, H-N+1) .. H``, each in its own slot: walking the ring from the slot after ``H``, the
seqs rise by one at every step (one wrap point, at ``H``), possibly preceded by blank slots
before the writer's first lap.  A copy read partly before and partly after the writer moved
on shows a second break in that run (stale slots) -- and a record caught half-written shows a
torn slot.  Either makes ``check_ring`` report ``ok=False``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

RING_PATH = "/lab/ring.dat"
RECORD_SIZE = 512
MAGIC = b"LBRING1\n"
_HEADER = struct.Struct("<8sQIIQ")  # magic, seq, slot, slots, time_ns
_CRC = struct.Struct("<I")
PAYLOAD_SIZE = RECORD_SIZE - _HEADER.size - _CRC.size
BLANK_SLOT = (b"lifeboat ring: unwritten slot\n" * 20)[:RECORD_SIZE]
ZERO_SLOT = bytes(RECORD_SIZE)
MAX_PROBLEMS = 10

Extent = tuple[int, int]  # (byte offset in the image, length in bytes)


class RingError(Exception):
    """The ring file cannot be found or mapped in the image."""


# --------------------------------------------------------------------------- records


def payload(seq: int) -> bytes:
    digest = hashlib.blake2b(seq.to_bytes(8, "little"), digest_size=64).digest()
    return (digest * (PAYLOAD_SIZE // len(digest) + 1))[:PAYLOAD_SIZE]


def encode(seq: int, slots: int, time_ns: int = 0) -> bytes:
    head = _HEADER.pack(MAGIC, seq, seq % slots, slots, time_ns) + payload(seq)
    return head + _CRC.pack(zlib.crc32(head))


@dataclass(frozen=True)
class Record:
    seq: int
    slot: int
    slots: int
    time_ns: int


def decode(raw: bytes) -> Record | None:
    """The record in ``raw`` (one slot), or None when it is not an intact record."""
    if len(raw) != RECORD_SIZE or raw[:8] != MAGIC:
        return None
    (crc,) = _CRC.unpack_from(raw, RECORD_SIZE - _CRC.size)
    if zlib.crc32(raw[: RECORD_SIZE - _CRC.size]) != crc:
        return None
    _, seq, slot, slots, time_ns = _HEADER.unpack_from(raw)
    if raw[_HEADER.size : _HEADER.size + PAYLOAD_SIZE] != payload(seq):
        return None
    return Record(seq, slot, slots, time_ns)


def blank_ring(size: int) -> bytes:
    """Contents of a fresh, unwritten ring file of ``size`` bytes."""
    if size <= 0 or size % RECORD_SIZE:
        raise ValueError(f"ring size must be a positive multiple of {RECORD_SIZE}")
    return BLANK_SLOT * (size // RECORD_SIZE)


# --------------------------------------------------------------------------- extents

_EXTENT_RE = re.compile(r"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?")


def find_tool(name: str) -> str:
    """Path of an e2fsprogs tool (often in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None
    )
    if found is None:
        raise RingError(f"{name} not found; install e2fsprogs")
    return found


def block_size(image: str | os.PathLike[str]) -> int:
    """Block size of the ext2/3/4 file system in ``image``, read from its superblock."""
    with open(image, "rb") as f:
        f.seek(1024)
        sb = f.read(1024)
    if len(sb) < 64 or sb[56:58] != b"\x53\xef":
        raise RingError(f"{image} holds no ext2/3/4 file system")
    (log,) = struct.unpack_from("<I", sb, 24)
    return 1024 << log


def ring_extents(image: str | os.PathLike[str], file_in_fs: str = RING_PATH) -> list[Extent]:
    """Physical byte ranges of ``file_in_fs`` in ``image``, in the file's logical order.

    Parses the EXTENTS of ``debugfs -R "stat FILE"`` (extent-tree blocks are skipped) and
    checks that the extents cover the whole file without holes.
    """
    bs = block_size(image)
    r = subprocess.run(
        [find_tool("debugfs"), "-R", f"stat {file_in_fs}", os.fspath(image)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = r.stdout
    size_m = re.search(r"\bSize: (\d+)", out)
    if r.returncode != 0 or size_m is None:
        why = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RingError(f"{file_in_fs} not found in {image}: {why}")
    size = int(size_m.group(1))
    _, _, tail = out.partition("EXTENTS:")
    if not tail:
        raise RingError(f"{file_in_fs} in {image} has no extent map (not an ext4 extent file)")
    pieces: list[tuple[int, int, int]] = []  # (logical block, physical block, blocks)
    for m in _EXTENT_RE.finditer(tail):
        lstart, lend, pstart, pend = m.groups()
        lfirst, pfirst = int(lstart), int(pstart)
        count = int(lend) - lfirst + 1 if lend else 1
        if pend and int(pend) - pfirst + 1 != count:
            raise RingError(f"cannot parse extent {m.group(0)!r}")
        pieces.append((lfirst, pfirst, count))
    pieces.sort()
    extents: list[Extent] = []
    logical = 0
    for lfirst, pfirst, count in pieces:
        if lfirst != logical:
            raise RingError(f"{file_in_fs} in {image} has a hole at block {logical}")
        off, length = pfirst * bs, count * bs
        if extents and extents[-1][0] + extents[-1][1] == off:
            extents[-1] = (extents[-1][0], extents[-1][1] + length)
        else:
            extents.append((off, length))
        logical += count
    mapped = logical * bs
    if size == 0 or mapped < size:
        raise RingError(
            f"{file_in_fs} in {image} is sparse or empty ({mapped} of {size} bytes mapped)"
        )
    # Trim to the file size, in whole records.
    usable = size - size % RECORD_SIZE
    out_extents: list[Extent] = []
    left = usable
    for off, length in extents:
        take = min(length, left)
        if take:
            out_extents.append((off, take))
        left -= take
    return out_extents


def slot_offsets(extents: Sequence[Extent]) -> list[int]:
    """Byte offset in the image of every slot, in ring order."""
    out: list[int] = []
    for off, length in extents:
        if length % RECORD_SIZE:
            raise RingError(f"extent ({off}, {length}) is not a whole number of records")
        out.extend(range(off, off + length, RECORD_SIZE))
    return out


def read_ring(source: BinaryIO, extents: Sequence[Extent]) -> bytes:
    parts = []
    for off, length in extents:
        source.seek(off)
        data = source.read(length)
        if len(data) != length:
            raise RingError(f"short read at offset {off}: image truncated?")
        parts.append(data)
    return b"".join(parts)


# --------------------------------------------------------------------------- check


@dataclass(frozen=True)
class RingReport:
    ok: bool
    slots: int
    records: int  # intact records
    empty: int  # unwritten slots
    highest_seq: int | None
    lowest_seq: int | None
    gaps: int  # breaks in the run of seqs besides the one wrap point
    torn: int  # slots that are neither an intact record nor unwritten
    misplaced: int  # intact records in a slot other than seq % N
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.records == 0 and self.ok:
            return f"ok: empty ring ({self.slots} slots, nothing written yet)"
        verdict = "ok" if self.ok else "NOT CONSISTENT"
        seqs = f"seq {self.lowest_seq}..{self.highest_seq}" if self.records else "no intact records"
        extra = (
            f", {self.gaps} gap(s), {self.torn} torn, {self.misplaced} misplaced"
            if not self.ok
            else ""
        )
        return f"{verdict}: {self.records}/{self.slots} records, {seqs}{extra}"


def check_bytes(ring: bytes) -> RingReport:
    """Check the contents of a ring file (see the module docstring for the rule)."""
    if not ring or len(ring) % RECORD_SIZE:
        raise ValueError(f"ring length {len(ring)} is not a positive multiple of {RECORD_SIZE}")
    n = len(ring) // RECORD_SIZE
    problems: list[str] = []

    def problem(text: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(text)

    seqs: list[int | None] = []
    empty = torn = misplaced = 0
    for i in range(n):
        raw = ring[i * RECORD_SIZE : (i + 1) * RECORD_SIZE]
        rec = decode(raw)
        if rec is None:
            seqs.append(None)
            if raw == BLANK_SLOT or raw == ZERO_SLOT:
                empty += 1
            else:
                torn += 1
                problem(f"slot {i}: torn or corrupt record")
            continue
        if rec.slots != n or rec.seq % n != i or rec.slot != i:
            misplaced += 1
            problem(f"slot {i}: record seq {rec.seq} belongs in slot {rec.seq % rec.slots}")
            seqs.append(None)
            continue
        seqs.append(rec.seq)
    present = [s for s in seqs if s is not None]
    if not present:
        ok = torn == 0 and misplaced == 0
        return RingReport(ok, n, 0, empty, None, None, 0, torn, misplaced, problems)
    high = max(present)
    start = high % n + 1  # the slot after the newest record holds the oldest one
    gaps = 0
    prev: int | None = None
    for k in range(n):
        i = (start + k) % n
        s = seqs[i]
        raw = ring[i * RECORD_SIZE : (i + 1) * RECORD_SIZE]
        if s is None:
            if prev is not None:
                if raw in (BLANK_SLOT, ZERO_SLOT):
                    gaps += 1
                    problem(f"slot {i}: unwritten slot inside the run of records")
                prev += 1  # a torn slot stands for the record that should be there
            continue
        if prev is not None and s != prev + 1:
            gaps += 1
            problem(f"slot {i}: seq {s} follows seq {prev} (expected {prev + 1})")
        prev = s
    # An unwritten slot is only fine before the writer's first lap: then seq 0 must exist.
    low = min(present)
    if empty and low != 0:
        gaps += 1
        problem(f"{empty} unwritten slot(s) although the writer already lapped the ring")
    ok = gaps == 0 and torn == 0 and misplaced == 0
    return RingReport(ok, n, len(present), empty, high, low, gaps, torn, misplaced, problems)


def check_ring(
    image: str | os.PathLike[str] | BinaryIO | bytes,
    extents: Sequence[Extent] | None = None,
    file_in_fs: str = RING_PATH,
) -> RingReport:
    """Check the ring inside a disk image (a path, an open binary file or the image's bytes).

    ``extents`` default to those of ``file_in_fs`` in ``image`` (which must then be a path);
    pass them when checking a copy read some other way.
    """
    if isinstance(image, str | os.PathLike):
        if extents is None:
            extents = ring_extents(image, file_in_fs)
        with open(image, "rb") as f:
            return check_bytes(read_ring(f, extents))
    if extents is None:
        raise TypeError("extents are needed when the image is not a path")
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        return check_bytes(b"".join(data[off : off + length] for off, length in extents))
    return check_bytes(read_ring(image, extents))
