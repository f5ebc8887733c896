"""Stream a folder of a :class:`FileSystem` as a zip or tar archive to a binary stream.

Both formats write strictly forward, so ``out`` may be unseekable (an HTTP response, a pipe):

* ``tar`` -- :mod:`tarfile` in stream mode ``w|`` (PAX format: UTF-8 names, any size,
  symlinks kept as symlinks).  Uncompressed, so throughput is bounded by the disk reads.
* ``zip`` -- :mod:`zipfile` writes local headers followed by data descriptors when ``out``
  cannot seek; entries are DEFLATE-compressed, Zip64 is used when needed, symlinks are stored
  Info-ZIP style (mode ``S_IFLNK``, link text as content).  Opens natively on Windows.

Memory stays bounded (one chunk at a time).  Device nodes, FIFOs and sockets are skipped.
An archive that fails part-way is left unfinished -- a zip without its central directory, a
tar without its end-of-archive blocks -- so it can never be taken for a whole one.
"""

from __future__ import annotations

import stat as statmod
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal

from engine.fs.errors import NotADirectory
from engine.fs.tsk import Entry, FileSystem

__all__ = ["ArchiveFormat", "ArchiveStats", "archive_folder", "archive_name"]

ArchiveFormat = Literal["zip", "tar"]

_CHUNK = 1 << 20
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(slots=True)
class ArchiveStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    skipped: int = 0
    bytes: int = 0


def archive_name(path: str, fmt: ArchiveFormat) -> str:
    """A download file name for the folder, e.g. ``"etc.zip"``; ``"/"`` gives ``"root.zip"``."""
    base = path.rstrip("/").rsplit("/", 1)[-1] or "root"
    return f"{base}.{fmt}"


def archive_folder(
    fs: FileSystem,
    path: str,
    out: BinaryIO,
    fmt: ArchiveFormat = "zip",
    *,
    arcroot: str | None = None,
) -> ArchiveStats:
    """Write the folder ``path`` (recursively) to ``out`` as ``fmt``.

    Members are named ``<arcroot>/<relative path>``; ``arcroot`` defaults to the folder's
    name (``"root"`` for ``/``); pass ``""`` for no top-level folder.  ``out`` is not closed.
    """
    top = fs.stat(path)
    if top.kind != "dir":
        raise NotADirectory(path, top.kind)
    if arcroot is None:
        arcroot = archive_name(top.path, fmt).rsplit(".", 1)[0]
    arcroot = arcroot.strip("/")
    if fmt == "tar":
        return _tar(fs, top, out, arcroot)
    if fmt == "zip":
        return _zip(fs, top, out, arcroot)
    raise ValueError(f"unknown archive format {fmt!r} (zip or tar)")


def _arcname(top: Entry, arcroot: str, path: str) -> str:
    rel = path[len(top.path) :].strip("/") if top.path != "/" else path.strip("/")
    return "/".join(p for p in (arcroot, rel) if p)


def _tar(fs: FileSystem, top: Entry, out: BinaryIO, arcroot: str) -> ArchiveStats:
    stats = ArchiveStats()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirs, files in fs.walk(top.path):
            here = fs.stat(dirpath) if dirpath != top.path else top
            name = _arcname(top, arcroot, dirpath)
            if name:
                tar.addfile(_tarinfo(here, name, tarfile.DIRTYPE))
                stats.dirs += 1
            del dirs  # walk lists them again as dirpath
            for e in files:
                member = _arcname(top, arcroot, e.path)
                if e.kind == "file":
                    ti = _tarinfo(e, member, tarfile.REGTYPE)
                    ti.size = e.size
                    with fs.open_file(e.path) as stream:
                        tar.addfile(ti, stream)
                    stats.files += 1
                    stats.bytes += e.size
                elif e.kind == "symlink":
                    ti = _tarinfo(e, member, tarfile.SYMTYPE)
                    ti.linkname = e.target or ""
                    tar.addfile(ti)
                    stats.symlinks += 1
                else:
                    stats.skipped += 1
    return stats


def _tarinfo(e: Entry, name: str, type_: bytes) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = statmod.S_IMODE(e.mode) or (0o755 if type_ == tarfile.DIRTYPE else 0o644)
    ti.mtime = int(e.mtime.timestamp()) if e.mtime else 0
    return ti


class _CutOnError:
    """``out`` as zipfile writes to it, until a failure cuts it off.

    zipfile finishes an archive as its context managers unwind, exception or not: the open
    member's data descriptor, then the central directory. Written after a failure, those
    would make a cut-short archive read as whole (a short member, the rest missing). Once
    cut, writes are dropped, so a failed archive has no central directory and no zip reader
    opens it.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.cut = False

    @contextmanager
    def cut_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.cut = True
            raise

    def write(self, data: bytes, /) -> int:
        return len(data) if self.cut else self._out.write(data)

    def flush(self) -> None:
        if not self.cut:
            self._out.flush()

    def tell(self) -> int:
        return self._out.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._out.seek(offset, whence)

    def close(self) -> None:
        pass  # ``out`` is the caller's to close


def _zip(fs: FileSystem, top: Entry, out: BinaryIO, arcroot: str) -> ArchiveStats:
    stats = ArchiveStats()
    sink = _CutOnError(out)
    # Each ``cut_on_error`` sits inside the writer it guards, so it cuts before that writer
    # closes.
    with (
        zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf,
        sink.cut_on_error(),
    ):
        for dirpath, _dirs, files in fs.walk(top.path):
            here = fs.stat(dirpath) if dirpath != top.path else top
            name = _arcname(top, arcroot, dirpath)
            if name:
                zi = _zipinfo(here, name + "/", statmod.S_IFDIR)
                zi.external_attr |= 0x10  # MS-DOS directory flag
                zi.compress_type = zipfile.ZIP_STORED
                zf.writestr(zi, b"")
                stats.dirs += 1
            for e in files:
                member = _arcname(top, arcroot, e.path)
                if e.kind == "file":
                    zi = _zipinfo(e, member, statmod.S_IFREG)
                    zi.compress_type = zipfile.ZIP_DEFLATED
                    zi.file_size = e.size
                    with (
                        fs.open_file(e.path) as stream,
                        zf.open(zi, "w") as w,
                        sink.cut_on_error(),
                    ):
                        while chunk := stream.read(_CHUNK):
                            w.write(chunk)
                    stats.files += 1
                    stats.bytes += e.size
                elif e.kind == "symlink":
                    zi = _zipinfo(e, member, statmod.S_IFLNK)
                    zi.compress_type = zipfile.ZIP_STORED
                    zf.writestr(zi, (e.target or "").encode("utf-8", "surrogateescape"))
                    stats.symlinks += 1
                else:
                    stats.skipped += 1
    return stats


def _zip_safe(name: str) -> str:
    # zip names are UTF-8; bytes that were not valid UTF-8 on disk become U+FFFD
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _zipinfo(e: Entry, name: str, ifmt: int) -> zipfile.ZipInfo:
    if e.mtime is not None and e.mtime.year >= 1980:
        dt = e.mtime.timetuple()[:6]
    else:
        dt = _ZIP_EPOCH
    zi = zipfile.ZipInfo(_zip_safe(name), date_time=dt)
    perm = statmod.S_IMODE(e.mode) or (0o755 if ifmt == statmod.S_IFDIR else 0o644)
    zi.external_attr = (ifmt | perm) << 16
    zi.create_system = 3  # Unix, so the mode bits are honoured
    return zi
