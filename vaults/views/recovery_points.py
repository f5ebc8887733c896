"""A protected VM's recovery points by date: a month calendar (days with RPs, their best tier
and consistency), a date-range filter and pages of the list.

Dates are days in the item's policy time zone, the zone its schedule and retention speak, so
the calendar, the filter and the list agree with the retain-until picker.
"""

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.utils import timezone
from django.utils.http import urlencode

from portal.pages import PageRequest, render_page
from vaults import access
from vaults.models import ProtectedVM, RPType, Vault
from vaults.views.common import item_of, vault_context

PAGE_SIZE = 20
# Best first: the badge a calendar day shows is its best RP's.
TIER_RANK = [RPType.SNAPSHOT_AND_VAULT, RPType.VAULT, RPType.SNAPSHOT]
CONSISTENCY_RANK = ["application", "file_system", "crash"]


def item_zone(item: ProtectedVM) -> ZoneInfo:
    try:
        return ZoneInfo(item.policy.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass
class RPFilter:
    """The list's date range and calendar month, read from the query string."""

    start: date | None
    end: date | None
    month: date
    errors: dict[str, str]

    def query(self, **extra: Any) -> str:
        values = {
            "from": self.start.isoformat() if self.start else "",
            "to": self.end.isoformat() if self.end else "",
            "month": self.month.strftime("%Y-%m"),
            **extra,
        }
        return urlencode({k: v for k, v in values.items() if v})


def _day(value: str, field: str, errors: dict[str, str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[field] = f"{field}: enter a date as YYYY-MM-DD (got {value[:20]!r})."
        return None


def read_filter(params: Any, today: date) -> RPFilter:
    errors: dict[str, str] = {}
    start = _day(params.get("from", ""), "from", errors)
    end = _day(params.get("to", ""), "to", errors)
    if start and end and end < start:
        errors["to"] = "to: the end date is before the start date."
        end = None
    month = (end or start or today).replace(day=1)
    raw = params.get("month", "")
    if raw:
        try:
            month = datetime.strptime(raw, "%Y-%m").date()
        except ValueError:
            errors["month"] = f"month: enter a month as YYYY-MM (got {raw[:20]!r})."
    return RPFilter(start, end, month, errors)


def _local_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone)


def _month_grid(
    item: ProtectedVM, month: date, zone: ZoneInfo, rf: RPFilter
) -> list[list[dict[str, Any] | None]]:
    """Weeks (Monday first) of the month; each day with its RP count, best tier and best
    consistency, in one query."""
    last = calendar.monthrange(month.year, month.month)[1]
    after = _local_start(month, zone)
    before = _local_start(month.replace(day=last) + timedelta(days=1), zone)
    rows = (
        item.recovery_points.live()
        .filter(time__gte=after, time__lt=before)
        .values_list("time", "in_snapshot_tier", "in_vault_tier", "consistency")
    )
    days: dict[int, dict[str, Any]] = {}
    for when, snap, vault, consistency in rows:
        tier = (
            RPType.SNAPSHOT_AND_VAULT
            if snap and vault
            else RPType.SNAPSHOT
            if snap
            else RPType.VAULT
        )
        d = days.setdefault(when.astimezone(zone).day, {"count": 0, "tiers": [], "cons": []})
        d["count"] += 1
        d["tiers"].append(tier)
        d["cons"].append(consistency)
    weeks: list[list[dict[str, Any] | None]] = []
    for week in calendar.Calendar(firstweekday=0).monthdayscalendar(month.year, month.month):
        cells: list[dict[str, Any] | None] = []
        for n in week:
            if n == 0:
                cells.append(None)
                continue
            day = month.replace(day=n)
            info = days.get(n)
            cell: dict[str, Any] = {"day": day, "count": 0}
            if info:
                tier = min(info["tiers"], key=TIER_RANK.index)
                cons = min(info["cons"], key=CONSISTENCY_RANK.index)
                iso = day.isoformat()
                q = RPFilter(day, day, rf.month, {}).query()
                cell.update(count=info["count"], tier=tier, consistency=cons, query=q, iso=iso)
            cells.append(cell)
        weeks.append(cells)
    return weeks


def _shift_month(month: date, by: int) -> date:
    index = month.year * 12 + month.month - 1 + by
    return date(index // 12, index % 12 + 1, 1)


def rp_context(request: PageRequest, item: ProtectedVM) -> dict[str, Any]:
    """The recovery-point browser of an item: the calendar month, the filter and one page."""
    zone = item_zone(item)
    today = timezone.now().astimezone(zone).date()
    rf = read_filter(request.GET, today)
    rps = item.recovery_points.live().order_by("-time", "-pk")
    if rf.start:
        rps = rps.filter(time__gte=_local_start(rf.start, zone))
    if rf.end:
        rps = rps.filter(time__lt=_local_start(rf.end + timedelta(days=1), zone))
    page = Paginator(rps, PAGE_SIZE).get_page(request.GET.get("page"))
    return {
        "rp_page": page,
        "rps": list(page.object_list),
        "rp_filter": rf,
        "rp_zone": str(zone.key),
        "rp_weeks": _month_grid(item, rf.month, zone, rf),
        "rp_month": rf.month,
        "rp_prev_month": RPFilter(rf.start, rf.end, _shift_month(rf.month, -1), {}).query(),
        "rp_next_month": RPFilter(rf.start, rf.end, _shift_month(rf.month, 1), {}).query(),
        "rp_query": rf.query(),
        "rp_filtered": bool(rf.start or rf.end),
        "weekdays": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"],
    }


@login_required
def item_rps(request: PageRequest, name: str, vm_name: str) -> HttpResponse:
    """The recovery points of one VM by date (a full page; htmx swaps only the browser)."""
    vault: Vault = access.get_vault(request.user, name, "view")
    item = item_of(vault, vm_name)
    context = vault_context(request, vault, "items", item=item, **rp_context(request, item))
    # htmx swaps 200s only: its errors come back inside the browser.
    status = 400 if context["rp_filter"].errors and not request.htmx else 200
    return render_page(
        request, "vaults/item_rps.html", context, partial="rp-browser", status=status
    )
