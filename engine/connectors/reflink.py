"""Copy-on-write clones of disk images (``FICLONE``), the cheap point-in-time view."""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from pathlib import Path

FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h

# errno values meaning "this file system (pair) cannot reflink", as opposed to a real failure.
_UNSUPPORTED = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.ENOTSUP}
)


class ReflinkUnsupported(OSError):
    """The source/destination file systems cannot share extents."""


def reflink_clone(src: Path, dst: Path) -> None:
    """Clone ``src`` into the new file ``dst``; raise ReflinkUnsupported if impossible.

    ``dst`` must not exist.  On any failure ``dst`` is removed again.
    """
    with open(src, "rb") as s, open(dst, "xb") as d:
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        except OSError as exc:
            d.close()
            os.unlink(dst)
            if exc.errno in _UNSUPPORTED:
                raise ReflinkUnsupported(exc.errno, f"cannot reflink {src} into {dst}") from exc
            raise


def reflink_supported(directory: Path) -> bool:
    """Whether files inside ``directory`` can be reflinked to each other."""
    with tempfile.TemporaryDirectory(dir=directory, prefix=".reflink-probe-") as tmp:
        src = Path(tmp, "src")
        src.write_bytes(b"lifeboat" * 512)
        try:
            reflink_clone(src, Path(tmp, "dst"))
        except ReflinkUnsupported:
            return False
        return True
