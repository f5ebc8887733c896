"""Exceptions of file-level recovery, all under :class:`FileRecoveryError`."""

from __future__ import annotations

from engine.errors import EngineError


class FileRecoveryError(EngineError):
    """Base class of every error raised by :mod:`engine.fs`."""


class PathNotFound(FileRecoveryError, LookupError):
    """The path does not exist, contains ``..``/``.``, or is not absolute."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no such file or directory: {path!r}")
        self.path = path


class NotAFile(FileRecoveryError):
    """A file was expected (read, download) but the path names a directory or other kind."""

    def __init__(self, path: str, kind: str = "dir") -> None:
        super().__init__(f"not a regular file ({kind}): {path!r}")
        self.path = path
        self.kind = kind


class NotADirectory(FileRecoveryError):
    """A directory was expected (listdir, walk, archive) but the path names something else."""

    def __init__(self, path: str, kind: str = "file") -> None:
        super().__init__(f"not a directory ({kind}): {path!r}")
        self.path = path
        self.kind = kind


class PartitionNotFound(FileRecoveryError, LookupError):
    """The requested partition index is not in the disk's partition table."""


class UnsupportedFilesystem(FileRecoveryError):
    """No file system that The Sleuth Kit understands was found, or it is unreadable."""


class SourceReadError(FileRecoveryError):
    """The underlying byte source failed or returned fewer bytes than promised."""
