"""Alerts: Sev-0 security alerts (never turned off) and Sev-1 job alerts (per-vault switch).

Security alerts are derived from the audit log: every state change is recorded there, so a
receiver on new `AuditEvent` rows sees each event exactly once, whichever page, API call or job
made it. Job alerts come from `on_job_finished`, a receiver of `jobs.signals.job_finished`
(connected in `SecurityConfig.ready`); a key that cannot be read is announced by the key reader
(`security.signals.key_unavailable`). The upcoming-purge
alert is a periodic check (`check_upcoming_purges`, jobs/schedules.py).

Each alert names its event with a dedup key. `fire(..., once=True)` (events: one audit event,
one purge date) raises at most one alert per key ever; `once=False` (conditions: a key that is
unavailable, an item whose backups fail) raises one open alert per key and counts further
occurrences on it until it is resolved. New alerts are e-mailed to the vault's owners after the
transaction commits.
"""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.mail import send_mail
from django.db import IntegrityError, models, transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from jobs import hook_details
from jobs.models import Job, Operation, Status
from policies.models import BackupPolicy
from policies.retention import reduces_retention, retention_reductions
from security import mua, signals
from security.models import Alert, AlertStatus, Severity, VaultAlertSettings
from vaults import access, audit, rules
from vaults.lifecycle import upcoming_purges
from vaults.models import AuditEvent, Encryption, RecoveryPoint, Role, SoftDeleteState, Vault

log = logging.getLogger(__name__)

# kind → title. Security alerts (Sev 0) cannot be turned off.
SECURITY_KINDS = {
    "delete_backup_data": "Backup data deleted",
    "upcoming_purge": "Soft-deleted backup data will be purged soon",
    "purge_complete": "Soft-deleted backup data purged",
    "soft_delete_disabled": "Soft delete disabled",
    "retention_reduced": "Retention reduced",
    "mua_disabled": "Multi-user authorization disabled",
    "immutability_changed": "Immutability changed",
}
# Sev 1. backup/restore failures follow the vault's job-alert switch; an unavailable key is
# always raised (backups stop until it is back; Sev 0 when it is the master key), and so is
# damaged backup data (what it held cannot be restored).
JOB_KINDS = {
    "backup_failure": "Backup failed",
    "restore_failure": "Restore failed",
    "key_unavailable": "Encryption key unavailable",
    "corruption": "Backup data damaged",
    "drill_failed": "Restore drill failed",
    "ransomware_suspected": "Backup looks like ransomware",
}
SWITCHABLE = {"backup_failure", "restore_failure"}
UPCOMING_PURGE_WINDOW = timedelta(days=2)


def title(kind: str) -> str:
    return SECURITY_KINDS.get(kind) or JOB_KINDS.get(kind) or kind


def job_alerts_enabled(vault: Vault) -> bool:
    s = VaultAlertSettings.objects.filter(vault=vault).first()
    return True if s is None else s.job_alerts


def fire(
    vault: Vault,
    kind: str,
    *,
    message: str,
    dedup_key: str,
    severity: str | None = None,
    obj: models.Model | None = None,
    ref: tuple[str, str, str] | None = None,
    once: bool = True,
) -> Alert | None:
    """Raise an alert for one event; None when it already fired (or is switched off).

    The alert refers to `obj`, or to `ref` = (object type, id, text) when there is no instance.
    """
    if ref is None:
        ref = (type(obj).__name__, str(obj.pk), str(obj)) if obj is not None else ("", "", "")
    severity = severity or (Severity.SEV0 if kind in SECURITY_KINDS else Severity.SEV1)
    if kind in SWITCHABLE and not job_alerts_enabled(vault):
        return None
    same = Alert.objects.filter(dedup_key=dedup_key)
    if once and same.exists():
        return None
    now = timezone.now()
    open_alert = same.exclude(status=AlertStatus.RESOLVED).first()
    if open_alert is not None:
        Alert.objects.filter(pk=open_alert.pk).update(
            occurrences=open_alert.occurrences + 1, last_seen_at=now, message=message
        )
        return None
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                vault=vault,
                severity=severity,
                kind=kind,
                message=message,
                object_type=ref[0][:40],
                object_id=ref[1][:64],
                object_repr=ref[2][:200],
                dedup_key=dedup_key[:200],
                created_at=now,
                last_seen_at=now,
            )
    except IntegrityError:  # another process raised it a moment ago
        return None
    transaction.on_commit(lambda: send_alert_mail(alert.pk))
    return alert


