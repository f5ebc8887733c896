from datetime import timedelta

from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tests import factories as f
from vaults.models import AuditEvent, ItemState, ProtectedVM

LIST = reverse("api-protected-item-list", args=["prod"])


def detail(vm_name):
    return reverse("api-protected-item-detail", args=["prod", vm_name])


def enhanced(vault, name="Enh"):
    return f.make_policy(vault, name, kind="enhanced", instant_restore_days=7)


def test_operator_protects_a_vm(api, vault, vm, operator):
    r = api(operator).post(LIST, {"vm": vm.pk, "policy": "DefaultPolicy"}, REMOTE_ADDR="192.0.2.7")
    assert r.status_code == 201, r.data
    assert r.data["vm_name"] == "web-01" and r.data["policy"] == "DefaultPolicy"
    assert r.data["state"] == "initial_backup_pending"
    assert r.data["recovery_points"] == 0 and r.data["retention_mode"] is None
    event = AuditEvent.objects.get(action="protection.enable")
    assert event.actor == operator and event.source_ip == "192.0.2.7"


def test_reader_gets_403_protecting(api, vault, vm, reader):
    assert api(reader).post(LIST, {"vm": vm.pk, "policy": "DefaultPolicy"}).status_code == 403


def test_outsider_gets_404_protecting(api, vault, vm, outsider):
    assert api(outsider).post(LIST, {"vm": vm.pk, "policy": "DefaultPolicy"}).status_code == 404


def test_it_refuses_a_vm_on_an_unlinked_host(api, vault, admin_user, tmp_path):
    stray = f.make_vm(f.make_host(tmp_path / "h2", name="host2"), name="stray")
    r = api(admin_user).post(LIST, {"vm": stray.pk, "policy": "DefaultPolicy"})
    assert r.status_code == 400 and list(r.data) == ["vm"]
    assert "not linked" in r.data["vm"][0]


def test_it_does_not_show_operators_vms_they_cannot_see(api, vault, operator, tmp_path):
    stray = f.make_vm(f.make_host(tmp_path / "h2", name="host2"), name="stray")
    r = api(operator).post(LIST, {"vm": stray.pk, "policy": "DefaultPolicy"})
    assert r.status_code == 400 and r.data == {"vm": [f"No VM with id {stray.pk}."]}


def test_it_refuses_a_vm_protected_in_another_vault(api, vault, vm, host, admin_user):
    other = f.make_vault("other", owner=admin_user)
    other.linked_hosts.add(host)
    f.make_protected_item(other, vm)
    r = api(admin_user).post(LIST, {"vm": vm.pk, "policy": "DefaultPolicy"})
    assert r.status_code == 400 and "already protected in vault other" in r.data["vm"][0]


def test_it_refuses_lun_selection_on_a_standard_policy(api, vault, vm, operator):
    r = api(operator).post(LIST, {"vm": vm.pk, "policy": "DefaultPolicy", "included_luns": [0]})
    assert r.status_code == 400 and list(r.data) == ["included_luns"]
    assert "enhanced" in r.data["included_luns"][0]


def test_it_refuses_an_unknown_lun(api, vault, vm, operator):
    enhanced(vault)
    r = api(operator).post(LIST, {"vm": vm.pk, "policy": "Enh", "excluded_luns": [7]})
    assert r.status_code == 400 and list(r.data) == ["excluded_luns"]
    assert "7" in r.data["excluded_luns"][0]


def test_it_accepts_a_lun_selection_on_an_enhanced_policy(api, vault, vm, operator):
    enhanced(vault)
    r = api(operator).post(LIST, {"vm": vm.pk, "policy": "Enh", "included_luns": [0]})
    assert r.status_code == 201, r.data
    assert r.data["included_luns"] == [0] and r.data["excluded_luns"] is None


def test_it_names_bad_protect_input(api, vault, vm, operator):
    client = api(operator)
    r = client.post(LIST, {"vm": vm.pk, "policy": "Nope"})
    assert r.status_code == 400 and list(r.data) == ["policy"]
    r = client.post(LIST, {"vm": str(vm.pk), "policy": "DefaultPolicy", "luns": []})
    assert r.status_code == 400 and set(r.data) == {"vm", "luns"}
    r = client.post(LIST, {"vm": vm.pk, "policy": "DefaultPolicy", "included_luns": ["0"]})
    assert r.status_code == 400 and list(r.data) == ["included_luns"]
    r = client.post(LIST, {"policy": "DefaultPolicy"})
    assert r.status_code == 400 and list(r.data) == ["vm"]


