"""A store in a local directory: temp file + fsync + rename (+ directory fsync) per object."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path

from .base import ObjectInfo

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, replace: bool = True, sync: bool = True) -> None:
    """Write data to path via a temp file + rename (+ fsync of file and directory).

    With replace=False the final step is a hard link, failing with FileExistsError if the
    name exists, so two writers can never both commit the same name.
    """
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:12]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


class LocalBackend:
    """Keys are relative paths under root. Every write is durable before it returns (unless
    LIFEBOAT_UNSAFE_NO_FSYNC=1); chunk writes batch their fsyncs through the store's Syncer."""

    is_local = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.durable = os.environ.get("LIFEBOAT_UNSAFE_NO_FSYNC") != "1"

    def path(self, key: str) -> Path:
        return self.root / key

    def _write(self, key: str, data: bytes, replace: bool) -> None:
        path = self.root / key
        try:
            atomic_write(path, data, replace=replace, sync=self.durable)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data, replace=replace, sync=self.durable)

    def put(self, key: str, data: bytes, *, retain_until: datetime | None = None) -> None:
        self._write(key, data, True)

    def put_if_absent(self, key: str, data: bytes, *, retain_until: datetime | None = None) -> bool:
        try:
            self._write(key, data, False)
        except FileExistsError:
            return False
        return True

    def get(self, key: str) -> bytes:
        with open(self.root / key, "rb") as f:
            return f.read()

    def exists(self, key: str) -> bool:
        return os.path.exists(self.root / key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Files under the directory part of prefix whose key starts with prefix, temp files
        included (GC removes the old ones)."""
        base, _, _ = prefix.rpartition("/")
        start = self.root / base if base else self.root
        stack = [start]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with it:
                for ent in it:
                    key = os.path.relpath(ent.path, self.root)
                    if ent.is_dir(follow_symlinks=False):
                        if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                            stack.append(Path(ent.path))
                        continue
                    if not key.startswith(prefix):
                        continue
                    try:
                        st = ent.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / key)

    def delete_many(self, keys: Iterable[str]) -> None:
        dirs = set()
        for key in keys:
            self.delete(key)
            dirs.add((self.root / key).parent)
        if self.durable:
            for d in sorted(dirs):
                with contextlib.suppress(FileNotFoundError):
                    fsync_dir(d)

    def remove_empty_dir(self, key: str) -> None:
        """Remove a directory left empty (an index directory once its files are gone)."""
        with contextlib.suppress(OSError):
            os.rmdir(self.root / key)

    def requests(self) -> int:
        return 0
