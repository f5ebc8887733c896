"""File systems inside a disk, read through The Sleuth Kit (pytsk3) over a :class:`ByteSource`.

pytsk3 objects are wrapped here and never leave this module: callers see :class:`Entry`,
:class:`Partition`, :class:`FileSystem` and :class:`FileStream`.

Thread safety: pytsk3/TSK objects are not thread-safe.  Use one :class:`FileSystem` (and the
streams it opened) from one thread at a time -- the web layer opens a fresh one per request,
which is cheap (a few small cached reads).  As a safety net every call into TSK is serialised
by a per-object lock, so concurrent use is slow but not corrupting.
"""

from __future__ import annotations

import io
import stat as statmod
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pytsk3

from engine.fs.errors import (
    FileRecoveryError,
    NotADirectory,
    NotAFile,
    PartitionNotFound,
    PathNotFound,
    SourceReadError,
    UnsupportedFilesystem,
)
from engine.fs.source import ByteSource, as_byte_source

__all__ = [
    "DEFAULT_CACHE_BLOCKS",
    "DEFAULT_CACHE_BLOCK_SIZE",
    "Entry",
    "EntryKind",
    "FileStream",
    "FileSystem",
    "Partition",
    "list_partitions",
    "normalize_path",
    "open_filesystem",
]

EntryKind = Literal["file", "dir", "symlink", "other"]

DEFAULT_CACHE_BLOCK_SIZE = 1 << 20  # 1 MiB, aligned
DEFAULT_CACHE_BLOCKS = 64  # LRU; at most 64 MiB per open disk
DEFAULT_CHUNK_SIZE = 1 << 20

_FS_TYPE_NAMES: dict[int, str] = {
    int(pytsk3.TSK_FS_TYPE_EXT2): "ext2",
    int(pytsk3.TSK_FS_TYPE_EXT3): "ext3",
    int(pytsk3.TSK_FS_TYPE_EXT4): "ext4",
    int(pytsk3.TSK_FS_TYPE_FAT12): "fat12",
    int(pytsk3.TSK_FS_TYPE_FAT16): "fat16",
    int(pytsk3.TSK_FS_TYPE_FAT32): "fat32",
    int(pytsk3.TSK_FS_TYPE_EXFAT): "exfat",
    int(pytsk3.TSK_FS_TYPE_NTFS): "ntfs",
    int(pytsk3.TSK_FS_TYPE_ISO9660): "iso9660",
    int(pytsk3.TSK_FS_TYPE_HFS): "hfs",
    int(pytsk3.TSK_FS_TYPE_FFS1): "ufs1",
    int(pytsk3.TSK_FS_TYPE_FFS1B): "ufs1b",
    int(pytsk3.TSK_FS_TYPE_FFS2): "ufs2",
    int(pytsk3.TSK_FS_TYPE_YAFFS2): "yaffs2",
    int(pytsk3.TSK_FS_TYPE_APFS): "apfs",
}

# pytsk3 raises OSError for TSK failures and RuntimeError when our read callback raised.
_TSK_ERRORS = (OSError, RuntimeError)

# Probed in this order instead of TSK_FS_TYPE_DETECT: TSK's generic detection also tries
# YAFFS2 (a raw-flash file system no VM disk carries), whose probe reads tens of MiB.
_PROBE_ORDER = (
    pytsk3.TSK_FS_TYPE_EXT_DETECT,
    pytsk3.TSK_FS_TYPE_NTFS_DETECT,
    pytsk3.TSK_FS_TYPE_FAT_DETECT,
    pytsk3.TSK_FS_TYPE_EXFAT,
    pytsk3.TSK_FS_TYPE_HFS_DETECT,
    pytsk3.TSK_FS_TYPE_FFS_DETECT,
    pytsk3.TSK_FS_TYPE_ISO9660_DETECT,
)

