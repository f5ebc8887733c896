"""What an incremental backup sees of its new data, for the ransomware signal.

Data encrypted by malware neither compresses nor repeats, so an incremental whose new chunks
barely compress and sit near 8 bits of entropy per byte is unlike a VM's usual churn (logs,
packages, databases). Each new chunk of an incremental is judged whole by zstd level 1 (the
bytes left after compression, at most the chunk's size, are its "incompressible" bytes), and
its entropy is estimated on a window: the Shannon entropy of the byte histogram of
ENTROPY_BYTES starting at the chunk's first non-zero block (a chunk holding a small file and
zeros is judged by the file). Full backups are not judged: every chunk is new there, and the
signal compares incrementals only.
"""

from __future__ import annotations

import math
import threading
from collections import Counter

import zstandard

ENTROPY_BYTES = 4 << 10
# A compressor is not safe to share between threads; backups judge chunks on a pool.
_local = threading.local()


def entropy(sample: bytes) -> float:
    """Shannon entropy of the sample's bytes, in bits per byte (0..8)."""
    n = len(sample)
    if not n:
        return 0.0
    return -sum(c / n * math.log2(c / n) for c in Counter(sample).values())


def window(data: bytes) -> bytes:
    """ENTROPY_BYTES of `data` from the block holding its first non-zero byte."""
    start = len(data) - len(data.lstrip(b"\0"))
    start -= start % ENTROPY_BYTES
    return data[start : start + ENTROPY_BYTES]


def compressed_size(data: bytes) -> int:
    """Bytes left of `data` after zstd-1, at most its size."""
    zstd = getattr(_local, "zstd", None)
    if zstd is None:
        zstd = _local.zstd = zstandard.ZstdCompressor(level=1)
    return min(len(data), len(zstd.compress(data)))


def judge(data: bytes) -> tuple[int, float]:
    """(incompressible bytes, entropy of its window in bits per byte) of a new chunk."""
    return compressed_size(data), entropy(window(data))