def owner_emails(vault: Vault) -> list[str]:
    emails = (
        vault.memberships.filter(role=Role.OWNER, user__is_active=True)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    return sorted(set(emails))


def send_alert_mail(alert_id: int) -> int:
    alert = Alert.objects.select_related("vault").filter(pk=alert_id).first()
    if alert is None:
        return 0
    to = owner_emails(alert.vault)
    if not to:
        return 0
    subject = f"[Lifeboat] {alert.get_severity_display()}: {title(alert.kind)} in vault {alert.vault.name}"
    body = (
        f"{title(alert.kind)} ({alert.get_severity_display()})\n\n"
        f"Vault: {alert.vault.name}\n"
        f"Object: {alert.object_repr or '-'}\n"
        f"Time: {alert.created_at:%Y-%m-%d %H:%M:%S} UTC\n\n"
        f"{alert.message}\n"
    )
    try:
        return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, to)
    except Exception:  # mail trouble must never undo or hide the alert itself
        log.exception("could not e-mail alert %s", alert_id)
        return 0


# -- security alerts from the audit log ----------------------------------------------------------------


def _vault_update(event: AuditEvent) -> list[tuple[str, str]]:
    before, after = event.before or {}, event.after or {}
    out = []
    if (
        before.get("soft_delete_state", SoftDeleteState.DISABLED) != SoftDeleteState.DISABLED
        and after.get("soft_delete_state") == SoftDeleteState.DISABLED
    ):
        out.append(
            (
                "soft_delete_disabled",
                f"{event.actor_name} disabled soft delete: deleted backup data is no longer "
                "kept in the recycle bin.",
            )
        )
    if before.get("mua_enabled") is True and after.get("mua_enabled") is False:
        out.append(
            (
                "mua_disabled",
                f"{event.actor_name} disabled multi-user authorization: critical operations "
                "no longer need a guard approver.",
            )
        )
    if "immutability" in after and before.get("immutability") != after.get("immutability"):
        out.append(
            (
                "immutability_changed",
                f"{event.actor_name} changed immutability from {before.get('immutability')} "
                f"to {after.get('immutability')}.",
            )
        )
    return out


def _policy_update(event: AuditEvent) -> list[tuple[str, str]]:
    try:
        reasons = retention_reductions(event.before or {}, event.after or {})
    except Exception:  # a representation from an older version: nothing to compare
        return []
    if not reasons:
        return []
    return [
        (
            "retention_reduced",
            f"{event.actor_name} reduced the retention of policy {event.object_repr}: "
            + "; ".join(reasons),
        )
    ]


def _item_update(event: AuditEvent) -> list[tuple[str, str]]:
    before, after = event.before or {}, event.after or {}
    was, now = before.get("policy"), after.get("policy")
    if not isinstance(was, str) or not isinstance(now, str) or was == now or event.vault is None:
        return []
    reps = {
        p.name: p.representation()
        for p in BackupPolicy.objects.filter(vault=event.vault, name__in=[was, now])
    }
    old, new = reps.get(was), reps.get(now)
    if old is None or new is None or not reduces_retention(old, new):
        return []
    return [
        (
            "retention_reduced",
            f"{event.actor_name} moved {event.object_repr} from policy {was} to {now}, which "
            "keeps its recovery points for less time.",
        )
    ]


def _stop_protection(event: AuditEvent) -> list[tuple[str, str]]:
    after = event.after or {}
    if after.get("mode") != "delete_data":
        return []
    return [
        (
            "delete_backup_data",
            f"{event.actor_name} stopped protection of {event.object_repr} and deleted its "
            "backup data.",
        )
    ]


# audit action → rule(event) → [(kind, message)]
AUDIT_RULES = {
    "vault.update": _vault_update,
    "policy.update": _policy_update,
    "protection.update": _item_update,
    "protection.stop": _stop_protection,
}


