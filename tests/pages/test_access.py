import pytest
from django.urls import reverse

from tests import factories as f
from vaults.models import GuardApprover, Role, VaultMembership

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/access/"


def test_reader_sees_members_without_controls(login, reader, vault):
    response = login(reader).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    for name in ("owner", "contributor", "operator", "reader", "approver"):
        assert name in html
    assert "member_form" not in response.context
    assert "guard_form" not in response.context
    assert reverse("vault-member-add", args=["prod"]) not in html


def test_owner_adds_and_removes_a_member(login, owner, vault):
    newbie = f.make_user("newbie")
    client = login(owner)
    assert "member_form" in client.get(URL).context
    response = client.post(
        reverse("vault-member-add", args=["prod"]), {"username": "newbie", "role": "operator"}
    )
    assert response.status_code == 302
    membership = VaultMembership.objects.get(vault=vault, user=newbie)
    assert membership.role == Role.OPERATOR
    response = client.post(reverse("vault-member-remove", args=["prod", membership.pk]))
    assert response.status_code == 302
    assert not VaultMembership.objects.filter(vault=vault, user=newbie).exists()


def test_it_names_an_unknown_user_next_to_the_field(login, owner, vault):
    response = login(owner).post(
        reverse("vault-member-add", args=["prod"]), {"username": "ghost", "role": "reader"}
    )
    assert response.status_code == 400
    assert "No active user named ghost" in str(response.context["member_form"].errors["username"])


def test_it_refuses_a_second_role(login, owner, vault, reader):
    response = login(owner).post(
        reverse("vault-member-add", args=["prod"]), {"username": "reader", "role": "owner"}
    )
    assert "already has a role" in str(response.context["member_form"].errors["username"])


def test_it_keeps_the_last_owner(login, admin_user, vault, owner):
    client = login(admin_user)
    for m in vault.memberships.filter(role=Role.OWNER):
        client.post(reverse("vault-member-remove", args=["prod", m.pk]))
    assert vault.memberships.filter(role=Role.OWNER).count() == 1


def test_contributor_cannot_assign_roles(login, contributor, vault):
    response = login(contributor).post(
        reverse("vault-member-add", args=["prod"]), {"username": "outsider", "role": "owner"}
    )
    assert response.status_code == 403


def test_owner_cannot_assign_guard_approvers(login, owner, vault, outsider):
    assert "guard_form" not in login(owner).get(URL).context
    response = login(owner).post(
        reverse("vault-guard-add", args=["prod"]), {"username": "outsider"}
    )
    assert response.status_code == 403


def test_admin_assigns_and_removes_a_guard_approver(login, admin_user, vault, outsider):
    client = login(admin_user)
    response = client.post(reverse("vault-guard-add", args=["prod"]), {"username": "outsider"})
    assert response.status_code == 302
    guard = GuardApprover.objects.get(vault=vault, user=outsider)
    response = client.post(reverse("vault-guard-remove", args=["prod", guard.pk]))
    assert response.status_code == 302
    assert not GuardApprover.objects.filter(pk=guard.pk).exists()


def test_admin_links_and_unlinks_hosts(login, admin_user, vault, host, tmp_path):
    other = f.make_host(tmp_path / "h2", name="host2")
    client = login(admin_user)
    response = client.post(reverse("vault-host-link", args=["prod"]), {"host": other.pk})
    assert response.status_code == 302
    assert vault.linked_hosts.filter(pk=other.pk).exists()
    response = client.post(reverse("vault-host-unlink", args=["prod", other.pk]))
    assert response.status_code == 302
    assert not vault.linked_hosts.filter(pk=other.pk).exists()


def test_it_keeps_a_host_linked_while_its_vms_are_protected(login, admin_user, vault, item, host):
    response = login(admin_user).post(
        reverse("vault-host-unlink", args=["prod", host.pk]), follow=True
    )
    assert vault.linked_hosts.filter(pk=host.pk).exists()
    assert "stop their protection" in response.content.decode()


def test_owner_cannot_link_hosts(login, owner, vault, tmp_path):
    other = f.make_host(tmp_path / "h2", name="host2")
    response = login(owner).post(reverse("vault-host-link", args=["prod"]), {"host": other.pk})
    assert response.status_code == 403


def test_it_keeps_its_query_budget(assert_query_budget, owner, vault):
    def make_rows(n):
        for _ in range(n):
            f.add_member(vault, f.make_user(), Role.READER)

    assert_query_budget(owner, URL, make_rows, 8, marker="/remove/")
