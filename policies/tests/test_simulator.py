"""The simulator agrees with retention as the scheduler and backups apply it, DST included."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import simulator
from policies.retention import retention_reductions, tags_and_expiry
from policies.schedule import daily_representatives, due, slot_day
from policies.tests.examples import EVERY4H, NIGHTLY
from policies.tests.strategies import instants, policies

BERLIN = ZoneInfo("Europe/Berlin")


def ticked_slots(policy: dict, start: datetime, until: datetime) -> list[datetime]:
    """The slots the scheduler's tick fires, one tick just after each of them (no downtime).

    Found by stepping `schedule.due` forward, not by `run_times`, so the two paths are compared.
    """
    slots: list[datetime] = []
    last = start
    now = start
    while True:
        fired = due(policy, last, now)
        if fired is not None:
            slots.append(fired)
            last = fired
        now = simulator.next_run(policy, now)
        if now > until:
            return slots


def real_points(policy: dict, start: datetime, until: datetime) -> dict[datetime, tuple]:
    """Each slot's (tags, expiry) as backups get them: the day's last backup (among every
    backup of that day, also those after ``until``) is the one the GFS rules may keep."""
    slots = ticked_slots(policy, start, until + timedelta(days=3))
    last_of_day = daily_representatives(policy, slots)
    return {
        s: tuple(tags_and_expiry(policy, s, is_daily_last=s in last_of_day))
        for s in slots
        if s <= until
    }


@settings(max_examples=60, deadline=None)
@given(policies(), instants, st.integers(1, 20), st.data())
def test_plan_agrees_with_real_retention(policy, start, days, data) -> None:
    until = start + timedelta(days=days)
    planned = simulator.plan(policy, start, until)
    real = real_points(policy, start, until)
    assert {p.slot: (list(p.tags), p.expires_at) for p in planned} == real
    # ... and so they agree on what is kept on any day of the horizon.
    at = data.draw(
        st.datetimes(
            min_value=start.replace(tzinfo=None),
            max_value=until.replace(tzinfo=None),
            timezones=st.just(UTC),
        )
    )
    kept = {p.slot for p in simulator.kept_at(planned, at)}
    assert kept == {s for s, (_, exp) in real.items() if s <= at < exp}


@settings(max_examples=60, deadline=None)
@given(policies(), policies(), instants, st.integers(1, 30))
def test_earlier_expiries_agree_with_reductions(old, new, start, days) -> None:
    times = ticked_slots(old, start, start + timedelta(days=days))
    found = simulator.earlier_expiries(old, new, [(i, t) for i, t in enumerate(times)])
    reasons = retention_reductions(old, new, times)
    mentioned = sum(1 for r in reasons if r.startswith("Recovery point of "))
    more = [int(m.group(1)) for r in reasons if (m := re.match(r"\.\.\. and (\d+) more", r))]
    assert len(found) == mentioned + sum(more)
    for row in found:
        assert row.expires_at is not None and row.new_expires_at < row.expires_at
        assert times[row.key] == row.slot


def test_dst_autumn_night_in_berlin() -> None:
    # 27 Oct 2024: 02:30 happens twice; the backup runs once, at the first (CEST) one.
    policy = {**NIGHTLY, "schedule": {"frequency": "daily", "time": "02:30"}}
    start = datetime(2024, 10, 26, 12, tzinfo=BERLIN)
    points = simulator.plan(policy, start, start + timedelta(days=2))
    assert [p.slot for p in points] == [
        datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2024, 10, 28, 1, 30, tzinfo=UTC),
    ]
    # The Sunday backup is the weekly one, kept 12 weeks later at the same wall time (CET).
    sunday = points[0]
    assert "weekly" in sunday.tags and sunday.tier == simulator.VAULT


def test_hourly_points_outside_the_days_last_stay_in_the_snapshot_tier() -> None:
    start = datetime(2024, 5, 1, 9, tzinfo=UTC)
    points = simulator.plan(EVERY4H, start, start + timedelta(days=1))
    vaulted = [p for p in points if p.tier == simulator.VAULT]
    assert vaulted and all(simulator.days_last(EVERY4H, p.slot) for p in vaulted)
    days = {slot_day(EVERY4H, p.slot) for p in vaulted}
    assert len(days) == len(vaulted)  # one per slot day
    assert all(p.expires_at == p.snapshot_expires_at for p in points if not p.tags)


def test_storage_counts_a_full_copy_and_the_changes() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    points = simulator.plan(NIGHTLY, start, start + timedelta(days=10))
    at = points[-1].slot
    held = simulator.storage(points, at, full_bytes=1000, change_bytes=10)
    assert held.vault == 1000 + 9 * 10
    snapshots = sum(1 for p in points if p.in_snapshot_at(at))
    assert held.snapshot == 1000 + (snapshots - 1) * 10
    assert simulator.peak_storage(points, full_bytes=1000, change_bytes=10) == held
    assert simulator.storage([], at, full_bytes=1000, change_bytes=10) == simulator.TierBytes(0, 0)


@settings(max_examples=40, deadline=None)
@given(policies(), instants, st.integers(1, 40))
def test_peak_storage_is_the_most_held_at_any_slot(policy, start, days) -> None:
    points = simulator.plan(policy, start, start + timedelta(days=days))
    sizes = {"full_bytes": 1000, "change_bytes": 7}
    at_slots = [simulator.storage(points, p.slot, **sizes) for p in points]
    peak = simulator.peak_storage(points, **sizes)
    assert peak.snapshot == max((t.snapshot for t in at_slots), default=0)
    assert peak.vault == max((t.vault for t in at_slots), default=0)
