"""Template helpers. Templates never test roles: they ask these tags, which ask `access`."""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django import template
from django.contrib.auth import get_user_model
from django.db.models import Count, Exists, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.template.context import Context

from jobs.progress import phase_words
from portal import words as plain
from portal.reports.table import BYTES, COUNT, DATE, MOMENT, PERCENT, RATIO, SECONDS, Column, raw
from portal.units import iec as iec_text
from security.models import Alert, AlertStatus
from vaults import access
from vaults.models import GuardApprover, VaultMembership

register = template.Library()


@register.simple_tag(takes_context=True)
def site_caps(context: Context) -> dict[str, bool]:
    """Site-wide capabilities of the current user (create vaults, manage the inventory, …)."""
    request = context.get("request")
    return access.site_capabilities(request.user if request else None)


@register.filter
def last_failed_check(checks: object) -> str:
    """ "<check>: <detail>" of the first failed check of a drill (its `checks` list)."""
    for c in checks if isinstance(checks, list) else []:
        if isinstance(c, dict) and c.get("status") == "failed":
            return f"{c.get('name')}: {c.get('detail')}"
    return ""


@register.filter
def badge(value: object) -> str:
    """CSS classes of a state badge: the state's own class plus its tone."""
    value = str(value or "unknown")
    return f"badge badge-{value.replace('_', '-')} tone-{TONES.get(value, 'neutral')}"


TONES = {
    "completed": "good",
    "passed": "good",
    "suspicious": "bad",
    "protected": "good",
    "installed": "good",
    "running": "good",
    "application": "good",
    "completed_with_warnings": "warn",
    "initial_backup_pending": "warn",
    "file_system": "warn",
    "cancelling": "warn",
    "failed": "bad",
    "protection_error": "bad",
    "crash": "bad",
    "in_progress": "busy",
    "queued": "neutral",
    "protection_stopped": "muted",
    "soft_deleted": "muted",
    "cancelled": "muted",
    "stopped": "muted",
    "not_installed": "muted",
    "snapshot": "busy",
    "snapshot_and_vault": "good",
    "vault": "neutral",
    "pending": "warn",
    "approved": "busy",
    "executed": "good",
    "rejected": "bad",
    "expired": "muted",
    "active": "bad",
    "acknowledged": "warn",
    "resolved": "good",
    "sev0": "bad",
    "sev1": "warn",
}


@register.filter
def label(value: Any, choices: Iterable[tuple[Any, str]]) -> str:
    """`status|label:statuses` → the human label of a choice value."""
    return dict(choices).get(value, value)


@register.filter
def words(value: object) -> str:
    """A stored code in plain words (`portal.words`): every status, method, tag and code."""
    return plain.words(value)


@register.filter
def phase(value: object) -> str:
    """A job phase's name on the pages ("snapshot" → "Snapshot")."""
    return phase_words(str(value)) if value else ""


@register.filter
def iec(value: int | float | str | None) -> str:
    """Bytes in IEC units, the one unit system of every page (`portal.units.iec`)."""
    return iec_text(value)


@register.filter
def kept_through(value: datetime | None, zone: str = "UTC") -> datetime | None:
    """A retain-until instant as the last moment kept: a date picked as "retain until" keeps
    the backup through that day and expires at the next local midnight, which must show as
    the picked day, not the next one."""
    if value is None:
        return None
    local = value.astimezone(ZoneInfo(zone or "UTC"))
    if (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0):
        return value - timedelta(microseconds=1)
    return value


@register.filter
def ratio(value: float | None) -> str:
    """2.345 → "2.35×"; None (nothing stored yet) → "—"."""
    if value is None:
        return "—"
    return f"{value:.2f}×"


@register.filter
def cell(value: Any, column: Column) -> str:
    """A report cell as people read it, by its column's kind (CSV keeps the raw value)."""
    if value is None or value == "":
        return "—"
    kind = column.kind
    if kind == BYTES:
        return iec_text(value)
    if kind == RATIO:
        return ratio(value)
    if kind == PERCENT:
        return f"{value:.1f} %"
    if kind == SECONDS:
        return seconds(value)
    if kind == MOMENT:
        return f"{value:%Y-%m-%d %H:%M}"
    if kind in (DATE, COUNT):
        return raw(value)
    return str(value)


@register.filter
def get_item(mapping: dict[str, Any], key: str) -> Any:
    """`filters|get_item:name` → the value under a key that is itself a variable."""
    return mapping.get(key)


@register.filter
def raw_value(value: Any) -> str:
    """A report cell's raw value, as the CSV export writes it (`data-value` beside the text)."""
    return raw(value)


@register.filter
def seconds(value: timedelta | float | str | None) -> str:
    """A timedelta (or seconds) → "1 h 02 min", "3 min 05 s", "12 s"."""
    if value is None or value == "":
        return "—"
    total = int(value.total_seconds() if isinstance(value, timedelta) else float(value))
    hours, rest = divmod(max(total, 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


@register.filter
def lun(value: object) -> str:
    """-1 → "OS disk", 2 → "LUN 2"."""
    return "OS disk" if str(value) == "-1" else f"LUN {value}"


@register.simple_tag(takes_context=True)
def nav_state(context: Context) -> dict[str, Any]:
    """What the top navigation shows beyond links, in one query: the number of active alerts
    in the vaults the user sees (`security.alerts.active_alert_count`, the badge) and whether
    the user guards any vault (their "Approvals" entry)."""
    request = context.get("request")
    user = request.user if request else None
    if not (user and user.is_authenticated):
        return {"alerts": 0, "guard": False}
    active = Alert.objects.filter(status=AlertStatus.ACTIVE)
    if not access.is_site_admin(user):
        # The vaults the user sees (access.visible_vault_ids), as a subquery.
        active = active.filter(vault__in=VaultMembership.objects.filter(user=user).values("vault"))
    # Every row has the same status, so grouping by it gives one row: the count.
    count = active.order_by().values("status").annotate(n=Count("pk"))
    row = (
        get_user_model()
        .objects.filter(pk=user.pk)
        .annotate(
            alerts=Coalesce(Subquery(count.values("n")[:1], output_field=IntegerField()), 0),
            guard=Exists(GuardApprover.objects.filter(user=OuterRef("pk"))),
        )
        .values("alerts", "guard")
        .first()
    )
    return row or {"alerts": 0, "guard": False}
