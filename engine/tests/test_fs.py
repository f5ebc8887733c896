"""File-level recovery (engine.fs) on real ext4 images built with mkfs.ext4 -d; no mocks.

Listings are checked against debugfs, file bytes against the files the image was built from.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.fs import (
    BytesByteSource,
    CountingSource,
    Entry,
    FileByteSource,
    FileRecoveryError,
    FileSystem,
    NotADirectory,
    NotAFile,
    PartitionNotFound,
    PathNotFound,
    SeekableByteSource,
    SourceReadError,
    UnsupportedFilesystem,
    archive_folder,
    archive_name,
    as_byte_source,
    list_partitions,
    normalize_path,
    open_filesystem,
)
from engine.tests.tools import REPO, require_tool

KNOWN_MTIME = 1_600_000_000  # 2020-09-13 12:26:40 UTC
SPARSE_SIZE = 8 << 20
SPARSE_WRITES = {0: b"head", 3_000_001: b"middle bytes", SPARSE_SIZE - 3: b"end"}


# --------------------------------------------------------------------------- fixtures


def build_tree(root: Path) -> Path:
    """Nested folders, a >1 MiB random file, a sparse file, UTF-8 and spaced names,
    a symlink, an empty dir and an executable."""
    root.mkdir(parents=True)
    (root / "docs" / "nested" / "deep").mkdir(parents=True)
    (root / "docs" / "nested" / "deep" / "note.txt").write_text("deep note\n")
    (root / "docs" / "readme.md").write_text("# readme\n" * 100)
    (root / "docs" / "big.bin").write_bytes(os.urandom((1 << 20) + 512 * 1024 + 7))
    (root / "empty").mkdir()
    (root / "with space dir").mkdir()
    (root / "with space dir" / "file one.txt").write_bytes(b"one\n")
    (root / "Grüße und Küsse.txt").write_text("Grüße und Küsse\n", encoding="utf-8")
    (root / "日本語.txt").write_text("日本語のテキスト\n", encoding="utf-8")
    (root / "zero-length").write_bytes(b"")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    os.utime(script, (KNOWN_MTIME, KNOWN_MTIME))
    sparse = root / "sparse.img"
    with open(sparse, "wb") as f:
        f.truncate(SPARSE_SIZE)
        for off, data in SPARSE_WRITES.items():
            f.seek(off)
            f.write(data)
    os.symlink("docs/big.bin", root / "link")
    os.symlink("nowhere/at/all", root / "docs" / "dangling")
    return root


def mkfs_ext4(image: Path, src: Path, size_mib: int) -> Path:
    mkfs = require_tool("mkfs.ext4")
    subprocess.run(
        [mkfs, "-q", "-F", "-b", "4096", "-d", str(src), str(image), f"{size_mib}M"],
        check=True,
        capture_output=True,
    )
    return image


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tree(tmp_path_factory.mktemp("fs-tree") / "root")


@pytest.fixture(scope="module")
def ext4(tmp_path_factory: pytest.TempPathFactory, tree: Path) -> Path:
    """A 64 MiB ext4 image of ``tree`` (sparse on the host)."""
    return mkfs_ext4(tmp_path_factory.mktemp("fs-img") / "ext4.img", tree, 64)


@pytest.fixture
def fs(ext4: Path) -> FileSystem:
    return open_filesystem(FileByteSource(ext4))


# --------------------------------------------------------------------------- debugfs oracle

_DEBUGFS_LS = re.compile(
    r"^\s*(?P<ino>\d+)\s+(?P<mode>[0-7]+)\s+\(\d+\)\s+\d+\s+\d+\s+(?P<size>\d+)\s+"
    r"\S+\s+\S+\s(?P<name>.*)$"
)


def _debugfs_name(s: str) -> str:
    # debugfs prints bytes >= 0x80 as \xNN escapes
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda m: bytes([int(m[1], 16)]), s.encode("latin-1"))
    return raw.decode("utf-8")


def debugfs_ls(image: Path, path: str) -> dict[str, tuple[int, int, int]]:
    """name -> (inode, mode, size) as debugfs sees them."""
    debugfs = require_tool("debugfs")
    r = subprocess.run(
        [debugfs, "-R", f'ls -l "{path}"', str(image)],
        check=True,
        capture_output=True,
        text=True,
        encoding="latin-1",
    )
    out: dict[str, tuple[int, int, int]] = {}
    for line in r.stdout.splitlines():
        m = _DEBUGFS_LS.match(line)
        if not m:
            continue
        name = _debugfs_name(m["name"])
        if name in (".", ".."):
            continue
        out[name] = (int(m["ino"]), int(m["mode"], 8), int(m["size"]))
    assert out or path.endswith("empty"), r.stdout + r.stderr
    return out


# --------------------------------------------------------------------------- listing


@pytest.mark.parametrize(
    "path", ["/", "/docs", "/docs/nested", "/docs/nested/deep", "/empty", "/with space dir"]
)
def test_listdir_matches_debugfs(ext4: Path, fs: FileSystem, path: str) -> None:
    ours = {e.name: (e.inode, e.mode, e.size) for e in fs.listdir(path)}
    assert ours == debugfs_ls(ext4, path)


def test_listdir_order_kinds_and_paths(fs: FileSystem) -> None:
    entries = fs.listdir("/")
    names = [e.name for e in entries]
    assert names == [
        "docs",
        "empty",
        "lost+found",
        "with space dir",
        "Grüße und Küsse.txt",
        "link",
        "run.sh",
        "sparse.img",
        "zero-length",
        "日本語.txt",
    ]
    kinds = {e.name: e.kind for e in entries}
    assert kinds["docs"] == kinds["empty"] == "dir"
    assert kinds["link"] == "symlink"
    assert kinds["run.sh"] == kinds["日本語.txt"] == "file"
    assert all(e.path == "/" + e.name for e in entries)
    assert [e.path for e in fs.listdir("/with space dir")] == ["/with space dir/file one.txt"]
    assert fs.listdir("/empty") == []
    # trailing and doubled slashes are the same folder
    assert fs.listdir("//docs/") == fs.listdir("/docs")


def test_stat_metadata(fs: FileSystem, tree: Path) -> None:
    run = fs.stat("/run.sh")
    assert run.kind == "file" and run.name == "run.sh" and run.path == "/run.sh"
    assert run.mode == 0o100755
    assert run.mtime == datetime.fromtimestamp(KNOWN_MTIME, UTC)
    assert run.mtime is not None and run.mtime.tzinfo is not None
    big = fs.stat("/docs/big.bin")
    assert big.size == (tree / "docs" / "big.bin").stat().st_size
    assert fs.stat("/docs").is_dir and fs.stat("/").kind == "dir" and fs.stat("/").path == "/"
    link = fs.stat("/link")
    assert (link.kind, link.target, link.size) == ("symlink", "docs/big.bin", 12)
    assert fs.readlink("/docs/dangling") == "nowhere/at/all"
    assert fs.stat("/zero-length").size == 0


# --------------------------------------------------------------------------- file bytes


def test_every_file_reads_back_byte_for_byte(fs: FileSystem, tree: Path) -> None:
    checked = 0
    for _dirpath, _dirs, files in fs.walk("/"):
        for e in files:
            if e.kind != "file":
                continue
            local = tree / e.path.lstrip("/")
            assert b"".join(fs.read_file(e.path, chunk_size=100_000)) == local.read_bytes(), e.path
            checked += 1
    assert checked == 9


def test_sparse_file_holes_read_as_zeros(ext4: Path, fs: FileSystem) -> None:
    e = fs.stat("/sparse.img")
    assert e.size == SPARSE_SIZE
    data = b"".join(fs.read_file("/sparse.img"))
    expected = bytearray(SPARSE_SIZE)
    for off, chunk in SPARSE_WRITES.items():
        expected[off : off + len(chunk)] = chunk
    assert data == bytes(expected)
    # mkfs.ext4 -d kept the holes: far fewer blocks allocated than the size
    debugfs = require_tool("debugfs")
    out = subprocess.run(
        [debugfs, "-R", "stat /sparse.img", str(ext4)], capture_output=True, text=True
    ).stdout
    blocks = int(re.search(r"Blockcount:\s*(\d+)", out)[1])  # type: ignore[index]
    assert blocks * 512 < SPARSE_SIZE // 10


def test_open_file_is_a_seekable_stream(fs: FileSystem, tree: Path) -> None:
    want = (tree / "docs" / "big.bin").read_bytes()
    with fs.open_file("/docs/big.bin") as f:
        assert f.readable() and f.seekable()
        assert f.read(10) == want[:10]
        f.seek(1_000_000)
        assert f.read(5000) == want[1_000_000:1_005_000]
        assert f.tell() == 1_005_000
        f.seek(-7, io.SEEK_END)
        assert f.read() == want[-7:]
        assert f.read(10) == b""
        f.seek(0)
        assert f.read() == want


def test_unicode_and_spaced_names(fs: FileSystem, tree: Path) -> None:
    for path in ("/Grüße und Küsse.txt", "/日本語.txt", "/with space dir/file one.txt"):
        assert fs.stat(path).name == path.rsplit("/", 1)[1]
        assert b"".join(fs.read_file(path)) == (tree / path.lstrip("/")).read_bytes()


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "path",
    [
        "/../etc",
        "/docs/../docs",
        "/docs/./readme.md",
        "..",
        "docs",
        "",
        "/missing",
        "/docs/missing/deeper",
        "/docs/readme.md/x",
        "/link/x",  # symlinks are not followed
        "/nul\0byte",
    ],
)
def test_bad_paths_raise_path_not_found(fs: FileSystem, path: str) -> None:
    with pytest.raises(PathNotFound) as exc:
        fs.stat(path)
    assert exc.value.path == path
    with pytest.raises(PathNotFound):
        fs.listdir(path)
    with pytest.raises(PathNotFound):
        fs.read_file(path)


def test_kind_mismatches(fs: FileSystem) -> None:
    with pytest.raises(NotAFile):
        fs.open_file("/docs")
    with pytest.raises(NotAFile):
        fs.read_file("/")
    with pytest.raises(NotAFile) as exc:
        fs.read_file("/link")
    assert exc.value.kind == "symlink"
    with pytest.raises(NotADirectory):
        fs.listdir("/docs/readme.md")
    with pytest.raises(NotADirectory):
        list(fs.walk("/link"))
    assert issubclass(PathNotFound, FileRecoveryError) and issubclass(NotAFile, FileRecoveryError)


def test_normalize_path() -> None:
    assert normalize_path("/") == ("/", [])
    assert normalize_path("//a///b/") == ("/a/b", ["a", "b"])
    with pytest.raises(PathNotFound):
        normalize_path("/a/../../b")


def test_not_a_filesystem(tmp_path: Path) -> None:
    zeros = tmp_path / "zeros.img"
    zeros.write_bytes(bytes(4 << 20))
    noise = BytesByteSource(os.urandom(2 << 20))
    assert list_partitions(FileByteSource(zeros)) == []
    for src in (FileByteSource(zeros), noise):
        with pytest.raises(UnsupportedFilesystem, match="no supported file system"):
            open_filesystem(src)
    with pytest.raises(PartitionNotFound):
        open_filesystem(noise, 0)


def test_whole_disk_fs_has_no_partitions(ext4: Path) -> None:
    src = FileByteSource(ext4)
    assert list_partitions(src) == []
    with pytest.raises(PartitionNotFound):
        open_filesystem(src, 0)
    assert open_filesystem(src, None).fs_type == "ext4"


class _FailingSource:
    """Fails every read that touches the byte range [bad_start, bad_end)."""

    def __init__(self, inner: FileByteSource, bad_start: int, bad_end: int) -> None:
        self.inner, self.bad = inner, (bad_start, bad_end)

    @property
    def size(self) -> int:
        return self.inner.size

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < self.bad[1] and offset + length > self.bad[0]:
            raise OSError("backing store unavailable")
        return self.inner.read_at(offset, length)


def test_source_failures_surface_as_source_read_error(ext4: Path) -> None:
    with pytest.raises(SourceReadError, match="backing store unavailable"):
        open_filesystem(_FailingSource(FileByteSource(ext4), 0, 4096))
    # the disk fails only under one data block of big.bin: listing works, the download fails
    debugfs = require_tool("debugfs")
    out = subprocess.run(
        [debugfs, "-R", "blocks /docs/big.bin", str(ext4)], capture_output=True, text=True
    ).stdout
    block = int(out.split()[100])
    src = _FailingSource(FileByteSource(ext4), block * 4096, block * 4096 + 4096)
    fs = open_filesystem(src, cache_block_size=4096)
    assert [e.name for e in fs.listdir("/docs")][:1] == ["nested"]
    with pytest.raises(SourceReadError, match="backing store unavailable"):
        b"".join(fs.read_file("/docs/big.bin"))
    assert b"".join(fs.read_file("/docs/readme.md")).startswith(b"# readme")


# --------------------------------------------------------------------------- cost


def test_listing_and_one_download_fetch_a_small_part_of_the_disk(ext4: Path, tree: Path) -> None:
    src = CountingSource(FileByteSource(ext4))
    assert src.size == 64 << 20
    fs = open_filesystem(src)
    fs.listdir("/")
    fs.listdir("/docs")
    data = b"".join(fs.read_file("/docs/readme.md"))
    assert data == (tree / "docs" / "readme.md").read_bytes()
    assert 0 < src.bytes_read < src.size // 10, src.bytes_read
    # a second listing is served from the block cache
    before = src.reads
    fs.listdir("/docs")
    assert src.reads == before


def test_walk_matches_the_source_tree(fs: FileSystem, tree: Path) -> None:
    ours: set[str] = set()
    for dirpath, dirs, files in fs.walk("/"):
        if dirpath == "/":
            dirs[:] = [d for d in dirs if d.name != "lost+found"]  # pruning works
        ours |= {e.path for e in dirs + files}
    theirs = {"/" + str(p.relative_to(tree)) for p in tree.rglob("*")}
    assert ours == theirs
    assert [d for d, _, _ in fs.walk("/docs")] == ["/docs", "/docs/nested", "/docs/nested/deep"]


# --------------------------------------------------------------------------- archives


class _Unseekable(io.RawIOBase):
    """A write-only sink that cannot seek or tell, like an HTTP response body."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        data = bytes(b)  # type: ignore[call-overload]
        self.buf += data
        return len(data)

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise OSError("unseekable")

    def seek(self, *a: object) -> int:
        raise OSError("unseekable")


