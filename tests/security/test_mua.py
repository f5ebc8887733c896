"""Multi-user authorization: critical operations wait for a guard approver, through the API
and the domain functions alike."""

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from security import mua
from security.models import Alert, Approval
from security.mua import ApprovalRequired
from tests import factories as f
from vaults.models import AuditEvent, GuardApprover, ProtectedVM, Vault
from vaults.protection import stop_protection
from vaults.rules import RuleBlocked
from vaults.services.vaults import update_vault

pytestmark = pytest.mark.django_db

VAULT = reverse("api-vault-detail", args=["prod"])
REPO = Path(__file__).resolve().parents[2]


def approvals_url(*args):
    return (
        reverse("api-approval-list", args=["prod"])
        if not args
        else reverse(args[0], args=["prod", *args[1:]])
    )


def approve(api, user, approval_id, action="approve"):
    return api(user).post(reverse(f"api-approval-{action}", args=["prod", approval_id]), {})


def test_disabling_soft_delete_waits_for_approval_and_changes_nothing(api, mua_vault, contributor):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    assert r.status_code == 202, r.content
    assert r.data["status"] == "pending" and "guard approver" in r.data["detail"]
    approval = Approval.objects.get(pk=r.data["approval"])
    assert approval.params == {"soft_delete_state": "disabled"}
    assert approval.requested_by == contributor
    mua_vault.refresh_from_db()
    assert mua_vault.soft_delete_state == "enabled"
    assert not AuditEvent.objects.filter(action="vault.update").exists()
    assert AuditEvent.objects.filter(action="approval.request", actor=contributor).exists()


def test_approval_runs_the_operation_for_the_requester_and_records_both(
    api, mua_vault, contributor, approver, mailoutbox, django_capture_on_commit_callbacks
):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    with django_capture_on_commit_callbacks(execute=True):
        r = approve(api, approver, r.data["approval"])
    assert r.status_code == 200, r.content
    assert r.data["status"] == "executed" and r.data["decided_by"] == "approver"
    mua_vault.refresh_from_db()
    assert mua_vault.soft_delete_state == "disabled"
    change = AuditEvent.objects.get(action="vault.update")
    assert change.actor == contributor  # on behalf of the requester
    execute = AuditEvent.objects.get(action="approval.execute")
    assert execute.actor == approver
    assert execute.after["requested_by"] == "contributor"
    assert execute.after["approved_by"] == "approver"
    assert AuditEvent.objects.filter(action="approval.approve", actor=approver).exists()
    # Disabling soft delete is a Sev-0 security alert, e-mailed to the owners.
    alert = Alert.objects.get(kind="soft_delete_disabled")
    assert alert.severity == "sev0"
    assert [m.subject for m in mailoutbox] == [
        "[Lifeboat] Sev 0: Soft delete disabled in vault prod"
    ]
    assert sorted(mailoutbox[0].to) == ["admin@example.test", "owner@example.test"]


def test_nobody_approves_their_own_request(api, mua_vault, contributor, admin_user):
    GuardApprover.objects.create(vault=mua_vault, user=contributor, assigned_by=admin_user)
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    assert approve(api, contributor, r.data["approval"]).status_code == 403
    assert approve(api, contributor, r.data["approval"], "reject").status_code == 403
    assert Approval.objects.get().status == "pending"


def test_superusers_neither_skip_nor_self_approve(api, mua_vault, admin_user):
    GuardApprover.objects.create(vault=mua_vault, user=admin_user, assigned_by=admin_user)
    r = api(admin_user).patch(VAULT, {"mua_enabled": False})
    assert r.status_code == 202
    assert approve(api, admin_user, r.data["approval"]).status_code == 403
    mua_vault.refresh_from_db()
    assert mua_vault.mua_enabled is True
    # The domain function refuses the same way.
    with pytest.raises(ApprovalRequired):
        update_vault(mua_vault, by=admin_user, mua_enabled=False)


def test_site_admin_who_is_not_guard_cannot_approve(api, mua_vault, contributor, admin_user, owner):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    assert approve(api, admin_user, r.data["approval"]).status_code == 403
    assert approve(api, owner, r.data["approval"]).status_code == 403


