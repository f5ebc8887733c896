"""Restore targets are checked where the bytes are written: a directory on the path swapped for
a symlink, a name taken after the check, or a replaced file swapped for another are refused,
and the restore leaves nothing behind."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import (
    BackupRequest,
    DiskSource,
    Progress,
    RestoreTarget,
    Store,
    TargetChanged,
    backup,
    open_directory,
    open_target_file,
    restore,
    targets,
)
from engine.tests.tools import same_bytes


@pytest.fixture
def disks(tmp_path: Path) -> dict[int, Path]:
    out = {}
    for lun in (0, 1):
        path = tmp_path / f"source{lun}.img"
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20))
            f.truncate(3 << 20)
        out[lun] = path
    return out


@pytest.fixture
def rp(store: Store, disks: dict[int, Path]) -> str:
    sources = [DiskSource(lun, str(p)) for lun, p in disks.items()]
    return backup(BackupRequest(store, sources, vm_name="vm")).rp_id


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "restores"
    (path / "team" / "web").mkdir(parents=True)
    return path


@contextmanager
def opened(path: Path, roots: list[Path]) -> Iterator[int]:
    fd = open_directory(str(path), [str(r) for r in roots])
    try:
        yield fd
    finally:
        os.close(fd)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def when_written(action: Callable[[], None]) -> Callable[[Progress], None]:
    """A progress callback that runs `action` once every byte is written, before the rename."""

    def progress(p: Progress) -> None:
        if p.bytes_total and p.bytes_done == p.bytes_total:
            action()

    return progress


# -- opening the directory ------------------------------------------------------------------


def test_it_opens_a_directory_below_its_root(root: Path, tmp_path: Path) -> None:
    for path in (root, root / "team", root / "team" / "web"):
        with opened(path, [tmp_path / "elsewhere", root]) as fd:
            assert os.path.samestat(os.fstat(fd), os.stat(path))


def test_a_root_given_through_a_symlink_is_resolved(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    with opened(root / "team", [alias]) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat(root / "team"))


@pytest.mark.parametrize("swapped", ["web", "team"])
def test_a_directory_swapped_for_a_symlink_is_refused(
    root: Path, tmp_path: Path, swapped: str
) -> None:
    outside = tmp_path / "outside"
    (outside / "web").mkdir(parents=True)
    swap = root / "team" / "web" if swapped == "web" else root / "team"
    swap.rename(tmp_path / "moved")
    swap.symlink_to(outside / "web" if swapped == "web" else outside)
    with pytest.raises(
        TargetChanged, match=re.escape(f"{swap} is a symbolic link, not a directory")
    ):
        open_directory(str(root / "team" / "web"), [str(root)])


def test_a_directory_swapped_for_a_file_or_removed_is_refused(root: Path) -> None:
    web = root / "team" / "web"
    web.rmdir()
    with pytest.raises(TargetChanged, match="no longer exists"):
        open_directory(str(web), [str(root)])
    web.write_bytes(b"")
    with pytest.raises(TargetChanged, match="is a file, not a directory"):
        open_directory(str(web), [str(root)])


def test_a_path_outside_the_roots_or_unresolved_is_refused(root: Path, tmp_path: Path) -> None:
    with pytest.raises(TargetChanged, match="no longer inside the allowed roots"):
        open_directory(str(tmp_path), [str(root)])
    with pytest.raises(TargetChanged, match="no longer inside the allowed roots"):
        open_directory(f"{root}-sibling", [str(root)])
    with pytest.raises(TargetChanged, match="not a resolved path"):
        open_directory(f"{root}/team/../team", [str(root)])


# -- writing: new files -------------------------------------------------------------------


def test_it_restores_into_an_opened_directory(
    store: Store, rp: str, disks: dict[int, Path], root: Path
) -> None:
    web = root / "team" / "web"
    with opened(web, [root]) as fd:
        res = restore(store, rp, {lun: RestoreTarget(fd, f"d{lun}.img") for lun in disks})
    assert listing(web) == ["d0.img", "d1.img"]
    for lun, source in disks.items():
        assert same_bytes(web / f"d{lun}.img", source)
    assert res.targets == {0: "d0.img", 1: "d1.img"}


def test_writes_follow_the_opened_directory_not_the_path(
    store: Store, rp: str, disks: dict[int, Path], root: Path, tmp_path: Path
) -> None:
    """Once open, a swap of the path cannot redirect the write out of the root."""
    web = root / "team" / "web"
    outside = tmp_path / "outside"
    outside.mkdir()
    with opened(web, [root]) as fd:
        web.rename(root / "moved")
        web.symlink_to(outside)
        restore(store, rp, {0: RestoreTarget(fd, "d0.img")})
    assert listing(outside) == []
    assert same_bytes(root / "moved" / "d0.img", disks[0])


def test_a_name_taken_before_the_restore_is_left_alone(store: Store, rp: str, root: Path) -> None:
    web = root / "team" / "web"
    (web / "d1.img").write_bytes(b"keep me")
    with opened(web, [root]) as fd, pytest.raises(TargetChanged, match="d1.img already exists"):
        restore(store, rp, {lun: RestoreTarget(fd, f"d{lun}.img") for lun in (0, 1)})
    assert listing(web) == ["d1.img"]
    assert (web / "d1.img").read_bytes() == b"keep me"


@pytest.mark.parametrize("late", ["a file", "a symlink"])
def test_a_name_taken_while_restoring_is_left_alone(
    store: Store, rp: str, root: Path, tmp_path: Path, late: str
) -> None:
    web = root / "team" / "web"
    elsewhere = tmp_path / "elsewhere.img"
    elsewhere.write_bytes(b"keep me")

    def take_the_name() -> None:
        if late == "a file":
            (web / "d1.img").write_bytes(b"keep me")
        else:
            (web / "d1.img").symlink_to(elsewhere)

    with opened(web, [root]) as fd, pytest.raises(TargetChanged, match="d1.img already exists"):
        restore(
            store,
            rp,
            {lun: RestoreTarget(fd, f"d{lun}.img") for lun in (0, 1)},
            progress=when_written(take_the_name),
        )
    # Neither disk is put in place, no temp file stays, the late file is untouched.
    assert listing(web) == ["d1.img"]
    assert (web / "d1.img").read_bytes() == b"keep me"
    assert elsewhere.read_bytes() == b"keep me"


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link"])
def test_the_final_rename_never_replaces_a_file(
    root: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool
) -> None:
    """The last guard, for a name taken between the check and the rename."""
    if not renameat2:
        monkeypatch.setattr(targets, "_renameat2", None)
    web = root / "team" / "web"
    (web / ".tmp").write_bytes(b"restored")
    (web / "taken.img").write_bytes(b"keep me")
    with opened(web, [root]) as fd:
        with pytest.raises(TargetChanged, match="appeared while it was being restored"):
            targets.put_in_place(RestoreTarget(fd, "taken.img"), ".tmp")
        targets.put_in_place(RestoreTarget(fd, "free.img"), ".tmp")
    assert listing(web) == ["free.img", "taken.img"]
    assert (web / "taken.img").read_bytes() == b"keep me"
    assert (web / "free.img").read_bytes() == b"restored"


# -- writing: replacing files -------------------------------------------------------------


def test_it_replaces_exactly_the_file_it_opened(
    store: Store, rp: str, disks: dict[int, Path], root: Path
) -> None:
    web = root / "team" / "web"
    (web / "d0.img").write_bytes(b"old disk")
    with opened(web, [root]) as fd:
        old = open_target_file(fd, "d0.img", "d0.img")
        try:
            restore(store, rp, {0: RestoreTarget(fd, "d0.img", replaces=old)})
        finally:
            os.close(old)
    assert listing(web) == ["d0.img"]
    assert same_bytes(web / "d0.img", disks[0])


def test_the_file_to_replace_must_not_be_a_symlink(root: Path, tmp_path: Path) -> None:
    web = root / "team" / "web"
    elsewhere = tmp_path / "elsewhere.img"
    elsewhere.write_bytes(b"")
    (web / "d0.img").symlink_to(elsewhere)
    with opened(web, [root]) as fd, pytest.raises(TargetChanged, match="is a symbolic link"):
        open_target_file(fd, "d0.img", "d0.img")
    os.mkfifo(web / "fifo")
    with opened(web, [root]) as fd, pytest.raises(TargetChanged, match="not a regular file"):
        open_target_file(fd, "fifo", "fifo")


@pytest.mark.parametrize("swap", ["another file", "a symlink", "nothing"])
def test_a_replaced_file_swapped_while_restoring_is_refused(
    store: Store, rp: str, root: Path, tmp_path: Path, swap: str
) -> None:
    web = root / "team" / "web"
    disk = web / "d0.img"
    disk.write_bytes(b"old disk")
    elsewhere = tmp_path / "elsewhere.img"
    elsewhere.write_bytes(b"keep me")

    def swap_it() -> None:
        disk.rename(web / "old.img")
        if swap == "another file":
            disk.write_bytes(b"keep me")
        elif swap == "a symlink":
            disk.symlink_to(elsewhere)

    with opened(web, [root]) as fd:
        old = open_target_file(fd, "d0.img", "d0.img")
        try:
            with pytest.raises(TargetChanged, match="d0.img was re"):
                target = RestoreTarget(fd, "d0.img", replaces=old)
                restore(store, rp, {0: target}, progress=when_written(swap_it))
        finally:
            os.close(old)
    assert (web / "old.img").read_bytes() == b"old disk"
    assert elsewhere.read_bytes() == b"keep me"
    assert sorted(listing(web)) == (["old.img"] if swap == "nothing" else ["d0.img", "old.img"])
    if swap == "another file":
        assert disk.read_bytes() == b"keep me"


def test_a_path_target_that_is_a_symlink_is_refused(
    store: Store, rp: str, root: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.img"
    elsewhere.write_bytes(b"keep me")
    link = root / "d0.img"
    link.symlink_to(elsewhere)
    with pytest.raises(TargetChanged, match="is a symbolic link"):
        restore(store, rp, {0: link})
    assert elsewhere.read_bytes() == b"keep me" and link.is_symlink()
