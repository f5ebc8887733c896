"""What a policy will keep, what it will cost, and what a change cuts. Pure Python.

``plan(policy, start, until)`` lists the recovery points the schedule makes in
``(start, until]`` with the tags, expiry and tier that ``policies.retention``
gives each, assuming every backup succeeds: only the day's last backup
(``days_last``: the next slot falls on another slot day) is eligible for the
GFS rules and goes to the vault tier, as a backup job decides; the other hourly ones live only in the snapshot tier.

``kept_at(points, at)`` is the set retention still holds at ``at``:
``slot <= at < expires_at``. The snapshot copy is held while
``at < snapshot_expires_at``; the vault copy while a tagged point lives.

``storage(points, at, full_bytes, change_bytes)`` estimates each tier's bytes
at ``at`` from an item's observed sizes: one full copy plus the changed bytes
of every other point held there (what block-level dedup stores).

``expiring_earlier(new, points)`` names the existing recovery points that
``new`` would expire earlier than they expire now, with both dates: each point
as the catalog holds it (its slot, whether it is its day's representative, its
stored expiry; no stored expiry counts as kept, so any date is earlier). It is
the one rule behind a policy change's confirmation and the simulator's list.
``earlier_expiries(old, new, rps)`` asks it about points whose expiry and
day's representative are computed from ``old``, exactly as
``retention.retention_reductions`` computes them, so the two agree. The latest
recovery point of an item, on-demand ones and those of retain-forever items
are always kept whatever their expiry; callers leave them out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from policies.retention import retention_decision
from policies.schedule import daily_representatives, next_run, policy_zone, run_times, slot_day

Policy = Mapping[str, Any]

SNAPSHOT = "snapshot"
VAULT = "vault"


@dataclass(frozen=True)
class PlannedPoint:
    slot: datetime
    tags: tuple[str, ...]
    expires_at: datetime
    snapshot_expires_at: datetime

    @property
    def tier(self) -> str:
        """Where the point lives longest: tagged points reach the vault tier."""
        return VAULT if self.tags else SNAPSHOT

    def held_at(self, at: datetime) -> bool:
        return self.slot <= at < self.expires_at

    def in_snapshot_at(self, at: datetime) -> bool:
        return self.slot <= at < self.snapshot_expires_at

    def in_vault_at(self, at: datetime) -> bool:
        return bool(self.tags) and self.held_at(at)


@dataclass(frozen=True)
class ExistingPoint:
    """A recovery point that exists, as the catalog holds it."""

    key: Any  # the caller's handle on the recovery point
    slot: datetime
    # Its day's representative (in, or bound for, the vault tier): the GFS rules may keep it.
    is_daily_last: bool
    expires_at: datetime | None  # its expiry now; None: no date (kept)


@dataclass(frozen=True)
class EarlierExpiry:
    key: Any  # the caller's handle on the recovery point
    slot: datetime
    expires_at: datetime | None  # its expiry now
    new_expires_at: datetime  # its expiry under the new policy, earlier


@dataclass(frozen=True)
class TierBytes:
    snapshot: int
    vault: int


def plan(policy: Policy, start: datetime, until: datetime) -> list[PlannedPoint]:
    """The recovery points of every slot in ``(start, until]``, as retention keeps them."""
    points = []
    slots = run_times(policy, start, until)
    hourly = policy["schedule"]["frequency"] == "hourly"
    for i, slot in enumerate(slots):
        # The next slot is the plan's next one (run_times misses none); only the last asks.
        following = slots[i + 1] if i + 1 < len(slots) else next_run(policy, slot)
        last = not hourly or slot_day(policy, following) != slot_day(policy, slot)
        decision = retention_decision(policy, slot, is_daily_last=last)
        points.append(
            PlannedPoint(slot, decision.tags, decision.expires_at, decision.snapshot_expires_at)
        )
    return points


def days_last(policy: Policy, slot: datetime) -> bool:
    """Is ``slot`` its day's last (the one the GFS rules may keep)? Asked of the next slot, not
    of the plan's, so a plan that ends mid-day places that day's points as the days will."""
    if policy["schedule"]["frequency"] != "hourly":
        return True
    return slot_day(policy, next_run(policy, slot)) != slot_day(policy, slot)


def kept_at(points: Iterable[PlannedPoint], at: datetime) -> list[PlannedPoint]:
    return [p for p in points if p.held_at(at)]


def calendar(policy: Policy, points: Sequence[PlannedPoint]) -> dict[date, list[PlannedPoint]]:
    """The points by local day of the policy's time zone (the day a user reads on a calendar)."""
    tz = policy_zone(policy)
    days: dict[date, list[PlannedPoint]] = {}
    for point in points:
        days.setdefault(point.slot.astimezone(tz).date(), []).append(point)
    return days


def storage(
    points: Iterable[PlannedPoint], at: datetime, *, full_bytes: int, change_bytes: int
) -> TierBytes:
    """Estimated bytes of each tier at ``at``: a full copy plus the changes of the others."""

    def tier(count: int) -> int:
        return 0 if count == 0 else full_bytes + (count - 1) * change_bytes

    held = list(points)
    snapshots = sum(1 for p in held if p.in_snapshot_at(at))
    vaulted = sum(1 for p in held if p.in_vault_at(at))
    return TierBytes(snapshot=tier(snapshots), vault=tier(vaulted))


def peak_storage(
    points: Sequence[PlannedPoint], *, full_bytes: int, change_bytes: int
) -> TierBytes:
    """The most each tier holds at any instant of the plan: a sweep over the points' arrivals
    and expiries (an expiry at the instant of an arrival is gone first, as ``held_at`` says)."""

    def most(spans: list[tuple[datetime, datetime]]) -> int:
        events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        held = peak = 0
        for _, step in events:  # -1 sorts before +1 at the same instant
            held += step
            peak = max(peak, held)
        return 0 if peak == 0 else full_bytes + (peak - 1) * change_bytes

    snapshot = [(p.slot, p.snapshot_expires_at) for p in points]
    vault = [(p.slot, p.expires_at) for p in points if p.tags]
    return TierBytes(snapshot=most(snapshot), vault=most(vault))


def expiring_earlier(new: Policy, points: Iterable[ExistingPoint]) -> list[EarlierExpiry]:
    """The existing ``points`` that ``new`` expires earlier than their expiry now, by slot."""
    found = []
    for point in sorted(points, key=lambda p: p.slot):
        after = retention_decision(new, point.slot, is_daily_last=point.is_daily_last).expires_at
        if point.expires_at is None or after < point.expires_at:
            found.append(EarlierExpiry(point.key, point.slot, point.expires_at, after))
    return found


def earlier_expiries(
    old: Policy, new: Policy, rps: Iterable[tuple[Any, datetime]]
) -> list[EarlierExpiry]:
    """Scheduled recovery points, as ``(key, slot)``, kept as ``old`` keeps them, that ``new``
    expires earlier (each policy picks its own days' representatives among the slots)."""
    rows = list(rps)
    times = [slot for _, slot in rows]
    reps_old = daily_representatives(old, times)
    reps_new = daily_representatives(new, times)
    points = [
        ExistingPoint(
            key,
            slot,
            is_daily_last=slot in reps_new,
            expires_at=retention_decision(old, slot, is_daily_last=slot in reps_old).expires_at,
        )
        for key, slot in rows
    ]
    return expiring_earlier(new, points)
