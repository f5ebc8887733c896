"""File-level recovery: browse and download files from a disk image without mounting it.

Django-free.  Reads ext2/3/4, FAT12/16/32, exFAT and NTFS, whole-disk or inside MBR/GPT
partitions, through The Sleuth Kit (pytsk3) over any random-access :class:`ByteSource` --
a plain image file (:class:`FileByteSource`) or a recovery point's reassembled disk.  No root,
no mount, no kernel file-system code touching backup data.

Typical use (web layer, one request)::

    src = as_byte_source(reader)                 # read_at/size or seek/read object
    parts = list_partitions(src)                 # [] -> whole-disk fs, partition=None
    with open_filesystem(src, parts[0].index if parts else None) as fs:
        entries = fs.listdir("/etc")             # list[Entry]
        for chunk in fs.read_file("/etc/hostname"):
            ...
        archive_folder(fs, "/etc", response, fmt="zip")

Paths are absolute POSIX strings; ``.``/``..`` components are refused (:class:`PathNotFound`).
Errors all derive from :class:`FileRecoveryError` (itself an ``engine.errors.EngineError``).

Thread safety: pytsk3 objects are not thread-safe.  A :class:`FileSystem` and the streams it
opened must be used by one thread at a time; open one per request (cheap: a handful of cached
small reads) or guard it with a lock.  Calls are additionally serialised by an internal lock.

Performance: TSK does many small reads; the image adapter fetches 1 MiB aligned blocks from
the source and keeps an LRU of 64 of them (configurable per call), so listing a directory
costs a few block fetches regardless of disk size.
"""

from __future__ import annotations

from engine.fs.archive import ArchiveFormat, ArchiveStats, archive_folder, archive_name
from engine.fs.errors import (
    FileRecoveryError,
    NotADirectory,
    NotAFile,
    PartitionNotFound,
    PathNotFound,
    SourceReadError,
    UnsupportedFilesystem,
)
from engine.fs.source import (
    BytesByteSource,
    ByteSource,
    CountingSource,
    FileByteSource,
    SeekableByteSource,
    as_byte_source,
)
from engine.fs.tsk import (
    DEFAULT_CACHE_BLOCK_SIZE,
    DEFAULT_CACHE_BLOCKS,
    Entry,
    EntryKind,
    FileStream,
    FileSystem,
    Partition,
    list_partitions,
    normalize_path,
    open_filesystem,
)

__all__ = [
    "DEFAULT_CACHE_BLOCKS",
    "DEFAULT_CACHE_BLOCK_SIZE",
    "ArchiveFormat",
    "ArchiveStats",
    "ByteSource",
    "BytesByteSource",
    "CountingSource",
    "Entry",
    "EntryKind",
    "FileByteSource",
    "FileRecoveryError",
    "FileStream",
    "FileSystem",
    "NotADirectory",
    "NotAFile",
    "Partition",
    "PartitionNotFound",
    "PathNotFound",
    "SeekableByteSource",
    "SourceReadError",
    "UnsupportedFilesystem",
    "archive_folder",
    "archive_name",
    "as_byte_source",
    "list_partitions",
    "normalize_path",
    "open_filesystem",
]