@receiver(post_save, sender=AuditEvent, dispatch_uid="security-alerts-from-audit")
def _on_audit_event(
    sender: type[AuditEvent], instance: AuditEvent, created: bool, **kwargs: object
) -> None:
    rule = AUDIT_RULES.get(instance.action)
    if not created or rule is None:
        return
    vault = instance.vault
    if vault is None:
        return
    for kind, message in rule(instance):
        fire(
            vault,
            kind,
            message=message,
            dedup_key=f"audit:{instance.pk}:{kind}",
            ref=(instance.object_type, instance.object_id, instance.object_repr),
        )


# -- job alerts --------------------------------------------------------------------------------------


def on_job_finished(sender: type[Job], *, job: Job, **kwargs: object) -> None:
    """Receives `jobs.signals.job_finished` for every job that ends."""
    if job.vault is None:
        return
    if job.status == Status.FAILED and job.error_code == "corruption":
        _damage_found(job)
    if job.operation in (Operation.PURGE, Operation.DELETE_BACKUP_DATA):
        _purge_finished(job)
        return
    if job.operation == Operation.DRILL:
        _drill_finished(job)
        return
    if job.operation not in (Operation.BACKUP, Operation.RESTORE):
        return
    if job.operation == Operation.BACKUP:
        _suspicious_backup(job)
    vault = job.vault
    what = job.vm_name or "the vault"
    if job.status == Status.FAILED:
        if job.error_code == "key_unavailable":
            key_unavailable(
                vault, f"Backups and restores of vault {vault.name} fail: {job.error_message}", job
            )
        kind = "backup_failure" if job.operation == Operation.BACKUP else "restore_failure"
        # Every member reads the alert, readers too: hook details stay on the job page.
        said = hook_details.message(job.error_code, job.error_message, details=False)
        fire(
            vault,
            kind,
            message=f"{title(kind)} for {what} (job {job.pk}, {job.error_code or 'error'}): {said}",
            dedup_key=f"{kind}:{vault.pk}:{job.protected_item_id}:{job.error_code}",
            obj=job,
            once=False,
        )
    elif job.status in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS):
        # The key works again: the condition that raised the key alert is gone.
        resolve_condition(f"key_unavailable:{vault.pk}")
        if job.operation == Operation.BACKUP:
            for alert in Alert.objects.filter(
                kind="backup_failure",
                dedup_key__startswith=f"backup_failure:{vault.pk}:{job.protected_item_id}:",
            ).exclude(status=AlertStatus.RESOLVED):
                resolve_condition(alert.dedup_key)


def key_unavailable(vault: Vault, message: str, obj: Job | None = None) -> Alert | None:
    """The vault's key cannot be used: one open alert per vault, counting occurrences.

    Sev 0 for the platform master key (lost or swapped, it stops every vault that uses it and
    is never recreated); Sev 1 for a customer-managed key, which its owner may disable.
    """
    platform = vault.encryption == Encryption.PLATFORM
    return fire(
        vault,
        "key_unavailable",
        message=message,
        dedup_key=f"key_unavailable:{vault.pk}",
        severity=Severity.SEV0 if platform else Severity.SEV1,
        obj=obj,
        once=False,
    )


@receiver(signals.key_unavailable, dispatch_uid="security-alerts-key-unavailable")
def _on_key_unavailable(sender: object, vault: Vault, message: str, **kwargs: object) -> None:
    key_unavailable(vault, message)


def corruption_key(vault_id: int, rp_id: object = None) -> str:
    """Damage is a condition of a recovery point (or, when no one RP is named, of the vault's
    stores): one open alert each, however often the damage is met again."""
    return f"corruption:{vault_id}:{rp_id or 'stores'}"


def data_damaged(rp: RecoveryPoint, message: str) -> Alert | None:
    """Damaged stored data met while reading `rp` outside a job (file recovery)."""
    return fire(
        rp.vault,
        "corruption",
        message=message,
        dedup_key=corruption_key(rp.vault_id, rp.pk),
        obj=rp,
        once=False,
    )