def test_rejected_request_does_nothing(api, mua_vault, contributor, approver):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    rej = approve(api, approver, r.data["approval"], "reject")
    assert rej.status_code == 200 and rej.data["status"] == "rejected"
    again = approve(api, approver, r.data["approval"])
    assert again.status_code == 409 and again.data["rule"] == "approval_not_pending"
    mua_vault.refresh_from_db()
    assert mua_vault.soft_delete_state == "enabled"


def test_expired_request_does_nothing(api, mua_vault, contributor, approver, settings):
    settings.LIFEBOAT = {**settings.LIFEBOAT, "MUA_APPROVAL_HOURS": 1}
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    approval = Approval.objects.get(pk=r.data["approval"])
    assert approval.expires_at - approval.requested_at == timedelta(hours=1)
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    listed = api(approver).get(approvals_url()).data["results"][0]
    assert listed["status"] == "expired"
    r = approve(api, approver, approval.pk)
    assert r.status_code == 409 and "expired" in r.data["detail"]
    approval.refresh_from_db()
    assert approval.status == "expired"
    mua_vault.refresh_from_db()
    assert mua_vault.soft_delete_state == "enabled"


def test_expire_due_marks_pending_requests(mua_vault, contributor):
    with pytest.raises(ApprovalRequired):
        update_vault(mua_vault, by=contributor, soft_delete_state="disabled")
    assert mua.expire_due(timezone.now() + timedelta(hours=25)) == 1
    assert Approval.objects.get().status == "expired"
    assert AuditEvent.objects.filter(action="approval.expire").exists()


def test_a_mixed_patch_waits_whole(api, mua_vault, contributor, approver):
    body = {"soft_delete_days": 30, "soft_delete_state": "disabled"}
    r = api(contributor).patch(VAULT, body)
    assert r.status_code == 202
    mua_vault.refresh_from_db()
    assert (mua_vault.soft_delete_days, mua_vault.soft_delete_state) == (14, "enabled")
    assert Approval.objects.get().params == body
    approve(api, approver, r.data["approval"])
    mua_vault.refresh_from_db()
    assert (mua_vault.soft_delete_days, mua_vault.soft_delete_state) == (30, "disabled")


def test_free_changes_need_no_approval(api, mua_vault, contributor):
    r = api(contributor).patch(VAULT, {"soft_delete_days": 30})
    assert r.status_code == 200 and r.data["soft_delete_days"] == 30
    assert not Approval.objects.exists()


def test_asking_twice_reuses_the_pending_request(api, mua_vault, contributor):
    a = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"}).data["approval"]
    b = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"}).data["approval"]
    assert a == b and Approval.objects.count() == 1


def test_nobody_turns_off_always_on_soft_delete_even_with_approval(
    api, contributor, admin_user, approver
):
    v = f.make_vault("aon", owner=admin_user, soft_delete_state="always_on", mua_enabled=False)
    GuardApprover.objects.create(vault=v, user=approver, assigned_by=admin_user)
    Vault.objects.filter(pk=v.pk).update(mua_enabled=True)
    url = reverse("api-vault-detail", args=["aon"])
    r = api(admin_user).patch(url, {"soft_delete_state": "disabled"})
    assert r.status_code == 409 and r.data["rule"] == "soft_delete_always_on"
    assert not Approval.objects.exists()  # a refused change is not queued for approval


def test_nobody_turns_off_locked_immutability(api, admin_user):
    f.make_vault("imm", owner=admin_user, immutability="locked")
    r = api(admin_user).patch(
        reverse("api-vault-detail", args=["imm"]), {"immutability": "unlocked"}
    )
    assert r.status_code == 409 and r.data["rule"] == "immutability_locked"


def test_disabling_mua_waits_and_raises_an_alert_once_approved(api, mua_vault, owner, approver):
    r = api(owner).patch(VAULT, {"mua_enabled": False})
    assert r.status_code == 202
    approve(api, approver, r.data["approval"])
    mua_vault.refresh_from_db()
    assert mua_vault.mua_enabled is False
    assert Alert.objects.filter(kind="mua_disabled").count() == 1


def test_enabling_mua_needs_a_guard_approver(api, admin_user, owner):
    v = f.make_vault("noguard", owner=admin_user)
    f.add_member(v, owner, "owner")
    r = api(owner).patch(reverse("api-vault-detail", args=["noguard"]), {"mua_enabled": True})
    assert r.status_code == 409 and r.data["rule"] == "mua_needs_guard_approver"
    assert "guard approver" in r.data["detail"]