def _expected_files(tree: Path, sub: str) -> dict[str, bytes]:
    base = tree / sub
    return {
        str(p.relative_to(base)): p.read_bytes()
        for p in base.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_tar_archive_streams_the_folder(fs: FileSystem, tree: Path) -> None:
    sink = _Unseekable()
    stats = archive_folder(fs, "/docs", sink, "tar")  # type: ignore[arg-type]
    assert (stats.files, stats.symlinks, stats.dirs) == (3, 1, 3)
    with tarfile.open(fileobj=io.BytesIO(bytes(sink.buf)), mode="r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        files = {
            n.removeprefix("docs/"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for n, m in members.items()
            if m.isfile()
        }
    assert files == _expected_files(tree, "docs")
    assert members["docs/dangling"].issym()
    assert members["docs/dangling"].linkname == "nowhere/at/all"
    assert members["docs/nested/deep"].isdir()


def test_zip_archive_streams_the_whole_fs(fs: FileSystem, tree: Path) -> None:
    sink = _Unseekable()
    archive_folder(fs, "/", sink, "zip")  # type: ignore[arg-type]
    with zipfile.ZipFile(io.BytesIO(bytes(sink.buf))) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        files = {
            n.removeprefix("root/"): zf.read(n)
            for n in names
            if not n.endswith("/") and (zf.getinfo(n).external_attr >> 16) & 0o170000 == 0o100000
        }
        assert zf.read("root/link") == b"docs/big.bin"
        assert (zf.getinfo("root/run.sh").external_attr >> 16) == 0o100755
    assert files == _expected_files(tree, "")
    assert "root/empty/" in names and "root/lost+found/" in names
    assert "root/Grüße und Küsse.txt" in names


def test_zip_to_a_seekable_file_and_archive_errors(fs: FileSystem, tmp_path: Path) -> None:
    out = tmp_path / "a.zip"
    with open(out, "wb") as f:
        archive_folder(fs, "/with space dir", f, "zip", arcroot="")
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["file one.txt"]
    assert archive_name("/with space dir", "zip") == "with space dir.zip"
    assert archive_name("/", "tar") == "root.tar"
    with pytest.raises(NotADirectory):
        archive_folder(fs, "/run.sh", io.BytesIO(), "tar")
    with pytest.raises(PathNotFound):
        archive_folder(fs, "/../", io.BytesIO(), "tar")
    with pytest.raises(ValueError):
        archive_folder(fs, "/", io.BytesIO(), "rar")  # type: ignore[arg-type]


def _fs_failing_inside(ext4: Path, path: str) -> FileSystem:
    """The file system of ``ext4`` whose disk fails under one data block in the middle of
    ``path``: everything before that block reads fine."""
    debugfs = require_tool("debugfs")
    out = subprocess.run(
        [debugfs, "-R", f"blocks {path}", str(ext4)], capture_output=True, text=True
    ).stdout
    block = int(out.split()[100])
    src = _FailingSource(FileByteSource(ext4), block * 4096, block * 4096 + 4096)
    return open_filesystem(src, cache_block_size=4096)


@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize("seekable", [False, True], ids=["stream", "file"])
def test_a_failed_archive_never_looks_whole(ext4: Path, fmt: str, seekable: bool) -> None:
    fs = _fs_failing_inside(ext4, "/docs/big.bin")
    sink: _Unseekable | io.BytesIO = io.BytesIO() if seekable else _Unseekable()
    with pytest.raises(SourceReadError, match="backing store unavailable"):
        archive_folder(fs, "/docs", sink, fmt)  # type: ignore[arg-type]
    data = sink.getvalue() if isinstance(sink, io.BytesIO) else bytes(sink.buf)
    assert data  # members before the failure were written out
    if fmt == "zip":  # no central directory: no zip reader opens it
        assert not zipfile.is_zipfile(io.BytesIO(data))
    else:  # no end-of-archive blocks and a member cut short: reading it fails
        with pytest.raises(tarfile.ReadError):
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                for member in tar:
                    if member.isfile():
                        tar.extractfile(member).read()  # type: ignore[union-attr]


# --------------------------------------------------------------------------- sources, threads


def test_source_adapters(ext4: Path) -> None:
    with open(ext4, "rb") as f:
        seekable = SeekableByteSource(f)
        plain = FileByteSource(ext4)
        assert seekable.size == plain.size == ext4.stat().st_size
        for off, n in ((0, 10), (1024, 4096), (plain.size - 5, 100), (plain.size + 1, 5)):
            assert seekable.read_at(off, n) == plain.read_at(off, n)
        assert as_byte_source(f).size == plain.size
        assert as_byte_source(plain) is plain
        assert as_byte_source(str(ext4)).read_at(1080, 2) == b"\x53\xef"  # ext magic
        assert open_filesystem(seekable).stat("/docs").kind == "dir"
    with pytest.raises(TypeError):
        as_byte_source(42)


def test_concurrent_use_is_serialised(fs: FileSystem, tree: Path) -> None:
    want = hashlib.sha256((tree / "docs" / "big.bin").read_bytes()).hexdigest()
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(3):
                fs.listdir("/docs")
                h = hashlib.sha256(b"".join(fs.read_file("/docs/big.bin", 65536)))
                results.append(h.hexdigest())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [want] * 12


def test_closed_filesystem_refuses_work(ext4: Path) -> None:
    with open_filesystem(FileByteSource(ext4)) as fs:
        entry: Entry = fs.stat("/run.sh")
    assert entry.size > 0
    with pytest.raises(FileRecoveryError, match="closed"):
        fs.listdir("/")


def test_engine_fs_imports_without_django() -> None:
    code = (
        "import sys, engine.fs\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'vaults', 'jobs',"
        " 'inventory', 'policies', 'portal')]\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=env)


def test_non_utf8_names_and_long_symlinks(tmp_path: Path) -> None:
    """ext4 names are bytes: invalid UTF-8 is decoded with surrogateescape and still opens;
    a symlink target too long to live in the inode (> 60 bytes) is read from its block."""
    src = tmp_path / "src"
    src.mkdir()
    latin1 = os.fsdecode(b"caf\xe9 cr\xe8me")  # Latin-1 bytes, not UTF-8
    (src / latin1).mkdir()
    (src / latin1 / "inside.txt").write_bytes(b"inside\n")
    long_target = "/".join(["a-rather-long-component"] * 10)
    os.symlink(long_target, src / "long-link")
    fs = open_filesystem(FileByteSource(mkfs_ext4(tmp_path / "n.img", src, 8)))
    names = [e.name for e in fs.listdir("/")]
    assert latin1 in names and "long-link" in names
    assert b"".join(fs.read_file(f"/{latin1}/inside.txt")) == b"inside\n"
    assert fs.stat("/long-link").target == long_target
    sink = io.BytesIO()
    archive_folder(fs, "/", sink, "zip")  # names that are not UTF-8 get U+FFFD in a zip
    with zipfile.ZipFile(io.BytesIO(sink.getvalue())) as zf:
        assert zf.read("root/caf\ufffd cr\ufffdme/inside.txt") == b"inside\n"
    sink = io.BytesIO()
    archive_folder(fs, "/", sink, "tar")  # tar keeps the original bytes
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        assert f"root/{latin1}/inside.txt" in tar.getnames()
