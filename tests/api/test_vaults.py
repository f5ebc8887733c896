import pytest
from django.urls import reverse

from policies.models import BackupPolicy
from tests import factories as f
from vaults.models import AuditEvent, Role, Vault


def test_admin_creates_a_vault_and_becomes_its_owner(api, admin_user, host):
    r = api(admin_user).post(
        reverse("api-vault-list"),
        {"name": "lab", "linked_hosts": [host.pk]},
        REMOTE_ADDR="10.1.2.3",
    )
    assert r.status_code == 201, r.data
    assert r.data["name"] == "lab"
    assert r.data["role"] == "owner"
    assert r.data["linked_hosts"] == [host.pk]
    assert r.data["soft_delete_days"] == 14
    vault = Vault.objects.get(name="lab")
    assert vault.memberships.get(user=admin_user).role == Role.OWNER
    assert vault.policies.filter(name=BackupPolicy.DEFAULT_NAME).exists()
    event = AuditEvent.objects.get(action="vault.create")
    assert event.actor == admin_user and event.source_ip == "10.1.2.3"


def test_owner_cannot_create_a_vault(api, vault, owner):
    r = api(owner).post(reverse("api-vault-list"), {"name": "lab"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    "name",
    ["a", "a" * 51, "1abc", "my_vault", "PROD", "has space"],
    ids=["one-char", "51-chars", "digit-first", "underscore", "duplicate", "space"],
)
def test_it_refuses_bad_vault_names(api, vault, admin_user, name):
    r = api(admin_user).post(reverse("api-vault-list"), {"name": name})
    assert r.status_code == 400
    assert list(r.data) == ["name"]


def test_it_accepts_the_longest_and_shortest_names(api, admin_user):
    client = api(admin_user)
    assert client.post(reverse("api-vault-list"), {"name": "ab"}).status_code == 201
    assert client.post(reverse("api-vault-list"), {"name": "a" * 50}).status_code == 201


def test_it_lists_only_visible_vaults(api, vault, reader, outsider, admin_user):
    f.make_vault("other", owner=admin_user)
    assert [v["name"] for v in api(reader).get(reverse("api-vault-list")).data["results"]] == [
        "prod"
    ]
    assert api(outsider).get(reverse("api-vault-list")).data["count"] == 0
    assert api(admin_user).get(reverse("api-vault-list")).data["count"] == 2


def test_reader_sees_role_and_capabilities(api, vault, reader, host):
    r = api(reader).get(reverse("api-vault-detail", args=["prod"]))
    assert r.status_code == 200
    assert r.data["role"] == "reader"
    assert r.data["capabilities"]["view"] is True
    assert r.data["capabilities"]["protect"] is False
    assert r.data["linked_hosts"] == [host.pk]
    assert {"store_location", "soft_delete_state", "immutability", "mua_enabled"} <= set(r.data)


def test_outsider_gets_404_on_every_method(api, vault, outsider):
    client = api(outsider)
    url = reverse("api-vault-detail", args=["prod"])
    assert client.get(url).status_code == 404
    assert client.patch(url, {"mua_enabled": True}).status_code == 404
    assert client.delete(url).status_code == 404


def test_approver_gets_404(api, vault, approver):
    assert api(approver).get(reverse("api-vault-detail", args=["prod"])).status_code == 404


def test_operator_gets_403_changing_settings(api, vault, operator):
    r = api(operator).patch(reverse("api-vault-detail", args=["prod"]), {"mua_enabled": True})
    assert r.status_code == 403


def test_contributor_changes_settings(api, vault, contributor):
    r = api(contributor).patch(
        reverse("api-vault-detail", args=["prod"]),
        {"soft_delete_days": 30, "immutability": "unlocked"},
    )
    assert r.status_code == 200, r.data
    vault.refresh_from_db()
    assert (vault.soft_delete_days, vault.immutability) == (30, "unlocked")
    assert AuditEvent.objects.filter(action="vault.update", actor=contributor).exists()


def test_it_accepts_a_get_sent_back_unchanged(api, vault, contributor):
    client = api(contributor)
    url = reverse("api-vault-detail", args=["prod"])
    body = client.get(url).data
    r = client.patch(url, body)
    assert r.status_code == 200, r.data
    assert r.data == body
    # Nothing changed, so nothing is audited.
    assert not AuditEvent.objects.filter(action__startswith="vault.").exists()


def test_it_changes_nothing_when_one_setting_is_wrong(api, vault, contributor):
    r = api(contributor).patch(
        reverse("api-vault-detail", args=["prod"]),
        {"mua_enabled": True, "soft_delete_days": 13},
    )
    assert r.status_code == 400 and list(r.data) == ["soft_delete_days"]
    vault.refresh_from_db()
    assert vault.mua_enabled is False


def test_it_refuses_turning_off_always_on_soft_delete(api, admin_user):
    f.make_vault("locked", owner=admin_user, soft_delete_state="always_on")
    r = api(admin_user).patch(
        reverse("api-vault-detail", args=["locked"]), {"soft_delete_state": "enabled"}
    )
    assert r.status_code == 409, r.data
    assert r.data["rule"] == "soft_delete_always_on" and "Always-on" in r.data["detail"]


def test_contributor_cannot_move_the_vault_store(api, vault, contributor):
    r = api(contributor).patch(
        reverse("api-vault-detail", args=["prod"]), {"store_location": "/etc"}
    )
    assert r.status_code == 403


def test_contributor_cannot_change_linked_hosts(api, vault, contributor):
    r = api(contributor).patch(reverse("api-vault-detail", args=["prod"]), {"linked_hosts": []})
    assert r.status_code == 403
    assert vault.linked_hosts.count() == 1


def test_admin_links_and_unlinks_hosts(api, vault, admin_user, host, tmp_path):
    other = f.make_host(tmp_path / "h2", name="host2")
    client = api(admin_user)
    url = reverse("api-vault-detail", args=["prod"])
    r = client.patch(url, {"linked_hosts": [other.pk]})
    assert r.status_code == 200, r.data
    assert r.data["linked_hosts"] == [other.pk]
    assert AuditEvent.objects.filter(action="vault.unlink_host").count() == 1


def test_it_refuses_unlinking_a_host_with_protected_vms(api, item, admin_user):
    r = api(admin_user).patch(reverse("api-vault-detail", args=["prod"]), {"linked_hosts": []})
    assert r.status_code == 400 and list(r.data) == ["linked_hosts"]


def test_it_names_unknown_hosts(api, vault, admin_user):
    r = api(admin_user).patch(reverse("api-vault-detail", args=["prod"]), {"linked_hosts": [9999]})
    assert r.status_code == 400 and list(r.data) == ["linked_hosts"]


def test_owner_deletes_an_empty_vault(api, vault, owner):
    r = api(owner).delete(reverse("api-vault-detail", args=["prod"]))
    assert r.status_code == 204
    assert not Vault.objects.filter(name="prod").exists()


def test_contributor_cannot_delete_the_vault(api, vault, contributor):
    assert api(contributor).delete(reverse("api-vault-detail", args=["prod"])).status_code == 403


def test_it_refuses_deleting_a_vault_that_holds_data(api, rp, owner):
    r = api(owner).delete(reverse("api-vault-detail", args=["prod"]))
    assert r.status_code == 400
    assert "Stop protection" in r.data["detail"]
    assert Vault.objects.filter(name="prod").exists()


def test_it_keeps_the_vault_list_query_count_flat(
    api, admin_user, host, reader, assert_flat_queries
):
    def make(n):
        for _ in range(n):
            v = f.make_vault(owner=admin_user)
            v.linked_hosts.add(host)
            f.add_member(v, reader, Role.READER)

    assert_flat_queries(api(reader), reverse("api-vault-list"), make, budget=4)