def test_enabling_mua_with_a_guard_approver_is_free(api, vault, owner):
    r = api(owner).patch(VAULT, {"mua_enabled": True})
    assert r.status_code == 200 and r.data["mua_enabled"] is True


def test_the_last_guard_approver_stays_while_mua_is_on(api, mua_vault, admin_user):
    ga = GuardApprover.objects.get(vault=mua_vault)
    url = reverse("api-vault-approver-detail", args=["prod", ga.pk])
    r = api(admin_user).delete(url)
    assert r.status_code == 409 and r.data["rule"] == "mua_last_guard_approver"


def test_reducing_a_policys_retention_waits(api, mua_vault, contributor, approver):
    policy = f.make_policy(mua_vault, "Long", retention={"daily": {"days": 60}})
    url = reverse("api-policy-detail", args=["prod", "Long"])
    assert api(contributor).patch(url, {"retention": {"daily": {"days": 90}}}).status_code == 200
    r = api(contributor).patch(url, {"retention": {"daily": {"days": 10}}})
    assert r.status_code == 202, r.content
    policy.refresh_from_db()
    assert policy.representation()["retention"]["daily"]["days"] == 90
    assert approve(api, approver, r.data["approval"]).status_code == 200
    policy.refresh_from_db()
    assert policy.representation()["retention"]["daily"]["days"] == 10
    assert Alert.objects.filter(kind="retention_reduced").count() == 1


def test_moving_an_item_to_a_shorter_policy_waits(api, mua_vault, item, contributor, approver):
    f.make_policy(mua_vault, "Short", retention={"daily": {"days": 7}})
    f.make_policy(mua_vault, "Longer", retention={"daily": {"days": 90}})
    url = reverse("api-protected-item-detail", args=["prod", "web-01"])
    assert api(contributor).patch(url, {"policy": "Longer"}).status_code == 200
    r = api(contributor).patch(url, {"policy": "Short"})
    assert r.status_code == 202, r.content
    item.refresh_from_db()
    assert item.policy.name == "Longer"
    assert approve(api, approver, r.data["approval"]).status_code == 200
    item.refresh_from_db()
    assert item.policy.name == "Short"
    assert (
        AuditEvent.objects.get(action="protection.update", after__policy="Short").actor
        == contributor
    )


def test_stop_protection_with_delete_data_waits(api, mua_vault, item, rp, contributor, approver):
    url = reverse("api-protected-item-stop", args=["prod", "web-01"])
    r = api(contributor).post(url, {"mode": "delete_data"})
    assert r.status_code == 202, r.content
    item.refresh_from_db()
    assert item.state == "protected"
    # Stopping while retaining data is not critical.
    assert approve(api, approver, r.data["approval"]).status_code == 200
    item.refresh_from_db()
    assert item.state == "soft_deleted"
    alert = Alert.objects.get(kind="delete_backup_data")
    assert alert.severity == "sev0" and "contributor" in alert.message


def test_stop_protection_retaining_data_is_free(api, mua_vault, item, contributor):
    url = reverse("api-protected-item-stop", args=["prod", "web-01"])
    assert api(contributor).post(url, {"mode": "retain_forever"}).status_code == 200
    assert not Approval.objects.exists()


def test_an_approved_operation_that_can_no_longer_run_says_why(
    api, mua_vault, contributor, approver, admin_user
):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    # Meanwhile somebody makes soft delete always-on (not critical, no approval).
    Vault.objects.filter(pk=mua_vault.pk).update(soft_delete_state="always_on")
    r = approve(api, approver, r.data["approval"])
    assert r.status_code == 409 and r.data["rule"] == "approval_operation_failed"
    approval = Approval.objects.get()
    assert approval.status == "approved" and "Always-on" in approval.error


def test_an_approved_operation_nobody_registered_fails_with_a_409_and_changes_nothing(
    api, mua_vault, contributor, approver
):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    Approval.objects.filter(pk=r.data["approval"]).update(operation="vault.rename")
    r = approve(api, approver, r.data["approval"])
    assert r.status_code == 409 and r.data["rule"] == "approval_operation_failed"
    approval = Approval.objects.get()
    assert approval.status == "approved" and "Unknown operation vault.rename" in approval.error
    mua_vault.refresh_from_db()
    assert mua_vault.soft_delete_state == "enabled"