def open_damage_alert(rp: RecoveryPoint) -> Alert | None:
    return (
        Alert.objects.filter(dedup_key=corruption_key(rp.vault_id, rp.pk))
        .exclude(status=AlertStatus.RESOLVED)
        .first()
    )


def _damage_found(job: Job) -> None:
    """A backup, transfer, restore or verify job that failed on damaged stored data."""
    vault = job.vault
    assert vault is not None  # on_job_finished passes on the jobs of a vault only
    fire(
        vault,
        "corruption",
        message=f"{job.get_operation_display()} job {job.pk} found damaged data in vault "
        f"{vault.name}: {job.error_message}",
        dedup_key=corruption_key(vault.pk, job.recovery_point_id),
        obj=job,
        once=False,
    )


def _suspicious_backup(job: Job) -> None:
    """A backup whose RP the ransomware signal marked suspicious: one Sev-1 alert per item
    while it is open (an attack seen over several backups counts on it), naming the RP."""
    # Read again: the backup links its RP to the job row after the job object was loaded.
    rp = RecoveryPoint.objects.filter(
        pk__in=Job.objects.filter(pk=job.pk).values("recovery_point_id"), anomaly="suspicious"
    ).first()
    if rp is None:
        return
    vault = job.vault
    assert vault is not None  # on_job_finished passes on the jobs of a vault only
    reasons = "; ".join(rp.signal.get("reasons", []))
    fire(
        vault,
        "ransomware_suspected",
        message=f"Backup of {rp} (job {job.pk}) changed like encryption by malware: {reasons}. "
        "Restore from a recovery point before it; the restore page names the last one.",
        dedup_key=f"ransomware_suspected:{vault.pk}:{job.protected_item_id}",
        severity=Severity.SEV1,
        obj=rp,
        once=False,
    )


def drill_key(vault_id: int, rp_id: object) -> str:
    """A failed drill is a condition of its recovery point, resolved by a drill that passes."""
    return f"drill_failed:{vault_id}:{rp_id}"


def _drill_finished(job: Job) -> None:
    """A drill that failed on the RP (not one cancelled or lost) raises a Sev-1 alert naming
    the RP and the check; one that passed resolves it."""
    vault = job.vault
    assert vault is not None  # on_job_finished passes on the jobs of a vault only
    key = drill_key(vault.pk, job.recovery_point_id)
    if job.status == Status.COMPLETED:
        resolve_condition(key)
    elif job.status == Status.FAILED and job.error_code == "drill_failed":
        rp = RecoveryPoint.objects.filter(pk__in=[job.recovery_point_id]).first()
        fire(
            vault,
            "drill_failed",
            message=f"{job.error_message} (job {job.pk})",
            dedup_key=key,
            severity=Severity.SEV1,
            obj=rp or job,
            once=False,
        )


def _purge_finished(job: Job) -> None:
    result = job.result or {}
    items, rps = result.get("items") or [], result.get("recovery_points") or 0
    if job.status not in (Status.COMPLETED, Status.COMPLETED_WITH_WARNINGS) or not (items or rps):
        return
    what = f"{rps} recovery point(s)" + (f" and item(s) {', '.join(items)}" if items else "")
    vault = job.vault
    assert vault is not None  # on_job_finished passes on the jobs of a vault only
    fire(
        vault,
        "purge_complete",
        message=f"Purged permanently from vault {vault.name}: {what} (job {job.pk}). "
        "This data can no longer be undeleted.",
        dedup_key=f"purge_complete:{job.pk}",
        obj=job,
    )


def resolve_condition(dedup_key: str) -> int:
    """Resolve open alerts of a condition that no longer holds (resolved by nobody: the system)."""
    return (
        Alert.objects.filter(dedup_key=dedup_key)
        .exclude(status=AlertStatus.RESOLVED)
        .update(status=AlertStatus.RESOLVED, resolved_at=timezone.now())
    )


# -- the periodic check ------------------------------------------------------------------------------


