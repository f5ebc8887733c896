"""Random-access byte sources that file-level recovery reads a disk through.

A :class:`ByteSource` is the whole contract between this package and wherever the disk
bytes live (a plain image file, a recovery point reassembled from the chunk store, ...):

* ``size`` -- the disk size in bytes (fixed for the object's lifetime);
* ``read_at(offset, length)`` -- return ``length`` bytes starting at ``offset``.  A read that
  runs past ``size`` returns only the bytes up to ``size`` (``b""`` at or past the end).  It
  must not move any shared cursor, i.e. concurrent ``read_at`` calls are allowed to overlap.
  Failures are raised as any exception; they surface as :class:`SourceReadError`.

:func:`as_byte_source` adapts a file-like ``read``/``seek`` object (or one that already has
``read_at``) to this protocol.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ByteSource",
    "BytesByteSource",
    "CountingSource",
    "FileByteSource",
    "SeekableByteSource",
    "as_byte_source",
]


@runtime_checkable
class ByteSource(Protocol):
    """A fixed-size, random-access, read-only run of bytes (a virtual disk)."""

    @property
    def size(self) -> int:
        """Total size in bytes."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; short only at the end of the source."""
        ...


def _clamp(offset: int, length: int, size: int) -> int:
    if offset < 0 or length < 0:
        raise ValueError(f"negative offset or length: {offset}, {length}")
    return max(0, min(length, size - offset))


class FileByteSource:
    """A plain image file, read with ``os.pread`` (thread-safe, no shared cursor)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        n = _clamp(offset, length, self._size)
        parts: list[bytes] = []
        while n > 0:
            b = os.pread(self._fd, n, offset)
            if not b:
                break
            parts.append(b)
            offset += len(b)
            n -= len(b)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class BytesByteSource:
    """An in-memory disk (small images, tests)."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        n = _clamp(offset, length, len(self._data))
        return self._data[offset : offset + n]


class SeekableByteSource:
    """Adapts a binary file-like object with ``seek``/``read`` (one cursor, so a lock)."""

    def __init__(self, fileobj: Any, size: int | None = None) -> None:
        self._f = fileobj
        self._lock = threading.Lock()
        if size is None:
            size = getattr(fileobj, "size", None)
        if size is None:
            with self._lock:
                size = int(fileobj.seek(0, os.SEEK_END))
        self._size = int(size)

    @property
    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        n = _clamp(offset, length, self._size)
        if n == 0:
            return b""
        with self._lock:
            self._f.seek(offset)
            parts: list[bytes] = []
            while n > 0:
                b = self._f.read(n)
                if not b:
                    break
                parts.append(bytes(b))
                n -= len(b)
        return b"".join(parts)


class CountingSource:
    """Wraps a source and counts what was fetched from it (``bytes_read``, ``reads``)."""

    def __init__(self, inner: ByteSource) -> None:
        self.inner = inner
        self.bytes_read = 0
        self.reads = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.inner.size

    def read_at(self, offset: int, length: int) -> bytes:
        data = self.inner.read_at(offset, length)
        with self._lock:
            self.bytes_read += len(data)
            self.reads += 1
        return data

    def reset(self) -> None:
        with self._lock:
            self.bytes_read = 0
            self.reads = 0


def as_byte_source(obj: Any) -> ByteSource:
    """``obj`` itself if it has ``read_at`` and ``size``; a path opens a
    :class:`FileByteSource`; a ``seek``/``read`` object is wrapped in
    :class:`SeekableByteSource` (size from its ``size`` attribute or by seeking to the end)."""
    if isinstance(obj, str | os.PathLike):
        return FileByteSource(obj)
    if hasattr(obj, "read_at") and hasattr(obj, "size") and not callable(obj.size):
        return obj  # type: ignore[no-any-return]
    if hasattr(obj, "seek") and hasattr(obj, "read"):
        return SeekableByteSource(obj)
    raise TypeError(f"not a byte source: {type(obj).__name__}")