def test_every_gated_operation_can_run_in_a_process_that_imported_only_mua(tmp_path):
    """The operations register their re-runs at start-up, not when a page happens to load
    their module: a fresh process (a worker, a shell) approves them too."""
    script = (
        "import django; django.setup(); from security import mua; "
        "print(' '.join(sorted(mua._reruns)))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    env["LIFEBOAT_DATA_DIR"] = str(tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "policy.update",
        "protection.stop",
        "protection.update",
        "vault.update",
    ]


def test_the_requester_losing_the_role_blocks_execution(api, mua_vault, contributor, approver):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    mua_vault.memberships.filter(user=contributor).update(role="reader")
    r = approve(api, approver, r.data["approval"])
    assert r.status_code == 409
    mua_vault.refresh_from_db()
    assert mua_vault.soft_delete_state == "enabled"


def test_gate_lets_through_exactly_the_approval_being_executed(mua_vault, contributor):
    with pytest.raises(ApprovalRequired) as e:
        update_vault(mua_vault, by=contributor, soft_delete_state="disabled")
    approval = e.value.approval
    with mua.executing(approval):
        # Another critical change is not covered by this approval.
        with pytest.raises(ApprovalRequired):
            update_vault(mua_vault, by=contributor, mua_enabled=False)
        update_vault(mua_vault, by=contributor, soft_delete_state="disabled")
    mua_vault.refresh_from_db()
    assert mua_vault.soft_delete_state == "disabled" and mua_vault.mua_enabled is True


def test_the_request_survives_an_enclosing_transaction(mua_vault, contributor):
    from django.db import transaction

    with pytest.raises(ApprovalRequired) as e:
        with transaction.atomic():
            update_vault(mua_vault, by=contributor, soft_delete_state="disabled")
    assert not Approval.objects.exists()  # rolled back with the block
    approval = e.value.persist()
    assert Approval.objects.get() == approval
    assert AuditEvent.objects.filter(action="approval.request").count() == 1


# -- who sees and decides ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "persona, code",
    [
        ("admin", 200),
        ("owner", 200),
        ("contributor", 200),
        ("operator", 403),
        ("reader", 403),
        ("approver", 200),
        ("outsider", 404),
    ],
)
def test_who_sees_the_approvals(api, mua_vault, personas, persona, code):
    assert api(personas[persona]).get(approvals_url()).status_code == code


def test_guard_approvers_see_nothing_else_of_the_vault(api, mua_vault, approver):
    assert api(approver).get(VAULT).status_code == 404
    assert api(approver).get(reverse("api-alert-list", args=["prod"])).status_code == 404
    assert api(approver).get(reverse("api-vault-audit-list", args=["prod"])).status_code == 404


@pytest.mark.parametrize(
    "persona, code",
    [("reader", 403), ("operator", 403), ("owner", 403), ("admin", 403), ("outsider", 404)],
)
def test_only_guard_approvers_decide(api, mua_vault, contributor, personas, persona, code):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    assert approve(api, personas[persona], r.data["approval"]).status_code == code
    assert approve(api, personas[persona], r.data["approval"], "reject").status_code == code


def test_approval_detail_and_status_filter(api, mua_vault, contributor, approver):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    d = api(approver).get(reverse("api-approval-detail", args=["prod", r.data["approval"]]))
    assert d.status_code == 200 and d.data["requested_by"] == "contributor"
    assert d.data["reasons"] == ["disable soft delete"]
    pending = api(approver).get(approvals_url(), {"status": "pending"}).data
    assert pending["count"] == 1
    assert api(approver).get(approvals_url(), {"status": "executed"}).data["count"] == 0


def test_mua_off_changes_run_at_once(api, vault, contributor):
    r = api(contributor).patch(VAULT, {"soft_delete_state": "disabled"})
    assert r.status_code == 200 and r.data["soft_delete_state"] == "disabled"
    assert not Approval.objects.exists()


def test_domain_function_raises_approval_required(mua_vault, contributor, item):
    with pytest.raises(ApprovalRequired):
        stop_protection(item, by=contributor, mode="delete_data")
    assert ProtectedVM.objects.get(pk=item.pk).state == "protected"
    with pytest.raises(RuleBlocked):
        update_vault(
            mua_vault,
            by=contributor,
            encryption="platform",
            soft_delete_state="always_on",
            immutability="locked",
        )
    assert len(mail.outbox) == 0
