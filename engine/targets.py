"""Restore targets held open, so a path checked once cannot be redirected before the write.

A caller that validated a restore target earlier (the web request) opens it again here when
the bytes are written: the directory by walking down from its allowed root one component at a
time without following symlinks, the file a restore replaces without following a symlink.
The restore then creates its temp file relative to that directory and puts it in place with
exclusive semantics, so a name taken meanwhile is never overwritten.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import TargetChanged, TargetUnwritable

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_PATH: the file is only identified, never read, so a FIFO swapped in for a disk file
# cannot hang the open, and with O_NOFOLLOW a symlink is opened as itself, not followed.
_FILE_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1


@dataclass(frozen=True)
class RestoreTarget:
    """Where one disk is restored: the file `name` inside the open directory `dir_fd`.

    `replaces` is an open descriptor of the existing file the restore replaces (replace
    disks, see `open_target_file`); the restore refuses if the name no longer holds that very
    file. Without it the name must stay free until the restored file takes it. The caller
    owns and closes both descriptors; `path` is only shown in messages and results.
    """

    dir_fd: int
    name: str
    replaces: int | None = None
    path: str = ""
    # "raw" (a sparse image, as restored) or "qcow2" (converted before it is put in place, for
    # hypervisors whose changed-block tracking needs qcow2).
    format: str = "raw"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"not a file name: {self.name!r}")
        if self.format not in FORMATS:
            raise ValueError(f"not a restore format: {self.format!r}")

    @property
    def shown(self) -> str:
        return self.path or self.name


def open_directory(path: str, roots: Sequence[str]) -> int:
    """Open directory `path` (absolute, symlinks resolved when it was checked) for a restore.

    Walks down from the root in `roots` that holds `path`, one component at a time, never
    following a symlink: a directory on the way that became a symlink (or a file) since the
    check raises TargetChanged, so whatever is written relative to the returned descriptor
    stays inside the root. The caller closes the descriptor.
    """
    for root in roots:
        real = os.path.realpath(root)
        if path == real or path.startswith(real.rstrip(os.sep) + os.sep):
            parts = [p for p in path[len(real) :].split(os.sep) if p]
            if any(p in (".", "..") for p in parts):
                raise TargetChanged(f"{path} is not a resolved path")
            return _walk(real, parts)
    raise TargetChanged(f"{path} is no longer inside the allowed roots ({', '.join(roots)})")


def _walk(root: str, parts: list[str]) -> int:
    fd = _open_dir(None, root, root)
    shown = root
    try:
        for part in parts:
            shown = os.path.join(shown, part)
            child = _open_dir(fd, part, shown)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_dir(parent: int | None, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError as e:
        raise TargetChanged(f"{shown} no longer exists") from e
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise TargetChanged(f"{shown} is {_kind_of(parent, name)}, not a directory") from e
        raise TargetUnwritable(f"cannot open {shown}: {e.strerror}") from e


def _kind_of(parent: int | None, name: str) -> str:
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return "gone"
    return "a symbolic link" if stat.S_ISLNK(mode) else "a file"


def open_target_file(dir_fd: int, name: str, shown: str) -> int:
    """Hold on to the existing regular file a restore will replace, never through a symlink
    (TargetChanged otherwise). Pass it as `RestoreTarget.replaces`."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError as e:
        raise TargetChanged(f"{shown} no longer exists") from e
    except OSError as e:
        raise TargetUnwritable(f"cannot open {shown}: {e.strerror}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
        raise TargetChanged(f"{shown} is {kind}")
    return fd


def check_unchanged(target: RestoreTarget) -> None:
    """TargetChanged unless the name still holds what the caller expects: nothing, or the
    very file `replaces` refers to (not a symlink, not a file put there since)."""
    try:
        now = os.stat(target.name, dir_fd=target.dir_fd, follow_symlinks=False)
    except FileNotFoundError as e:
        if target.replaces is None:
            return
        raise TargetChanged(f"{target.shown} was removed") from e
    if target.replaces is None:
        raise TargetChanged(f"{target.shown} already exists")
    was = os.fstat(target.replaces)
    if (now.st_dev, now.st_ino) != (was.st_dev, was.st_ino):
        raise TargetChanged(f"{target.shown} was replaced by another file")


def create_temp(target: RestoreTarget, temp_name: str) -> int:
    """Create the hidden temp file beside the target, exclusively, in the opened directory."""
    try:
        return os.open(temp_name, _TEMP_FLAGS, 0o600, dir_fd=target.dir_fd)
    except OSError as e:
        raise TargetUnwritable(
            f"cannot create {temp_name} beside {target.shown}: {e.strerror}"
        ) from e


FORMATS = ("raw", "qcow2")


def convert_to_qcow2(dir_fd: int, raw_name: str, qcow2_name: str) -> int:
    """Convert the restored raw temp file into a new qcow2 temp file beside it (both inside
    the opened directory: qemu-img is given /proc/<pid>/fd paths, so no symlink on the way is
    followed); return the new file's descriptor, synced. Zeros stay unallocated."""
    here = f"/proc/{os.getpid()}/fd/{dir_fd}"  # the directory this process holds open
    fd = create_temp(RestoreTarget(dir_fd, qcow2_name), qcow2_name)
    try:
        done = subprocess.run(
            [
                "qemu-img",
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                f"{here}/{raw_name}",
                f"{here}/{qcow2_name}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise TargetUnwritable(
                f"qemu-img could not write {qcow2_name} as qcow2: {done.stderr.strip()[-400:]}"
            )
        os.fsync(fd)
    except FileNotFoundError as e:
        os.close(fd)
        raise TargetUnwritable("qemu-img is not installed (Debian package qemu-utils)") from e
    except BaseException:
        os.close(fd)
        raise
    return fd


def put_in_place(target: RestoreTarget, temp_name: str) -> None:
    """Rename the finished temp file to the target's name: over the file it replaces, or
    only if the name is still free."""
    try:
        if target.replaces is None:
            _rename_noreplace(target.dir_fd, temp_name, target.name)
        else:
            os.replace(temp_name, target.name, src_dir_fd=target.dir_fd, dst_dir_fd=target.dir_fd)
    except FileExistsError as e:
        raise TargetChanged(f"{target.shown} appeared while it was being restored") from e
    except OSError as e:
        raise TargetUnwritable(f"cannot put {target.shown} in place: {e.strerror}") from e


def _load_renameat2() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _rename_noreplace(dir_fd: int, src: str, dst: str) -> None:
    """Rename src to dst inside dir_fd; FileExistsError if dst exists, which stays untouched."""
    if _renameat2 is not None:
        if _renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), dst)
    # The kernel or file system lacks renameat2: a hard link fails on an existing name too.
    os.link(src, dst, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    os.unlink(src, dir_fd=dir_fd)
