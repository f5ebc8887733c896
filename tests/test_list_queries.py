"""The main lists (what `bench/web_load.py` loads: the API's vaults, protected items, jobs
and VMs, and the pages of vaults, items, jobs and VMs) ask the database a fixed number of
queries, whatever the number of rows: 5 rows of each or 50 cost the same, within a budget."""

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import Operation, Status, SubTask
from portal.models import ApiToken
from security.models import Alert
from tests import factories as f
from vaults.models import Anomaly

# path → most queries one request may ask (the sign-in's own included: the token or the
# session and its user).
BUDGETS = {
    "/api/v1/vaults/": 4,
    "/api/v1/vaults/prod/protected-items/": 4,
    "/api/v1/vaults/prod/jobs/": 4,
    "/api/v1/vms/": 4,
    "/vaults/": 4,
    "/vaults/prod/items/": 5,
    "/vaults/prod/jobs/": 7,
    "/inventory/vms/": 5,
}


def add_rows(vault, host, admin, count: int) -> None:
    """`count` more VMs, each protected with recovery points, jobs of every kind (some
    running, with sub-tasks and progress) and an alert; and `count` more vaults."""
    for n in range(count):
        vm = f.make_vm(host, disks=((-1, 1 << 20), (0, 1 << 20)))
        vm.discovery_changes = [{"change": "added", "target": "vdb"}]
        vm.save(update_fields=["discovery_changes"])
        item = f.make_protected_item(
            vault, vm, last_backup_at=timezone.now(), last_backup_status=Status.COMPLETED
        )
        f.make_rp(item)
        f.make_rp(item, anomaly=Anomaly.SUSPICIOUS)
        running = f.make_job(
            vault,
            item,
            status=Status.IN_PROGRESS,
            started_at=timezone.now(),
            bytes_done=1 << 20,
            created_by=admin if n % 2 else None,
        )
        SubTask.objects.create(job=running, order=0, name="Take snapshot", status=Status.COMPLETED)
        SubTask.objects.create(
            job=running,
            order=1,
            name="Transfer data to vault",
            status=Status.IN_PROGRESS,
            started_at=timezone.now(),
            bytes_done=1 << 20,
        )
        f.make_job(vault, item, operation=Operation.RESTORE, created_by=admin)
        f.make_job(vault, item, status=Status.FAILED, error_code="snapshot_failed")
        Alert.objects.create(
            vault=vault, severity="sev1", kind="job_failed", message="x", dedup_key=f"{vm.name}"
        )
        other = f.make_vault(owner=admin)
        other.linked_hosts.add(host)


def queries(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return len(ctx.captured_queries)


@pytest.fixture
def clients(admin_user):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    _, key = ApiToken.issue(admin_user, "lists")
    api = Client(HTTP_AUTHORIZATION=f"Token {key}")
    page = Client()
    page.force_login(admin_user)
    # The token's first use records it (then at most once a minute): not a list's cost.
    api.get("/api/v1/vms/")
    return lambda path: api if path.startswith("/api/") else page


def test_the_main_lists_ask_as_many_queries_for_50_rows_as_for_5(vault, host, admin_user, clients):
    add_rows(vault, host, admin_user, 5)
    few = {path: queries(clients(path), path) for path in BUDGETS}
    add_rows(vault, host, admin_user, 45)
    many = {path: queries(clients(path), path) for path in BUDGETS}
    assert many == few
    over = {path: n for path, n in many.items() if n > BUDGETS[path]}
    assert not over, f"over budget: {over}"
