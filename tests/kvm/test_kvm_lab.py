"""The KVM lab made for real (under test names, in a temporary data dir): both domains run,
the web guest's agent answers and its file system freezes, a second run reuses them, and the
kvm-lab host row points at libvirt."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from inventory.lab import kvm
from inventory.models import Host

pytestmark = pytest.mark.slow


@pytest.fixture
def lab_names(monkeypatch, settings, tmp_path: Path, adopt_domain):
    tag = uuid.uuid4().hex[:6]
    web, db = adopt_domain(f"t-lab-web-{tag}"), adopt_domain(f"t-lab-db-{tag}")
    monkeypatch.setattr(kvm, "WEB", web)
    monkeypatch.setattr(kvm, "DB", db)
    settings.DATA_DIR = tmp_path / "data"
    return web, db


def test_kvm_lab_runs_both_domains_and_reuses_them(lab_names, kvm_conn) -> None:
    web, db = lab_names
    said: list[str] = []
    paths = kvm.ensure_kvm_lab(said.append)
    assert paths.root == Path(kvm.kvm_lab_paths().root)
    assert kvm_conn.lookupByName(web).isActive() and kvm_conn.lookupByName(db).isActive()
    assert kvm_conn.lookupByName(web).fsFreeze() == 1
    assert kvm_conn.lookupByName(web).fsThaw() == 1
    for pattern, offset, length in kvm.DB_PATTERNS:
        r = subprocess.run(
            [
                "qemu-io",
                "-U",
                "-r",
                "-f",
                "qcow2",
                "-c",
                f"read -P {pattern:#x} {offset} {length}",
                str(paths.disk(db)),
            ],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0 and "Pattern verification failed" not in r.stdout, r.stdout

    uuids = (kvm_conn.lookupByName(web).UUIDString(), kvm_conn.lookupByName(db).UUIDString())
    said.clear()
    kvm.ensure_kvm_lab(said.append)
    assert f"KVM lab: {web}: already running; disk {paths.disk(web)}; console " in said[1]
    assert (
        kvm_conn.lookupByName(web).UUIDString(),
        kvm_conn.lookupByName(db).UUIDString(),
    ) == uuids


@pytest.mark.skipif(
    not hasattr(Host, "libvirt_uri"), reason="Host.libvirt_uri is not in this tree yet"
)
@pytest.mark.django_db
def test_kvm_lab_host_is_a_libvirt_host_over_the_lab_dirs(settings, tmp_path: Path) -> None:
    settings.DATA_DIR = tmp_path
    paths = kvm.kvm_lab_paths()
    paths.make_dirs()
    host, created = kvm.register_kvm_lab_host(paths)
    assert created
    assert (host.name, host.connector, host.libvirt_uri) == ("kvm-lab", "libvirt", kvm.URI)
    assert host.allows(str(paths.disk(kvm.WEB))) and host.allows(str(paths.restores / "x"))
    assert kvm.register_kvm_lab_host(paths) == (host, False)
