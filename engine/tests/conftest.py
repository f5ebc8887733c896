"""Fixtures for engine tests (no Django needed by the engine itself)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Store, init_store
from engine.tests.tools import make_ext4, stage_files


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def key_file(tmp_path: Path, kek: bytes) -> Path:
    p = tmp_path / "kek.bin"
    p.write_bytes(kek)
    p.chmod(0o600)
    return p


@pytest.fixture
def store(tmp_path: Path, kek: bytes) -> Store:
    return init_store(tmp_path / "vault", kek, chunk_size=256 << 10)


@pytest.fixture(scope="session")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 14 MiB of real files, shared by the image fixtures of a session."""
    return stage_files(tmp_path_factory.mktemp("staging") / "root", 14 << 20)


@pytest.fixture(scope="session")
def ext4_template(tmp_path_factory: pytest.TempPathFactory, staging: Path) -> Path:
    return make_ext4(tmp_path_factory.mktemp("img") / "template.img", 32, staging)


@pytest.fixture
def ext4_image(tmp_path: Path, ext4_template: Path) -> Path:
    """A private sparse copy of a 32 MiB ext4 image about half full of real files."""
    dst = tmp_path / "disk0.img"
    subprocess.run(["cp", "--sparse=always", str(ext4_template), str(dst)], check=True)
    return dst


@pytest.fixture
def make_image(tmp_path: Path, staging: Path) -> Callable[[str, int], Path]:
    def make(name: str, size_mib: int) -> Path:
        return make_ext4(tmp_path / name, size_mib, staging)

    return make
