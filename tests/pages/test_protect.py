import pytest
from django.urls import reverse

from tests import factories as f
from vaults.models import AuditEvent, ProtectedVM

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/protect/"


@pytest.fixture
def db_vm(host):
    return f.make_vm(host, name="db-01", disks=((-1, 1 << 20), (0, 1 << 20), (1, 1 << 20)))


def test_operator_sees_only_unprotected_vms_of_linked_hosts(login, operator, item, db_vm, tmp_path):
    other_host = f.make_host(tmp_path / "h2", name="unlinked")
    f.make_vm(other_host, name="elsewhere")
    response = login(operator).get(URL)
    assert response.status_code == 200
    choices = [vm.name for vm in response.context["form"].fields["vm"].queryset]
    assert choices == ["db-01"]


def test_operator_protects_a_vm(login, operator, vault, db_vm):
    response = login(operator).post(
        URL, {"vm": "db-01", "policy": "DefaultPolicy", "disk_selection": "all"}
    )
    assert response.status_code == 302
    assert response.url == reverse("item-detail", args=["prod", "db-01"])
    item = ProtectedVM.objects.get(vm=db_vm)
    assert item.vault == vault
    assert item.included_luns is None and item.excluded_luns is None
    assert AuditEvent.objects.filter(action="protection.enable").exists()


def test_it_refuses_disk_selection_with_a_standard_policy(login, operator, vault, db_vm):
    response = login(operator).post(
        URL,
        {"vm": "db-01", "policy": "DefaultPolicy", "disk_selection": "include", "luns": "0"},
    )
    assert response.status_code == 200
    assert "enhanced policy" in str(response.context["form"].errors["luns"])
    assert not ProtectedVM.objects.filter(vm=db_vm).exists()


def test_it_protects_selected_disks_with_an_enhanced_policy(login, operator, vault, db_vm):
    f.make_policy(vault, "Hourly", kind="enhanced", instant_restore_days=7)
    response = login(operator).post(
        URL, {"vm": "db-01", "policy": "Hourly", "disk_selection": "exclude", "luns": "1"}
    )
    assert response.status_code == 302
    assert ProtectedVM.objects.get(vm=db_vm).excluded_luns == [1]


def test_it_names_unknown_luns(login, operator, vault, db_vm):
    f.make_policy(vault, "Hourly", kind="enhanced", instant_restore_days=7)
    response = login(operator).post(
        URL, {"vm": "db-01", "policy": "Hourly", "disk_selection": "include", "luns": "7"}
    )
    assert "LUN(s) 7" in str(response.context["form"].errors["luns"])


def test_it_refuses_an_already_protected_vm(login, operator, item):
    response = login(operator).post(
        URL, {"vm": "web-01", "policy": "DefaultPolicy", "disk_selection": "all"}
    )
    assert response.status_code == 200
    assert "vm" in response.context["form"].errors


def test_reader_gets_403(login, reader, vault, db_vm):
    assert login(reader).get(URL).status_code == 403
    response = login(reader).post(
        URL, {"vm": "db-01", "policy": "DefaultPolicy", "disk_selection": "all"}
    )
    assert response.status_code == 403