def test_reader_reads_an_item(api, rp, reader):
    r = api(reader).get(detail("web-01"))
    assert r.status_code == 200
    assert r.data["state"] == "protected" and r.data["recovery_points"] == 1
    assert api(reader).get(detail("nope")).status_code == 404


def test_a_vm_name_means_the_same_item_on_the_page_and_in_the_api(
    api, client, vault, vm, item, reader
):
    """The live item if there is one, else the newest: a soft-deleted item of the VM that is
    newer than its live one does not hide it from either door."""
    binned = f.make_protected_item(vault, vm, state=ItemState.SOFT_DELETED)
    ProtectedVM.objects.filter(pk=binned.pk).update(created_at=item.created_at + timedelta(days=1))
    r = api(reader).get(detail("web-01"))
    assert r.status_code == 200 and r.data["state"] == "protected"
    client.force_login(reader)
    page = client.get(reverse("item-detail", args=["prod", "web-01"]))
    assert page.status_code == 200 and page.context["item"] == item
    ProtectedVM.objects.filter(pk=item.pk).update(state=ItemState.SOFT_DELETED)
    newest = ProtectedVM.objects.get(pk=binned.pk).created_at
    assert parse_datetime(api(reader).get(detail("web-01")).data["created_at"]) == newest
    assert client.get(reverse("item-detail", args=["prod", "web-01"])).context["item"] == binned


def test_contributor_moves_an_item_to_another_policy(api, item, contributor):
    enhanced(item.vault)
    r = api(contributor).patch(detail("web-01"), {"policy": "Enh", "excluded_luns": [0]})
    assert r.status_code == 200, r.data
    item.refresh_from_db()
    assert item.policy.name == "Enh" and item.excluded_luns == [0]
    assert AuditEvent.objects.filter(action="protection.update", actor=contributor).exists()


def test_operator_gets_403_changing_an_item(api, item, operator):
    assert api(operator).patch(detail("web-01"), {"policy": "DefaultPolicy"}).status_code == 403


def test_state_is_read_only(api, item, contributor):
    client = api(contributor)
    body = client.get(detail("web-01")).data
    assert client.patch(detail("web-01"), body).status_code == 200
    r = client.patch(detail("web-01"), {"state": "protection_stopped"})
    assert r.status_code == 400 and r.data == {"state": ["This field is read-only."]}
    item.refresh_from_db()
    assert item.state == ItemState.PROTECTED


def test_it_keeps_the_item_list_query_count_flat(api, vault, host, reader, assert_flat_queries):
    def make(n):
        for _ in range(n):
            item = f.make_protected_item(vault, f.make_vm(host))
            f.make_rp(item)

    assert_flat_queries(api(reader), LIST, make, budget=4)
    assert ProtectedVM.objects.count() == 50


def test_it_refuses_moving_to_shorter_retention_in_an_immutable_vault(api, item, contributor):
    f.make_policy(item.vault, "Short", retention={"daily": {"days": 7}})
    item.vault.immutability = "unlocked"
    item.vault.save()
    r = api(contributor).patch(detail("web-01"), {"policy": "Short"})
    assert r.status_code == 409 and r.data["rule"] == "immutability", r.data


def test_the_list_and_an_item_count_live_recovery_points_only(api, vault, item, reader, host):
    f.make_rp(item)
    f.make_rp(item)
    f.make_rp(item, soft_deleted_at=timezone.now())
    other = f.make_protected_item(vault, f.make_vm(host))
    f.make_rp(other)
    r = api(reader).get(LIST)
    assert r.status_code == 200
    assert {row["vm_name"]: row["recovery_points"] for row in r.data["results"]} == {
        "web-01": 2,
        other.vm.name: 1,
    }
    assert r.data["count"] == 2
    assert api(reader).get(detail("web-01")).data["recovery_points"] == 2
