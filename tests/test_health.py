"""`/healthz` for load balancers and the site administrators' detailed health: real stores
(made by the engine, moved away and back), a real object-storage endpoint that does not
answer, and a database connection pointed where no database is."""

import json
import shutil
import socket
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ

import engine
from jobs.models import Worker
from security.kek import kek_for
from tests import factories as f
from vaults.models import StorageTarget


def healthz(client):
    response = client.get("/healthz")
    return response.status_code, json.loads(response.content)


@pytest.fixture
def stored_vault(db, admin_user):
    """A vault whose store exists (made by the engine) and holds a recovery point's row."""
    vault = f.make_vault("kept", owner=admin_user)
    engine.init_store(vault.vault_location, kek_for(vault))
    host = f.make_host(vault.store_path.parent.parent / "host", name="h1")
    f.make_rp(f.make_protected_item(vault, f.make_vm(host, name="vm1")))
    return vault


def test_it_says_ok_or_fail_per_check_and_nothing_more(client, stored_vault):
    status, body = healthz(client)
    assert status == 200
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "stores", "queue", "workers"}
    assert set(body["checks"].values()) <= {"ok", "fail"}
    assert body["checks"]["database"] == body["checks"]["stores"] == "ok"
    # No locations, errors, hostnames or numbers for whoever asks.
    assert "kept" not in json.dumps(body) and "/" not in json.dumps(body)


def test_a_store_that_goes_missing_fails_it_and_comes_back(client, stored_vault):
    store = stored_vault.store_path
    aside = store.with_name("aside")
    store.rename(aside)  # the disk holding it is not mounted
    try:
        status, body = healthz(client)
        assert (status, body["status"], body["checks"]["stores"]) == (503, "fail", "fail")
        assert body["checks"]["database"] == "ok"
    finally:
        aside.rename(store)
    status, body = healthz(client)
    assert (status, body["checks"]["stores"]) == (200, "ok")


def test_a_vault_without_recovery_points_needs_no_store_yet(client, admin_user):
    f.make_vault("fresh", owner=admin_user)
    status, body = healthz(client)
    assert (status, body["checks"]["stores"]) == (200, "ok")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens


def test_an_object_store_that_does_not_answer_fails_in_time(
    client, admin_user, settings, monkeypatch
):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "HEALTH_STORE_TIMEOUT_SECONDS": 2}
    monkeypatch.setenv("HEALTH_S3_ID", "id")
    monkeypatch.setenv("HEALTH_S3_KEY", "key")
    target = StorageTarget.objects.create(
        name="gone",
        kind="s3",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        region="us-east-1",
        path_style=True,
        credentials_env={"access_key_id": "HEALTH_S3_ID", "secret_access_key": "HEALTH_S3_KEY"},
    )
    f.make_vault("remote", owner=admin_user, store_location="s3://bucket/x", storage_target=target)
    started = timezone.now()
    status, body = healthz(client)
    assert (status, body["checks"]["stores"]) == (503, "fail")
    assert timezone.now() - started < timedelta(seconds=10)


@pytest.fixture
def database_gone(transactional_db):
    """The default connection pointed where no database answers, then back. An in-memory
    SQLite test database would vanish if closed: its connection is kept aside meanwhile."""
    connection.ensure_connection()
    saved, raw = dict(connection.settings_dict), connection.connection
    connection.connection = None
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = "/nonexistent-lifeboat-dir/db.sqlite3"
    else:
        connection.settings_dict["PORT"] = str(_closed_port())
        connection.settings_dict["HOST"] = "127.0.0.1"
    back = []

    def restore():
        if back:
            return
        back.append(True)
        if connection.connection is not None:
            connection.connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        connection.connection = raw

    yield restore
    restore()


@pytest.mark.django_db(transaction=True)
def test_a_database_that_does_not_answer_fails_it_and_comes_back(client, database_gone):
    status, body = healthz(client)
    assert (status, body["status"], body["checks"]["database"]) == (503, "fail", "fail")
    database_gone()
    status, body = healthz(client)
    assert (status, body["checks"]["database"]) == (200, "ok")


def test_workers_and_queue_fail_without_making_the_server_unfit(client, db):
    OrmQ.objects.create(key="lifeboat", payload="x", lock=timezone.now() - timedelta(hours=1))
    status, body = healthz(client)
    assert status == 200  # a balancer keeps this web server
    assert body["checks"]["queue"] == body["checks"]["workers"] == "fail"


def test_site_admins_see_every_finding(client, admin_user, stored_vault):
    now = timezone.now()
    Worker.objects.create(
        queue="lifeboat", hostname="backup-1", pid=42, started_at=now, seen_at=now
    )
    client.force_login(admin_user)
    page = client.get("/health/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "kept: vault store" in html and str(stored_vault.store_path) in html
    assert "lifeboat on backup-1 pid 42" in html
    free = shutil.disk_usage(stored_vault.store_path).free
    api = client.get("/api/v1/health/").json()
    stores = next(c for c in api["checks"] if c["name"] == "stores")
    (finding,) = stores["findings"]
    assert finding["ok"] and abs(finding["free_bytes"] - free) < 1 << 30
    workers = next(c for c in api["checks"] if c["name"] == "workers")
    assert workers["ok"] and workers["findings"][0]["what"] == "queue lifeboat"


def test_a_host_without_its_worker_fails_the_workers_check(client, admin_user, tmp_path):
    f.make_host(tmp_path / "h", name="kvm1", dedicated_worker=True)
    client.force_login(admin_user)
    api = client.get("/api/v1/health/").json()
    workers = next(c for c in api["checks"] if c["name"] == "workers")
    host = next(x for x in workers["findings"] if x["what"] == "host worker kvm1")
    assert not host["ok"] and "never started" in host["text"]


def test_balancers_may_ask_with_head(client, db):
    response = client.head("/healthz")
    assert response.status_code == 200 and response.content == b""