def check_upcoming_purges(now: datetime | None = None) -> int:
    """One Sev-0 alert per recycle-bin entry purged within 2 days (each entry and purge time
    fires once, however often the check runs)."""
    now = now or timezone.now()
    entries = upcoming_purges(now, UPCOMING_PURGE_WINDOW)
    vaults = {v.name: v for v in Vault.objects.filter(name__in={e.vault for e in entries})}
    raised = 0
    for e in entries:
        if e.kind == "item":
            what = f"{e.vm_name} and its {e.recovery_points} recovery point(s)"
            ref = ("ProtectedVM", str(e.item_id), e.vm_name)
        else:
            what = f"the recovery point of {e.vm_name} taken {e.recovery_point_time:%Y-%m-%d %H:%M}"
            ref = (
                "RecoveryPoint",
                str(e.recovery_point),
                f"{e.vm_name} @ {e.recovery_point_time:%Y-%m-%d %H:%M}",
            )
        alert = fire(
            vaults[e.vault],
            "upcoming_purge",
            message=f"Soft-deleted backup data will be purged permanently on "
            f"{e.purge_at:%Y-%m-%d %H:%M} UTC: {what}. Undelete it before then to keep it.",
            dedup_key=f"upcoming_purge:{ref[0]}:{ref[1]}:{e.purge_at:%Y%m%d%H%M%S}",
            ref=ref,
        )
        raised += alert is not None
    return raised


def periodic(now: datetime | None = None) -> dict[str, int]:
    """The security app's periodic work: upcoming purges, expired approvals."""
    return {"upcoming_purges": check_upcoming_purges(now), "approvals_expired": mua.expire_due(now)}


# -- people acting on alerts --------------------------------------------------------------------------


def acknowledge(alert: Alert, *, by: User, request: HttpRequest | None = None) -> Alert:
    access.require(by, alert.vault, "acknowledge_alert")
    if alert.status != AlertStatus.ACTIVE:
        raise rules.blocked(
            f"The alert is {alert.status}; only an active alert is acknowledged.",
            rule=rules.RULE_ALERT_STATE,
        )
    with transaction.atomic():
        alert.status, alert.acknowledged_by, alert.acknowledged_at = (
            AlertStatus.ACKNOWLEDGED,
            by,
            timezone.now(),
        )
        alert.save(update_fields=["status", "acknowledged_by", "acknowledged_at"])
        audit.record(
            "alert.acknowledge",
            actor=by,
            request=request,
            vault=alert.vault,
            obj=alert,
            before={"status": AlertStatus.ACTIVE},
            after={"status": alert.status, "kind": alert.kind},
        )
    return alert


def resolve(alert: Alert, *, by: User, request: HttpRequest | None = None) -> Alert:
    access.require(by, alert.vault, "resolve_alert")
    if alert.status == AlertStatus.RESOLVED:
        raise rules.blocked("The alert is already resolved.", rule=rules.RULE_ALERT_STATE)
    before = alert.status
    with transaction.atomic():
        alert.status, alert.resolved_by, alert.resolved_at = (
            AlertStatus.RESOLVED,
            by,
            timezone.now(),
        )
        alert.save(update_fields=["status", "resolved_by", "resolved_at"])
        audit.record(
            "alert.resolve",
            actor=by,
            request=request,
            vault=alert.vault,
            obj=alert,
            before={"status": before},
            after={"status": alert.status, "kind": alert.kind},
        )
    return alert


def update_settings(
    vault: Vault, *, by: User, request: HttpRequest | None = None, job_alerts: bool
) -> VaultAlertSettings:
    access.require(by, vault, "change_settings")
    s, _ = VaultAlertSettings.objects.get_or_create(vault=vault)
    if s.job_alerts == job_alerts:
        return s
    with transaction.atomic():
        before = {"job_alerts": s.job_alerts}
        s.job_alerts = job_alerts
        s.save()
        audit.record(
            "alert_settings.update",
            actor=by,
            request=request,
            vault=vault,
            obj=s,
            before=before,
            after={"job_alerts": job_alerts},
        )
    return s


def active_alert_count(user: User | AnonymousUser | None) -> int:
    """Active alerts in the vaults the user sees (the navigation badge)."""
    if not (user and user.is_authenticated):
        return 0
    return access.visible(Alert.objects.all(), user).filter(status=AlertStatus.ACTIVE).count()
