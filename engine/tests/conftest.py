"""Fixtures for engine tests (no Django needed by the engine itself).

Every test that takes `store` runs once per place a store can live: a local directory, S3
(moto) and Azure Blob (Azurite). Tests about local files themselves carry the `local_store`
marker and run on a local directory only.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Store, init_store
from engine.tests.objservers import (  # noqa: F401  (session fixtures)
    Place,
    azurite_server,
    moto_server,
    object_place,
)
from engine.tests.tools import make_ext4, stage_files

STORE_KINDS = ("local", "s3", "azure")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        local_only = metafunc.definition.get_closest_marker("local_store") is not None
        metafunc.parametrize("store_kind", ["local"] if local_only else list(STORE_KINDS))


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
def place(
    request: pytest.FixtureRequest, store_kind: str, tmp_path: Path
) -> Callable[[str], Place]:
    """A fresh place of this test's kind for a store named `name`."""
    return lambda name: object_place(request, store_kind, tmp_path, name)


@pytest.fixture
def make_store(place: Callable[[str], Place], kek: bytes) -> Callable[..., Store]:
    """Another store of this test's kind: make_store(name, **init_store options)."""

    def make(name: str, **kw: Any) -> Store:
        p = place(name)
        return init_store(p.location, kek, target=p.target, **kw)

    return make


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store("vault", chunk_size=256 << 10)


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
