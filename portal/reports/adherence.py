"""The policy adherence report: items whose last successful backup is older than their
schedule demands (`policies.schedule` knows the slots).

An item on a schedule adheres at a moment when it has a recovery point from its latest slot
that is at least `GRACE` old, or was protected after that slot (nothing was owed yet).
Stopped items owe nothing and are left out.
"""

from bisect import bisect_right
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from policies import schedule
from portal.reports.charts import Chart, Series
from portal.reports.items import items_in, last_success
from portal.reports.period import Period
from portal.reports.table import MOMENT, SECONDS, TEXT, Column, Table
from vaults.models import ItemState, RecoveryPoint

# How long a backup may take after its slot before the slot counts as missed.
GRACE = timedelta(hours=2)
SCHEDULED = [ItemState.PROTECTED, ItemState.PROTECTION_ERROR, ItemState.INITIAL_BACKUP_PENDING]
FREQUENCY = {"daily": "Daily", "weekly": "Weekly", "hourly": "Hourly"}

COLUMNS = [
    Column("vault", "Vault", TEXT),
    Column("vm", "VM", TEXT, link="url"),
    Column("policy", "Policy", TEXT),
    Column("frequency", "Schedule", TEXT),
    Column("last_success_at", "Last successful backup", MOMENT),
    Column("owed_since", "Backup owed since", MOMENT),
    Column("behind_seconds", "Behind by (s)", SECONDS),
    Column("adherent", "Adheres to its policy", TEXT),
]


def owed_slot(rep: dict[str, Any], at: datetime) -> datetime:
    """The slot whose backup an item must have at `at`: the latest one at least GRACE ago."""
    return schedule.previous_run(rep, at - GRACE)


def adheres(created: datetime, success: datetime | None, slot: datetime) -> bool:
    """Whether an item protected at `created`, last backed up at `success`, has the backup of
    its owed `slot` (or was protected after it)."""
    return created > slot or (success is not None and success >= slot)


def scheduled_items(user: User, period: Period) -> list[Any]:
    """Scheduled items (`ProtectedVM`s annotated with `last_success_at`)."""
    return list(
        items_in(user, period)
        .filter(state__in=SCHEDULED)
        .select_related("vault", "vm", "policy")
        .annotate(last_success_at=last_success())
        .order_by("vault__name", "vm__name")
    )


def _as_of(period: Period) -> datetime:
    return min(timezone.now(), period.end_at)


def adherence_table(period: Period, items: list[Any]) -> Table:
    """Each of `scheduled_items` as of the period's end (or now, if sooner)."""
    at = _as_of(period)
    rows = []
    reps: dict[int, dict[str, Any]] = {}
    slots: dict[int, datetime] = {}
    for item in items:
        rep = reps.setdefault(item.policy_id, item.policy.representation())
        if item.policy_id not in slots:
            slots[item.policy_id] = owed_slot(rep, at)
        slot = slots[item.policy_id]
        success = item.last_success_at
        if success is not None and success > at:
            success = None  # the period is in the past: judge by what existed then
        ok = adheres(item.created_at, success, slot)
        # Owed since the first slot after its last success (or its protection) that has no
        # backup; the owed slot at the latest.
        missed = None if ok else min(schedule.next_run(rep, success or item.created_at), slot)
        rows.append(
            {
                "vault": item.vault.name,
                "vm": item.vm.name,
                "url": reverse("item-detail", args=[item.vault.name, item.vm.name]),
                "policy": item.policy.name,
                "frequency": FREQUENCY.get(rep["schedule"]["frequency"], ""),
                "last_success_at": success,
                "owed_since": None if ok else missed,
                "behind_seconds": round((at - missed).total_seconds()) if missed else None,
                "adherent": "Yes" if ok else "No",
            }
        )
    return Table(list(COLUMNS), rows)


def adherence_chart(period: Period, items: list[Any]) -> Chart:
    """Per day: `scheduled_items` adhering and behind at the day's end (today: now)."""
    now = timezone.now()
    # Days still to come have no end to judge at.
    days = [d for d in period.days if Period(d, d).start_at <= now]
    ends = [min(now, Period(d, d).end_at) for d in days]
    times: dict[int, list[datetime]] = defaultdict(list)
    # Successes from a week before the period on: the longest schedule period (weekly).
    earliest = period.start_at - timedelta(days=8)
    rps = RecoveryPoint.objects.filter(
        protected_item__in=[i.pk for i in items], time__gte=earliest, time__lt=period.end_at
    ).values_list("protected_item_id", "time")
    for item_id, time in rps:
        times[item_id].append(time)
    for t in times.values():
        t.sort()
    reps = {i.policy_id: i.policy.representation() for i in items}
    # The owed slot depends on the policy alone: each policy's slots over the whole period in
    # one call, then the one owed at each day's end found by bisection.
    runs = {
        pk: schedule.run_times(rep, earliest - GRACE, ends[-1]) if ends else []
        for pk, rep in reps.items()
    }

    def owed(pk: int, end: datetime) -> datetime:
        k = bisect_right(runs[pk], end - GRACE)
        return runs[pk][k - 1] if k else owed_slot(reps[pk], end)

    good: list[float | None] = []
    behind: list[float | None] = []
    for end in ends:
        slots = {pk: owed(pk, end) for pk in reps}
        ok = late = 0
        for item in items:
            if item.created_at > end:
                continue
            mine = times.get(item.pk, [])
            k = bisect_right(mine, end)
            success = mine[k - 1] if k else None
            if adheres(item.created_at, success, slots[item.policy_id]):
                ok += 1
            else:
                late += 1
        good.append(ok)
        behind.append(late)
    return Chart(
        id="adherence-days",
        title="Items adhering to their policy at the end of each day",
        kind="bars",
        labels=[d.isoformat() for d in days],
        series=[
            Series("adherent", "Adhering", good, "good"),
            Series("behind", "Behind", behind, "bad"),
        ],
    )
