from django.urls import reverse

from tests import factories as f
from vaults.models import AuditEvent, Role, VaultMembership


def url(*args):
    return reverse(
        "api-vault-member-list" if not args else "api-vault-member-detail", args=["prod", *args]
    )


def test_reader_lists_members(api, vault, reader):
    r = api(reader).get(url())
    assert r.status_code == 200
    roles = {m["user"]: m["role"] for m in r.data["results"]}
    assert roles["owner"] == "owner" and roles["reader"] == "reader"


def test_outsider_gets_404_listing_members(api, vault, outsider):
    assert api(outsider).get(url()).status_code == 404


def test_owner_adds_a_member(api, vault, owner, outsider):
    r = api(owner).post(url(), {"user": "outsider", "role": "operator"})
    assert r.status_code == 201, r.data
    assert r.data["user"] == "outsider" and r.data["role"] == "operator"
    assert VaultMembership.objects.get(vault=vault, user=outsider).role == Role.OPERATOR
    assert AuditEvent.objects.filter(action="membership.create", actor=owner).exists()


def test_contributor_gets_403_adding_a_member(api, vault, contributor, outsider):
    r = api(contributor).post(url(), {"user": "outsider", "role": "reader"})
    assert r.status_code == 403


def test_it_names_an_unknown_user_or_role(api, vault, owner):
    r = api(owner).post(url(), {"user": "nobody", "role": "reader"})
    assert r.status_code == 400 and list(r.data) == ["user"]
    r = api(owner).post(url(), {"user": "outsider", "role": "admin"})
    assert r.status_code == 400 and list(r.data) == ["role"]


def test_it_refuses_a_second_role_for_a_member(api, vault, owner):
    r = api(owner).post(url(), {"user": "reader", "role": "operator"})
    assert r.status_code == 400 and list(r.data) == ["user"]


def test_owner_changes_a_role(api, vault, owner, reader):
    m = VaultMembership.objects.get(vault=vault, user=reader)
    r = api(owner).patch(url(m.pk), {"role": "contributor"})
    assert r.status_code == 200, r.data
    m.refresh_from_db()
    assert m.role == Role.CONTRIBUTOR


def test_owner_removes_a_member(api, vault, owner, reader):
    m = VaultMembership.objects.get(vault=vault, user=reader)
    assert api(owner).delete(url(m.pk)).status_code == 204
    assert not VaultMembership.objects.filter(pk=m.pk).exists()
    # The removed reader no longer sees the vault.
    assert api(reader).get(reverse("api-vault-detail", args=["prod"])).status_code == 404


def test_it_keeps_the_last_owner(api, vault, owner):
    m = VaultMembership.objects.get(vault=vault, user=owner)
    # The admin's own owner membership (from creating the vault) goes first.
    VaultMembership.objects.filter(vault=vault, role=Role.OWNER).exclude(pk=m.pk).delete()
    r = api(owner).delete(url(m.pk))
    assert r.status_code == 400 and "owner" in r.data["detail"]
    r = api(owner).patch(url(m.pk), {"role": "reader"})
    assert r.status_code == 400 and list(r.data) == ["role"]


def test_it_answers_404_for_a_member_of_another_vault(api, vault, owner, admin_user):
    other = f.make_vault("other", owner=admin_user)
    m = other.memberships.get()
    assert api(owner).delete(url(m.pk)).status_code == 404


def test_it_keeps_the_member_list_query_count_flat(api, vault, reader, assert_flat_queries):
    def make(n):
        for _ in range(n):
            f.add_member(vault, f.make_user(), Role.READER)

    assert_flat_queries(api(reader), url(), make, budget=4)
