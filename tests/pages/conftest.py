"""Helpers for page tests: logging in a persona, checking query budgets at scale, and a real
recovery point (an ext4 image backed up in this process) for restore and file recovery."""

import random
from pathlib import Path

import pytest

from tests import factories as f


@pytest.fixture
def login(client):
    """`login(user)` → the test client, logged in as that persona."""

    def _login(user):
        client.force_login(user)
        return client

    return _login


HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def assert_query_budget(client, django_assert_max_num_queries):
    """Render `url` with 3 rows and with 50 rows under the same query budget.

    `make_rows(n)` adds n rows to whatever the page lists; `marker` (if given) must appear at
    least once per row, so the check proves the rows were actually rendered.
    """

    def check(user, url, make_rows, budget, marker=None):
        client.force_login(user)
        shown = 0
        for total in (3, 50):
            make_rows(total - shown)
            shown = total
            with django_assert_max_num_queries(budget):
                response = client.get(url)
            assert response.status_code == 200
            if marker is not None:
                assert response.content.decode().count(marker) >= total

    return check


# -- a real recovery point ----------------------------------------------------------------------

MIB = 1 << 20


def real_files() -> dict[str, bytes]:
    """What the real OS disk holds: a few small files and one of several chunks."""
    rng = random.Random(7)
    return {
        "/etc/hostname": b"files-01\n",
        "/data/sub/report.txt": b"".join(b"row %d\n" % i for i in range(5000)),
        "/data/sub/deeper/blob.bin": rng.randbytes(3 * MIB + 123),
        "/data/ünïcode näme.txt": "grüße\n".encode(),
    }


@pytest.fixture
def real_rp(vault, host, admin_user, quiet_heartbeat):
    """A stopped VM `files-01` whose OS disk is a real ext4 image, protected in `prod` and
    backed up in this process (snapshot and vault tier): `(rp, files, image)`.

    Needs a transactional database (`pytest.mark.django_db(transaction=True)`)."""
    from inventory.lab import images
    from inventory.models import Disk, VirtualMachine
    from jobs import runner
    from jobs.backup_queue import backup_now

    missing = images.missing_tools()
    if missing:
        pytest.skip(f"e2fsprogs tools missing: {', '.join(missing)}")
    files = real_files()
    image = Path(host.allowed_roots[0]) / "files-01-os.img"
    images.make_image(image, 16, "files01", files)
    vm = VirtualMachine.objects.create(name="files-01", host=host, power_state="stopped")
    Disk.objects.create(vm=vm, lun=-1, path=str(image), size=image.stat().st_size)
    item = f.make_protected_item(vault, vm)
    job = backup_now(item, by=admin_user)
    runner.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", (job.error_code, job.error_message)
    return job.recovery_point, files, image


# -- the pages over real HTTP, served as `manage.py runserver` serves them ------------------------


@pytest.fixture
def runserver(transactional_db):
    """A live server thread with `runserver`'s server class (portal/server.py); `.port`.

    An in-memory SQLite test database is shared with the server thread, as Django's own live
    server does."""
    from django.core.servers.basehttp import ThreadedWSGIServer
    from django.db import connections
    from django.test.testcases import LiveServerThread

    from portal.server import WSGIServer

    class Thread(LiveServerThread):
        server_class = type("Server", (ThreadedWSGIServer, WSGIServer), {})

    shared = {c.alias: c for c in connections.all() if c.vendor == "sqlite" and c.is_in_memory_db()}
    for conn in shared.values():
        conn.inc_thread_sharing()
    thread = Thread("localhost", lambda app: app, connections_override=shared)
    thread.daemon = True
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield thread
    thread.terminate()
    for conn in shared.values():
        conn.dec_thread_sharing()
