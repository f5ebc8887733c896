"""Approving a multi-user-authorization request asks an approver who has a second factor for
a fresh code: a code field on the page, `otp` in the API body (400 naming it)."""

import pytest
from django.urls import reverse

from security.models import Approval, ApprovalStatus, LoginFailure
from security.mua import ApprovalRequired
from tests import factories as f
from vaults.models import AuditEvent
from vaults.services.vaults import update_vault

pytestmark = pytest.mark.django_db


def pending(vault, contributor, **changes) -> Approval:
    with pytest.raises(ApprovalRequired) as caught:
        update_vault(vault, by=contributor, **(changes or {"soft_delete_state": "disabled"}))
    return caught.value.approval


def approve_api(api, approver, approval, **body):
    url = reverse("api-approval-approve", args=["prod", approval.pk])
    return api(approver).post(url, body)


def wrong(device) -> str:
    return "000000" if f.totp_code(device) != "000000" else "111111"


def test_the_api_asks_for_a_fresh_code(api, mua_vault, contributor, approver):
    device = f.make_totp(approver)
    approval = pending(mua_vault, contributor)
    r = approve_api(api, approver, approval)
    assert r.status_code == 400 and list(r.data) == ["otp"]
    r = approve_api(api, approver, approval, otp=wrong(device))
    assert r.status_code == 400 and "wrong" in r.data["otp"][0]
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING
    assert LoginFailure.objects.filter(username="approver").count() == 1
    failure = AuditEvent.objects.get(action="login.failure")
    assert failure.after == {"username": "approver", "method": "totp", "purpose": "approval"}

    code = f.totp_code(device)
    r = approve_api(api, approver, approval, otp=code)
    assert r.status_code == 200 and r.data["status"] == "executed"
    # The same code does not approve a second request.
    second = pending(mua_vault, contributor, mua_enabled=False)
    assert second.pk != approval.pk
    r = approve_api(api, approver, second, otp=code)
    assert r.status_code == 400 and "already used" in r.data["otp"][0]


def test_an_approver_without_a_second_factor_approves_as_before(
    api, mua_vault, contributor, approver
):
    approval = pending(mua_vault, contributor)
    assert approve_api(api, approver, approval).status_code == 200


def test_the_role_is_checked_before_the_code(api, mua_vault, contributor, approver, reader):
    f.make_totp(reader)
    approval = pending(mua_vault, contributor)
    # A reader is no guard approver: 403, whatever the code.
    assert approve_api(api, reader, approval).status_code == 403


def test_the_page_has_a_code_field_and_needs_the_code(client, mua_vault, contributor, approver):
    device = f.make_totp(approver)
    approval = pending(mua_vault, contributor)
    client.force_login(approver)
    detail = reverse("approval-detail", args=["prod", approval.pk])
    assert 'name="otp"' in client.get(detail).content.decode()
    url = reverse("approval-approve", args=["prod", approval.pk])

    r = client.post(url, {}, follow=True)
    assert "Enter the 6-digit code" in r.content.decode()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.PENDING

    r = client.post(url, {"otp": f.totp_code(device)}, follow=True)
    assert "approved: the operation ran" in r.content.decode()
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.EXECUTED


def test_no_code_field_for_an_approver_without_a_second_factor(
    client, mua_vault, contributor, approver
):
    approval = pending(mua_vault, contributor)
    client.force_login(approver)
    page = client.get(reverse("approval-detail", args=["prod", approval.pk])).content.decode()
    assert "Approve" in page and 'name="otp"' not in page
