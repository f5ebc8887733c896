import pytest
from django.urls import reverse
from django.utils import timezone

from inventory.models import Host
from jobs.models import Worker
from tests import factories as f
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_admin_sees_hosts(login, admin_user, vault, vm):
    response = login(admin_user).get(reverse("host-list"))
    assert response.status_code == 200
    host = response.context["hosts"][0]
    assert (host.name, host.vm_count, host.vault_count) == ("host1", 1, 1)


def test_admin_registers_a_host(login, admin_user, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    response = login(admin_user).post(
        reverse("host-create"),
        {
            "name": "hv2",
            "snapshot_root": str(tmp_path / "snap"),
            "allowed_roots": f"{tmp_path / 'a'}\n\n{tmp_path / 'b'}\n",
        },
    )
    assert response.status_code == 302
    host = Host.objects.get(name="hv2")
    assert host.allowed_roots == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert AuditEvent.objects.filter(action="host.create").exists()


def test_it_refuses_missing_roots(login, admin_user, tmp_path):
    response = login(admin_user).post(
        reverse("host-create"),
        {"name": "hv2", "snapshot_root": str(tmp_path), "allowed_roots": str(tmp_path / "no")},
    )
    assert "Not a directory" in str(response.context["form"].errors["allowed_roots"])
    assert not Host.objects.filter(name="hv2").exists()


def test_it_refuses_relative_paths(login, admin_user):
    response = login(admin_user).post(
        reverse("host-create"),
        {"name": "hv2", "snapshot_root": "snap", "allowed_roots": "disks"},
    )
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "allowed_roots" in errors and "snapshot_root" in errors
    assert not Host.objects.filter(name="hv2").exists()


def test_admin_edits_a_host(login, admin_user, host, tmp_path):
    url = reverse("host-edit", args=["host1"])
    client = login(admin_user)
    assert str(host.allowed_roots[0]) in client.get(url).context["form"].initial["allowed_roots"]
    response = client.post(
        url,
        {"name": "host1", "snapshot_root": host.snapshot_root, "allowed_roots": str(tmp_path)},
    )
    assert response.status_code == 302
    host.refresh_from_db()
    assert host.allowed_roots == [str(tmp_path)]
    assert AuditEvent.objects.get(action="host.update").before["allowed_roots"] != [str(tmp_path)]


@pytest.mark.parametrize("persona", ["owner", "reader", "outsider"])
def test_non_admins_get_403(login, personas, persona, host):
    client = login(personas[persona])
    assert client.get(reverse("host-list")).status_code == 403
    assert client.get(reverse("host-create")).status_code == 403
    assert client.get(reverse("host-edit", args=["host1"])).status_code == 403


def test_it_keeps_its_query_budget(assert_query_budget, admin_user, tmp_path):
    def make_rows(n):
        for _ in range(n):
            n = Host.objects.count()
            f.make_host(tmp_path / f"h{n}", dedicated_worker=bool(n % 2))

    # Hosts, the dedicated hosts' workers, the list of workers.
    assert_query_budget(
        admin_user, reverse("host-list"), make_rows, 6, marker='href="/inventory/hosts/host'
    )


def test_hosts_page_shows_dedicated_workers_and_the_worker_list(login, admin_user, tmp_path):
    shared = f.make_host(tmp_path / "s", "lab-s")
    dedicated = f.make_host(tmp_path / "d", "lab-d", dedicated_worker=True)
    html = login(admin_user).get(reverse("host-list")).content.decode()
    assert "worker: offline (never started)" in html and "default worker" in html
    now = timezone.now()
    Worker.objects.create(
        queue="host-lab-d", host=dedicated, hostname="kvm1", pid=7, started_at=now, seen_at=now
    )
    html = login(admin_user).get(reverse("host-list")).content.decode()
    assert "worker: online" in html and "kvm1" in html and "host-lab-d" in html
    html = login(admin_user).get(reverse("host-edit", args=[dedicated.name])).content.decode()
    assert "worker: online" in html
    html = login(admin_user).get(reverse("host-edit", args=[shared.name])).content.decode()
    assert "worker:" not in html
