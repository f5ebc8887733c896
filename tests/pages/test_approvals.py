"""MUA approval pages: members (contributor+) and the vault's guard approvers see the
requests; only guard approvers decide, never their own; approving runs the operation for the
requester. Guard approvers see nothing else of the vault."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from security.models import Approval
from vaults.models import GuardApprover, Vault
from vaults.services.vaults import update_vault

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/approvals/"


@pytest.fixture
def mua(vault):
    Vault.objects.filter(pk=vault.pk).update(mua_enabled=True)
    vault.refresh_from_db()
    return vault


def request_disable_soft_delete(vault, user) -> Approval:
    from security.mua import ApprovalRequired

    with pytest.raises(ApprovalRequired) as caught:
        update_vault(vault, by=user, soft_delete_state="disabled")
    return caught.value.approval


def test_guard_approver_sees_the_requests_but_not_the_vault(login, approver, contributor, mua):
    approval = request_disable_soft_delete(mua, contributor)
    client = login(approver)
    response = client.get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    assert f"#{approval.pk}" in body
    assert "disable soft delete" in body
    assert ">Approve</button>" in body and ">Reject</button>" in body
    assert reverse("item-list", args=["prod"]) not in body  # no vault tabs
    assert client.get("/vaults/prod/").status_code == 404
    assert client.get("/vaults/prod/items/").status_code == 404


def test_contributor_sees_the_requests_without_deciding(login, contributor, owner, mua):
    request_disable_soft_delete(mua, owner)
    body = login(contributor).get(URL).content.decode()
    assert "disable soft delete" in body
    assert ">Approve</button>" not in body


def test_operator_gets_403_and_outsider_404(login, operator, outsider, mua):
    assert login(operator).get(URL).status_code == 403
    assert login(outsider).get(URL).status_code == 404


def test_settings_change_waits_and_the_approver_approves_from_the_page(
    login, client, contributor, approver, mua
):
    response = login(contributor).post(
        "/vaults/prod/settings/",
        {
            "soft_delete_state": "disabled",
            "soft_delete_days": "14",
            "immutability": "disabled",
            "mua_enabled": "on",
        },
        follow=True,
    )
    approval = Approval.objects.get()
    assert f"Waiting for approval #{approval.pk} by a guard approver" in response.content.decode()
    mua.refresh_from_db()
    assert mua.soft_delete_state == "enabled"

    client.force_login(approver)
    inbox = client.get(reverse("my-approvals")).content.decode()
    assert f"#{approval.pk}" in inbox and "prod" in inbox
    response = client.post(reverse("approval-approve", args=["prod", approval.pk]), follow=True)
    assert response.status_code == 200
    assert "the operation ran on behalf of contributor" in response.content.decode()
    mua.refresh_from_db()
    approval.refresh_from_db()
    assert mua.soft_delete_state == "disabled"
    assert (approval.status, approval.decided_by) == ("executed", approver)


def test_nobody_approves_their_own_request(login, approver, admin_user, mua):
    GuardApprover.objects.create(vault=mua, user=admin_user, assigned_by=admin_user)
    approval = request_disable_soft_delete(mua, admin_user)
    client = login(admin_user)
    assert ">Approve</button>" not in client.get(URL).content.decode()
    response = client.post(reverse("approval-approve", args=["prod", approval.pk]))
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_reject_does_nothing(login, approver, contributor, mua):
    approval = request_disable_soft_delete(mua, contributor)
    response = login(approver).post(reverse("approval-reject", args=["prod", approval.pk]))
    assert response.status_code == 302
    approval.refresh_from_db()
    mua.refresh_from_db()
    assert approval.status == "rejected"
    assert mua.soft_delete_state == "enabled"


def test_a_decided_request_cannot_be_decided_again(login, approver, contributor, mua):
    approval = request_disable_soft_delete(mua, contributor)
    client = login(approver)
    client.post(reverse("approval-reject", args=["prod", approval.pk]))
    response = client.post(reverse("approval-approve", args=["prod", approval.pk]), follow=True)
    assert "only a pending request can be decided" in response.content.decode()


def test_statuses_are_shown_and_filtered(login, contributor, owner, mua):
    pending = request_disable_soft_delete(mua, owner)
    Approval.objects.create(
        vault=mua,
        operation="vault.update",
        summary="old request",
        reasons=["disable soft delete"],
        params={},
        requested_by=owner,
        requested_by_name="owner",
        expires_at=timezone.now() - timedelta(hours=1),
    )
    client = login(contributor)
    body = client.get(URL).content.decode()
    assert "Pending" in body and "Expired" in body
    body = client.get(URL + "?status=expired").content.decode()
    assert "old request" in body and f"#{pending.pk}<" not in body


def test_navigation_shows_approvals_to_guard_approvers_only(login, approver, owner, vault):
    assert 'id="nav-approvals"' in login(approver).get("/").content.decode()
    assert 'id="nav-approvals"' not in login(owner).get("/").content.decode()


def test_it_keeps_its_query_budget(assert_query_budget, approver, owner, mua):
    def make_rows(n):
        Approval.objects.bulk_create(
            Approval(
                vault=mua,
                operation="vault.update",
                summary=f"request {i}",
                reasons=["disable soft delete"],
                params={"n": i},
                requested_by=owner,
                requested_by_name="owner",
                expires_at=timezone.now() + timedelta(hours=1),
            )
            for i in range(n)
        )

    # +1: does the approver have a second factor (the approve form then asks for a code).
    assert_query_budget(approver, URL, make_rows, 9, marker='class="approval-row"')


def test_inbox_keeps_its_query_budget(assert_query_budget, approver, owner, mua):
    def make_rows(n):
        Approval.objects.bulk_create(
            Approval(
                vault=mua,
                operation="vault.update",
                summary=f"request {i}",
                reasons=["x"],
                params={"n": i},
                requested_by=owner,
                requested_by_name="owner",
                expires_at=timezone.now() + timedelta(hours=1),
            )
            for i in range(n)
        )

    # +1: does the approver have a second factor (the approve form then asks for a code).
    assert_query_budget(approver, reverse("my-approvals"), make_rows, 7, marker="approval-row")