_META_KIND: dict[int, EntryKind] = {
    int(pytsk3.TSK_FS_META_TYPE_REG): "file",
    int(pytsk3.TSK_FS_META_TYPE_DIR): "dir",
    int(pytsk3.TSK_FS_META_TYPE_LNK): "symlink",
}
_NAME_KIND: dict[int, EntryKind] = {
    int(pytsk3.TSK_FS_NAME_TYPE_REG): "file",
    int(pytsk3.TSK_FS_NAME_TYPE_DIR): "dir",
    int(pytsk3.TSK_FS_NAME_TYPE_LNK): "symlink",
}
_VIRTUAL_META = {int(pytsk3.TSK_FS_META_TYPE_VIRT), int(pytsk3.TSK_FS_META_TYPE_VIRT_DIR)}
_VIRTUAL_NAME = {int(pytsk3.TSK_FS_NAME_TYPE_VIRT), int(pytsk3.TSK_FS_NAME_TYPE_VIRT_DIR)}
_KIND_IFMT: dict[EntryKind, int] = {
    "file": statmod.S_IFREG,
    "dir": statmod.S_IFDIR,
    "symlink": statmod.S_IFLNK,
    "other": 0,
}


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Partition:
    """One allocated partition: ``start``/``length`` in bytes from the start of the disk.

    ``index`` is the position in :func:`list_partitions`' result (0-based) and is what
    :func:`open_filesystem` takes.  ``fs_type`` is e.g. ``"ext4"``, ``"fat32"``, ``"ntfs"``, or
    ``None`` when no supported file system was recognised.  ``scheme`` is ``"mbr"`` or ``"gpt"``.
    """

    index: int
    start: int
    length: int
    description: str
    fs_type: str | None
    scheme: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry.  ``mode`` is POSIX-style (file-type bits | permission bits);
    ``mtime`` is an aware UTC datetime, or ``None`` if the file system has none.
    ``target`` is the link text of a symlink (else ``None``); ``inode`` the TSK metadata
    address.  Names are decoded from UTF-8; bytes that are not valid UTF-8 (possible on ext4)
    become lone surrogates (``surrogateescape``), and such a path still opens."""

    name: str
    path: str
    kind: EntryKind
    size: int
    mtime: datetime | None
    mode: int
    target: str | None = None
    inode: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


# --------------------------------------------------------------------------- paths


def normalize_path(path: str) -> tuple[str, list[str]]:
    """Canonical absolute POSIX path and its components.

    Must start with ``/``; repeated and trailing slashes are dropped.  Any ``.`` or ``..``
    component, a NUL, or a relative path raises :class:`PathNotFound` (nothing can escape the
    file system, and there is no cwd).
    """
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise PathNotFound(str(path))
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise PathNotFound(path)
    return "/" + "/".join(parts), parts


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


def _decode(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "surrogateescape")
    return str(raw)


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- image adapter


class _CachedImage(pytsk3.Img_Info):  # type: ignore[misc]
    """pytsk3 image whose reads go to a :class:`ByteSource` through an aligned-block LRU.

    TSK issues many small reads (superblocks, inodes, directory blocks); each one here fetches
    at most one ``block_size`` aligned block from the source, kept in an LRU of
    ``max_blocks``.  Reads of at least a whole block bypass the cache.
    """

    def __init__(self, source: ByteSource, block_size: int, max_blocks: int) -> None:
        if block_size <= 0 or max_blocks <= 0:
            raise ValueError("cache block size and count must be positive")
        self._source = source
        self._size = int(source.size)
        self._bs = block_size
        self._max = max_blocks
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.last_error: BaseException | None = None
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    # pytsk3 callbacks ------------------------------------------------------------

    def get_size(self) -> int:
        return self._size

    def close(self) -> None:
        with self._lock:
            self._blocks.clear()

    def read(self, offset: int, size: int) -> bytes:
        try:
            return self._read(int(offset), int(size))
        except BaseException as exc:  # TSK only sees a failed read; keep the cause
            self.last_error = exc
            raise

    # ---------------------------------------------------------------------------

    def _read(self, offset: int, size: int) -> bytes:
        if offset >= self._size or size <= 0:
            return b""
        size = min(size, self._size - offset)
        bs = self._bs
        if size >= bs:
            return self._fetch(offset, size)
        first, last = offset // bs, (offset + size - 1) // bs
        if first == last:
            blk = self._block(first)
            return blk[offset - first * bs : offset - first * bs + size]
        parts = [self._block(i) for i in range(first, last + 1)]
        joined = b"".join(parts)
        start = offset - first * bs
        return joined[start : start + size]

    def _fetch(self, offset: int, size: int) -> bytes:
        data = self._source.read_at(offset, size)
        if len(data) != size:
            raise SourceReadError(
                f"short read from source at {offset}: wanted {size}, got {len(data)}"
            )
        return data

    def _block(self, idx: int) -> bytes:
        with self._lock:
            blk = self._blocks.get(idx)
            if blk is not None:
                self._blocks.move_to_end(idx)
                return blk
        start = idx * self._bs
        blk = self._fetch(start, min(self._bs, self._size - start))
        with self._lock:
            self._blocks[idx] = blk
            while len(self._blocks) > self._max:
                self._blocks.popitem(last=False)
        return blk

    def source_error(self) -> BaseException | None:
        exc, self.last_error = self.last_error, None
        return exc


def _image(source: ByteSource | Any, block_size: int, blocks: int) -> _CachedImage:
    return _CachedImage(as_byte_source(source), block_size, blocks)


def _raise_source_error(img: _CachedImage, what: str) -> None:
    exc = img.source_error()
    if exc is not None:
        if isinstance(exc, FileRecoveryError):
            raise exc
        raise SourceReadError(f"{what}: reading the disk failed: {exc}") from exc


# --------------------------------------------------------------------------- partitions


def _volume_partitions(img: _CachedImage) -> list[Partition]:
    try:
        vol = pytsk3.Volume_Info(img)
    except _TSK_ERRORS:
        _raise_source_error(img, "partition table")
        return []
    vstype = int(vol.info.vstype)
    scheme = {
        int(pytsk3.TSK_VS_TYPE_DOS): "mbr",
        int(pytsk3.TSK_VS_TYPE_GPT): "gpt",
    }.get(vstype, str(vol.info.vstype).removeprefix("TSK_VS_TYPE_").lower())
    sector = int(vol.info.block_size)
    out: list[Partition] = []
    for part in vol:
        if int(part.flags) != int(pytsk3.TSK_VS_PART_FLAG_ALLOC):
            continue
        start = int(part.start) * sector
        out.append(
            Partition(
                index=len(out),
                start=start,
                length=int(part.len) * sector,
                description=_decode(part.desc).strip() or f"{scheme} partition {len(out) + 1}",
                fs_type=_probe_fs_type(img, start),
                scheme=scheme,
            )
        )
    return out


def _open_fs_info(img: _CachedImage, offset: int) -> Any:
    """pytsk3.FS_Info of the first file system type in _PROBE_ORDER found at ``offset``."""
    last: Exception | None = None
    for fstype in _PROBE_ORDER:
        try:
            return pytsk3.FS_Info(img, offset, fstype)
        except _TSK_ERRORS as exc:
            _raise_source_error(img, f"file system at {offset}")
            last = exc
    raise last or OSError("no file system")


def _probe_fs_type(img: _CachedImage, offset: int) -> str | None:
    try:
        fs = _open_fs_info(img, offset)
    except _TSK_ERRORS:
        return None
    return _FS_TYPE_NAMES.get(int(fs.info.ftype), str(fs.info.ftype))


def list_partitions(
    source: ByteSource,
    *,
    cache_block_size: int = DEFAULT_CACHE_BLOCK_SIZE,
    cache_blocks: int = DEFAULT_CACHE_BLOCKS,
) -> list[Partition]:
    """Allocated partitions of an MBR (including logical) or GPT disk, in table order.

    A disk without a partition table (a whole-disk file system, or garbage) gives ``[]``;
    open it with ``partition=None``.
    """
    img = _image(source, cache_block_size, cache_blocks)
    try:
        return _volume_partitions(img)
    finally:
        img.close()


# --------------------------------------------------------------------------- file system


def open_filesystem(
    source: ByteSource,
    partition: int | None = None,
    *,
    cache_block_size: int = DEFAULT_CACHE_BLOCK_SIZE,
    cache_blocks: int = DEFAULT_CACHE_BLOCKS,
    show_metadata: bool = False,
) -> FileSystem:
    """Open the file system of partition ``partition`` (an index from
    :func:`list_partitions`), or the whole disk when ``partition`` is ``None``.

    Raises :class:`PartitionNotFound` for a bad index, :class:`UnsupportedFilesystem` when
    nothing TSK understands is there, :class:`SourceReadError` when the source fails.
    ``show_metadata`` lists NTFS's ``$MFT``, ``$Bitmap``, ... in the root (hidden by default;
    they stay reachable by path either way).
    """
    img = _image(source, cache_block_size, cache_blocks)
    offset = 0
    part: Partition | None = None
    if partition is not None:
        parts = _volume_partitions(img)
        if not parts:
            raise PartitionNotFound(f"partition {partition}: the disk has no partition table")
        if not 0 <= partition < len(parts):
            raise PartitionNotFound(
                f"partition {partition}: the disk has {len(parts)} partition(s), "
                f"indexes 0..{len(parts) - 1}"
            )
        part = parts[partition]
        offset = part.start
    try:
        info = _open_fs_info(img, offset)
    except _TSK_ERRORS as exc:
        where = "the whole disk" if part is None else f"partition {partition} ({part.description})"
        hint = ""
        if part is None and _volume_partitions(img):
            hint = "; the disk has a partition table, open one of its partitions instead"
        raise UnsupportedFilesystem(
            f"no supported file system (ext2/3/4, FAT, exFAT, NTFS, ...) on {where}{hint}"
        ) from exc
    return FileSystem(img, info, partition=part, show_metadata=show_metadata)


class FileSystem:
    """A read-only file system inside a disk.  See the module doc for thread safety."""

    def __init__(
        self,
        img: _CachedImage,
        info: Any,
        partition: Partition | None,
        *,
        show_metadata: bool = False,
    ) -> None:
        self._img = img
        self._fs = info
        self._lock = threading.RLock()
        self.partition = partition
        self.fs_type: str = _FS_TYPE_NAMES.get(int(info.info.ftype), str(info.info.ftype))
        self.block_size: int = int(info.info.block_size)
        self._root_inum = int(info.info.root_inum)
        self._closed = False
        self.show_metadata = show_metadata

    # lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._fs = None
            self._img.close()

    def __enter__(self) -> FileSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _tsk(self) -> Any:
        if self._closed or self._fs is None:
            raise FileRecoveryError("file system is closed")
        return self._fs

    # lookup --------------------------------------------------------------------

    def _open(self, path: str) -> tuple[str, Any]:
        """(canonical path, pytsk3 File) or PathNotFound."""
        canon, parts = normalize_path(path)
        with self._lock:
            fs = self._tsk()
            try:
                if not parts:
                    f = fs.open_meta(inode=self._root_inum)
                elif all(_encodable(p) for p in parts):
                    f = fs.open(canon)
                else:  # names that are not valid UTF-8 on disk: match raw bytes
                    f = self._open_by_components(parts)
            except _TSK_ERRORS as exc:
                _raise_source_error(self._img, path)
                raise PathNotFound(path) from exc
            meta = f.info.meta
            if meta is None or int(meta.type) in _VIRTUAL_META:
                raise PathNotFound(path)
        return canon, f

    def _open_by_components(self, parts: list[str]) -> Any:
        fs = self._tsk()
        inum = self._root_inum
        for part in parts:
            want = part.encode("utf-8", "surrogateescape")
            for item in fs.open_dir(inode=inum):
                name = item.info.name
                if name.name == want and int(name.flags) & int(pytsk3.TSK_FS_NAME_FLAG_ALLOC):
                    inum = int(name.meta_addr)
                    break
            else:
                raise OSError(f"{part!r} not found")
        return fs.open_meta(inode=inum)

    def _entry(self, name: str, path: str, f: Any) -> Entry:
        meta = f.info.meta
        kind: EntryKind
        if meta is None:
            kind = _NAME_KIND.get(int(f.info.name.type), "other")
            return Entry(name, path, kind, 0, None, _KIND_IFMT[kind])
        kind = _META_KIND.get(int(meta.type), "other")
        mtime: datetime | None = None
        secs = int(meta.mtime or 0)
        if secs:
            try:
                mtime = datetime.fromtimestamp(secs, UTC).replace(
                    microsecond=int(meta.mtime_nano or 0) // 1000 % 1_000_000
                )
            except (OverflowError, OSError, ValueError):
                mtime = None
        target: str | None = None
        if kind == "symlink":
            target = self._link_target(f)
        mode = _KIND_IFMT[kind] | (int(meta.mode) & 0o7777)
        size = int(meta.size)
        return Entry(name, path, kind, size, mtime, mode, target, int(meta.addr))

    def _link_target(self, f: Any) -> str:
        link = f.info.meta.link
        if link:
            return _decode(link)
        size = int(f.info.meta.size)
        if 0 < size <= 4096:
            try:
                return _decode(f.read_random(0, size))
            except _TSK_ERRORS:
                _raise_source_error(self._img, "symlink")
        return ""

    # public API ------------------------------------------------------------------

    def stat(self, path: str) -> Entry:
        """The entry at ``path`` (symlinks are not followed)."""
        with self._lock:
            canon, f = self._open(path)
            name = canon.rsplit("/", 1)[-1]
            return self._entry(name, canon, f)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except PathNotFound:
            return False
        return True

    def readlink(self, path: str) -> str:
        e = self.stat(path)
        if e.kind != "symlink":
            raise FileRecoveryError(f"not a symlink: {path!r}")
        return e.target or ""

    def listdir(self, path: str = "/") -> list[Entry]:
        """Entries of a directory: no ``.``/``..``, no deleted or TSK-virtual entries
        (``$OrphanFiles``, FAT's ``$MBR``/``$FAT1``); directories first, then by name,
        case-insensitively."""
        with self._lock:
            canon, f = self._open(path)
            meta = f.info.meta
            kind = _META_KIND.get(int(meta.type), "other")
            if kind != "dir":
                raise NotADirectory(path, kind)
            try:
                directory = self._tsk().open_dir(inode=int(meta.addr))
            except _TSK_ERRORS as exc:
                _raise_source_error(self._img, path)
                raise FileRecoveryError(f"cannot read directory {path!r}: {exc}") from exc
            out: list[Entry] = []
            seen: set[str] = set()
            for item in directory:
                nm = item.info.name
                if nm is None or not int(nm.flags) & int(pytsk3.TSK_FS_NAME_FLAG_ALLOC):
                    continue
                name = _decode(nm.name)
                if name in ("", ".", "..") or "/" in name or name in seen:
                    continue
                if int(nm.type) in _VIRTUAL_NAME:
                    continue
                m = item.info.meta
                if m is not None and int(m.type) in _VIRTUAL_META:
                    continue
                if self._hidden(name, int(nm.meta_addr), m):
                    continue
                seen.add(name)
                out.append(self._entry(name, _join(canon, name), item))
            _raise_source_error(self._img, path)
        out.sort(key=lambda e: (e.kind != "dir", e.name.casefold(), e.name))
        return out

    def _hidden(self, name: str, addr: int, meta: Any) -> bool:
        """File-system bookkeeping that is not user data: FAT's volume-label pseudo entry
        (TSK names it "<label> (Volume Label Entry)") and, unless ``show_metadata``, NTFS's
        reserved MFT entries 0-15 (``$MFT``, ``$Bitmap``, ``$Extend``, ...)."""
        if self.fs_type.startswith("fat") and name.endswith(" (Volume Label Entry)"):
            return meta is None or int(meta.size) == 0
        if self.fs_type == "ntfs" and not self.show_metadata:
            return 0 <= addr < 16 and name.startswith("$")
        return False

    def walk(self, path: str = "/") -> Iterator[tuple[str, list[Entry], list[Entry]]]:
        """Like :func:`os.walk` (top-down, symlinks not followed): yields
        ``(dirpath, dirs, nondirs)``.  Removing items from ``dirs`` prunes the walk.
        Directory cycles in a damaged file system are visited once."""
        top = self.stat(path)
        if top.kind != "dir":
            raise NotADirectory(path, top.kind)
        seen: set[int] = set()
        stack = [top.path]
        while stack:
            current = stack.pop()
            entries = self.listdir(current)
            dirs = [e for e in entries if e.kind == "dir"]
            files = [e for e in entries if e.kind != "dir"]
            yield current, dirs, files
            for d in reversed(dirs):
                if d.inode and d.inode in seen:
                    continue
                seen.add(d.inode)
                stack.append(d.path)

    def open_file(self, path: str) -> FileStream:
        """A seekable binary stream over a regular file (holes read as zeros)."""
        with self._lock:
            canon, f = self._open(path)
            kind = _META_KIND.get(int(f.info.meta.type), "other")
            if kind != "file":
                raise NotAFile(path, kind)
            return FileStream(self, f, int(f.info.meta.size), canon)

    def read_file(self, path: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The bytes of a regular file in chunks of at most ``chunk_size``.

        The path is checked eagerly: :class:`PathNotFound`/:class:`NotAFile` are raised by
        this call, not by the first ``next()``.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        stream = self.open_file(path)
        return _chunks(stream, chunk_size)

    def _read_random(self, f: Any, offset: int, length: int) -> bytes:
        with self._lock:
            self._tsk()
            try:
                data = f.read_random(offset, length)
            except _TSK_ERRORS as exc:
                _raise_source_error(self._img, "file")
                raise FileRecoveryError(f"cannot read file data: {exc}") from exc
            _raise_source_error(self._img, "file")
        return bytes(data)


def _chunks(stream: FileStream, chunk_size: int) -> Iterator[bytes]:
    with stream:
        while True:
            b = stream.read(chunk_size)
            if not b:
                return
            yield b


class FileStream(io.RawIOBase):
    """Readable, seekable stream over one file's data.  ``read(n)`` returns exactly ``n``
    bytes unless the end of file is reached (tarfile and friends rely on that)."""

    _MAX_TSK_READ = 1 << 20

    def __init__(self, fs: FileSystem, f: Any, size: int, path: str) -> None:
        super().__init__()
        self._fs = fs
        self._f = f
        self.size = size
        self.path = path
        self.name = path
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        got = 0
        while got < want:
            n = min(want - got, self._MAX_TSK_READ)
            data = self._fs._read_random(self._f, self._pos, n)
            if not data:
                raise SourceReadError(
                    f"{self.path}: file data ended at {self._pos} of {self.size} bytes"
                )
            data = data[:n]
            view[got : got + len(data)] = data
            got += len(data)
            self._pos += len(data)
        return got

    def readall(self) -> bytes:
        return self.read(max(0, self.size - self._pos)) or b""

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        buf = bytearray(min(size, max(0, self.size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])
