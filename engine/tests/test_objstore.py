"""Object stores only: the service going away mid-backup and mid-restore, and S3 Object Lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine import (
    BackupRequest,
    DiskSource,
    Progress,
    Store,
    StoreUnavailable,
    backup,
    init_store,
    list_recovery_points,
    restore,
    verify,
)
from engine.backends import ObjectTarget
from engine.store import chunk_key
from engine.tests.objservers import (
    Outage,
    Server,
    azure_target,
    new_bucket,
    new_container,
    s3_client,
    s3_target,
)
from engine.tests.tools import same_bytes


@pytest.fixture(params=["s3", "azure"])
def relayed(request: pytest.FixtureRequest, kek: bytes) -> Iterator[tuple[Store, Outage]]:
    """A store reached through a relay the test can cut, as if the service went away."""
    if request.param == "s3":
        srv: Server = request.getfixturevalue("moto_server")
        outage = Outage(srv.endpoint)
        location = f"s3://{new_bucket(srv.endpoint)}/vault"
        target: ObjectTarget = s3_target(outage.endpoint)
    else:
        srv = request.getfixturevalue("azurite_server")
        outage = Outage(srv.endpoint)
        location = f"az://{new_container(srv.endpoint)}/vault"
        target = azure_target(outage.endpoint)
    try:
        yield init_store(location, kek, target=target, chunk_size=256 << 10), outage
    finally:
        outage.close()


def _cut_after(outage: Outage, nbytes: int) -> Any:
    def progress(p: Progress) -> None:
        if p.bytes_done >= nbytes and outage._listener is not None:
            outage.cut()

    return progress


def test_service_gone_mid_backup_and_mid_restore(
    tmp_path: Path, relayed: tuple[Store, Outage]
) -> None:
    store, outage = relayed
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(8 << 20))
    first = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"))

    disk.write_bytes(os.urandom(8 << 20))
    with pytest.raises(StoreUnavailable) as ei:
        backup(
            BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"),
            progress=_cut_after(outage, 2 << 20),
        )
    assert store.location in str(ei.value)
    assert "Traceback" not in str(ei.value) and len(str(ei.value)) < 300

    outage.restore()
    assert [rp.rp_id for rp in list_recovery_points(store)] == [first.rp_id]
    assert verify(store).ok
    again = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm"))
    rep = verify(store)
    assert rep.ok, rep.damage

    # the relay goes away after a few chunks were fetched (progress reports too rarely here)
    target = tmp_path / "out.img"
    get, gets = store.backend.get, [0]

    def get_then_cut(key: str) -> bytes:
        gets[0] += 1
        if gets[0] == 6:
            outage.cut()
        return get(key)

    store.backend.get = get_then_cut  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        restore(store, again.rp_id, {0: target})
    store.backend.get = get  # type: ignore[method-assign]
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if "lifeboat-restore" in p.name]
    outage.restore()
    restore(store, again.rp_id, {0: target})
    assert same_bytes(disk, target)


def test_object_lock_keeps_chunks_until_their_date(
    tmp_path: Path, moto_server: Server, kek: bytes
) -> None:
    bucket = new_bucket(moto_server.endpoint, object_lock=True)
    target = s3_target(moto_server.endpoint, object_lock=True)
    store = init_store(f"s3://{bucket}/vault", kek, target=target, chunk_size=256 << 10)
    disk = tmp_path / "d.img"
    disk.write_bytes(os.urandom(1 << 20))
    until = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    rp = backup(BackupRequest(store, [DiskSource(0, str(disk))], vm_name="vm", retain_until=until))
    idx = store.load_index(rp.rp_id, store.read_manifest(rp.rp_id)["disks"][0])
    key = "vault/" + chunk_key(idx.digest(0))
    s3: Any = s3_client(moto_server.endpoint)
    # moto's GetObjectRetention is unreliable: head_object shows the lock
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] >= until
    version = head["VersionId"]
    with pytest.raises(Exception) as ei:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert "AccessDenied" in str(ei.value) or "locked" in str(ei.value).lower()
    # a plain delete (what GC does) only adds a delete marker; the version stays
    marker = s3.delete_object(Bucket=bucket, Key=key)
    assert marker.get("DeleteMarker")
    body = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    assert len(body) > 0


@pytest.mark.parametrize(
    ("endpoint", "signed"),
    [("https://s3.example.net", False), (None, False), ("http://127.0.0.1:9000", True)],
)
def test_s3_bodies_are_signed_unless_tls_guards_them(endpoint: str | None, signed: bool) -> None:
    from engine.backends.objects import ObjectBackend

    target = ObjectTarget(
        endpoint, "us-east-1", True, {"access_key_id": "a", "secret_access_key": "b"}
    )
    config = ObjectBackend("s3://bucket/vault", target).store.config
    assert (config.get("unsigned_payload") != "true") is signed


def test_the_s3_test_server_stores_no_part_of_a_cut_body(moto_server: Server) -> None:
    """As S3 does: a PUT whose connection drops before the body is whole stores nothing
    (moto alone stored the part that had arrived, which a later backup then deduplicated
    against)."""
    import socket
    import time
    from urllib.parse import urlsplit

    bucket = new_bucket(moto_server.endpoint)
    url = urlsplit(moto_server.endpoint)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            f"PUT /{bucket}/cut HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
            + b"x" * 50000
        )
        time.sleep(0.2)  # the server is reading the body when the connection goes
    s3: Any = s3_client(moto_server.endpoint)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server notices the drop on its own time
        time.sleep(0.2)
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="whole", Body=b"y" * 1000)
    assert s3.get_object(Bucket=bucket, Key="whole")["Body"].read() == b"y" * 1000
