from django.urls import reverse
from django.utils import timezone

from inventory.models import Host
from jobs.models import Worker
from tests import factories as f
from vaults.models import AuditEvent

LIST = reverse("api-host-list")


def detail(pk):
    return reverse("api-host-detail", args=[pk])


def body(root, **overrides):
    (root / "disks").mkdir(parents=True, exist_ok=True)
    data = {
        "name": "host9",
        "snapshot_root": str(root / "snap"),
        "allowed_roots": [str(root / "disks")],
    }
    data.update(overrides)
    return data


def test_admin_registers_a_host(api, admin_user, tmp_path):
    r = api(admin_user).post(LIST, body(tmp_path))
    assert r.status_code == 201, r.data
    assert r.data["connector"] == "image"
    assert set(r.data) == {
        "id",
        "name",
        "connector",
        "libvirt_uri",
        "snapshot_root",
        "allowed_roots",
        "dedicated_worker",
        "worker",
        "created_at",
    }
    assert (r.data["dedicated_worker"], r.data["worker"]) == (False, None)
    assert AuditEvent.objects.filter(action="host.create").exists()


def test_a_dedicated_host_shows_its_worker(
    api, admin_user, tmp_path, django_assert_max_num_queries
):
    host = f.make_host(tmp_path / "d", "lab-d", dedicated_worker=True)
    for i in range(3):
        f.make_host(tmp_path / f"h{i}", dedicated_worker=bool(i % 2))
    r = api(admin_user).get(detail(host.pk))
    assert r.data["worker"] == {
        "online": False,
        "last_seen": None,
        "status": "offline (never started)",
    }
    now = timezone.now()
    Worker.objects.create(
        queue="host-lab-d", host=host, hostname="h", pid=1, started_at=now, seen_at=now
    )
    r = api(admin_user).patch(detail(host.pk), {"dedicated_worker": True})
    assert r.status_code == 200, r.data
    assert (r.data["worker"]["online"], r.data["worker"]["status"]) == (True, "online")
    # The list reads every host's worker in one query.
    with django_assert_max_num_queries(8) as queries:
        rows = api(admin_user).get(LIST).data["results"]
    assert sum("jobs_worker" in q["sql"] for q in queries.captured_queries) == 1
    shown = {row["name"]: row["worker"] is not None for row in rows}
    assert shown == {h.name: h.dedicated_worker for h in Host.objects.all()}


def test_owner_gets_403_registering_a_host(api, vault, owner, tmp_path):
    assert api(owner).post(LIST, body(tmp_path)).status_code == 403


def test_it_checks_host_paths_and_names(api, admin_user, host, tmp_path):
    client = api(admin_user)
    r = client.post(LIST, body(tmp_path, snapshot_root="relative/snap"))
    assert r.status_code == 400 and list(r.data) == ["snapshot_root"]
    r = client.post(LIST, body(tmp_path, allowed_roots=[str(tmp_path / "missing")]))
    assert r.status_code == 400 and list(r.data) == ["allowed_roots"]
    r = client.post(LIST, body(tmp_path, allowed_roots=[]))
    assert r.status_code == 400 and list(r.data) == ["allowed_roots"]
    r = client.post(LIST, body(tmp_path, name="host1"))
    assert r.status_code == 400 and list(r.data) == ["name"]
    r = client.post(LIST, body(tmp_path, allowed_roots="/srv"))
    assert r.status_code == 400 and list(r.data) == ["allowed_roots"]


def test_members_see_only_linked_hosts(api, vault, host, reader, outsider, tmp_path):
    other = f.make_host(tmp_path / "h2", name="host2")
    assert [h["name"] for h in api(reader).get(LIST).data["results"]] == ["host1"]
    assert api(reader).get(detail(host.pk)).status_code == 200
    assert api(reader).get(detail(other.pk)).status_code == 404
    assert api(outsider).get(LIST).data["count"] == 0
    assert api(outsider).get(detail(host.pk)).status_code == 404


def test_reader_gets_403_changing_a_visible_host_and_404_an_invisible_one(
    api, vault, host, reader, tmp_path
):
    other = f.make_host(tmp_path / "h2", name="host2")
    assert api(reader).patch(detail(host.pk), {"name": "x"}).status_code == 403
    assert api(reader).patch(detail(other.pk), {"name": "x"}).status_code == 404


def test_admin_renames_a_host(api, admin_user, host):
    r = api(admin_user).patch(detail(host.pk), {"name": "renamed"})
    assert r.status_code == 200, r.data
    host.refresh_from_db()
    assert host.name == "renamed"


def test_it_refuses_allowed_roots_that_would_strand_disks(api, admin_user, vm, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = api(admin_user).patch(detail(vm.host_id), {"allowed_roots": [str(elsewhere)]})
    assert r.status_code == 400 and list(r.data) == ["allowed_roots"]


def test_it_refuses_deleting_a_host_with_vms(api, admin_user, vm):
    r = api(admin_user).delete(detail(vm.host_id))
    assert r.status_code == 400 and "VM" in r.data["detail"]


def test_admin_deletes_an_empty_host(api, admin_user, host):
    assert api(admin_user).delete(detail(host.pk)).status_code == 204
    assert not Host.objects.filter(pk=host.pk).exists()


def test_it_keeps_the_host_list_query_count_flat(api, vault, reader, tmp_path, assert_flat_queries):
    def make(n):
        for _ in range(n):
            i = Host.objects.count()
            vault.linked_hosts.add(f.make_host(tmp_path / f"h{i}", name=f"h{i}"))

    assert_flat_queries(api(reader), LIST, make, budget=3)
