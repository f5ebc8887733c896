from datetime import UTC, datetime, timedelta

from django.urls import reverse

from policies.retention import tags_and_expiry
from tests import factories as f

SIMULATE = reverse("api-policy-simulate", args=["prod"])

DRAFT = {
    "schedule": {"frequency": "daily", "time": "02:00"},
    "retention": {"daily": {"days": 7}, "weekly": {"weeks": 4, "weekdays": ["sun"]}},
}


def test_reader_simulates_a_draft(api, vault, reader):
    r = api(reader).post(SIMULATE, {"policy": DRAFT, "months": 1}, format="json")
    assert r.status_code == 200, r.data
    points = r.data["recovery_points"]
    assert 27 <= len(points) <= 32
    assert all(p["tier"] == "vault" and "daily" in p["tags"] for p in points)
    assert any("weekly" in p["tags"] for p in points)
    assert r.data["earlier_expiries"] == []
    assert r.data["policy"]["name"] == "Draft"


def test_storage_follows_the_items_observed_change_rate(api, vault, item, reader):
    parent = f.make_rp(item, size_bytes=100 << 20, time=datetime(2024, 1, 1, tzinfo=UTC))
    for day in range(2, 5):
        f.make_rp(
            item,
            parent=parent,
            size_bytes=100 << 20,
            time=datetime(2024, 1, day, tzinfo=UTC),
            disks=[{"lun": -1, "size": 100 << 20, "bytes_changed": 1 << 20}],
        )
    body = {"name": item.policy.name, "months": 1}
    r = api(reader).post(SIMULATE, body, format="json")
    assert r.status_code == 200, r.data
    storage = r.data["storage"]
    assert storage["full_bytes"] == 100 << 20
    assert storage["change_bytes_per_backup"] == 1 << 20
    # The default policy keeps 30 daily points: one full copy and 29 changes at most.
    assert storage["peak_bytes"]["vault"] <= (100 << 20) + 29 * (1 << 20)
    assert storage["peak_bytes"]["vault"] >= (100 << 20) + 28 * (1 << 20)


def test_a_shorter_retention_names_the_points_it_cuts(api, vault, item, contributor):
    policy = item.policy
    rep = policy.representation()
    slots = [datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0)]
    slots = [slots[0] - timedelta(days=d) for d in (1, 3, 10)]
    for slot in slots:
        tags, expires = tags_and_expiry(rep, slot)
        f.make_rp(item, time=slot, slot=slot, tags=tags, expires_at=expires)
    f.make_rp(item, time=datetime.now(UTC))  # the latest: always kept
    shorter = {**rep, "retention": {"daily": {"days": 7}}}
    r = api(contributor).post(SIMULATE, {"name": policy.name, "policy": shorter}, format="json")
    assert r.status_code == 200, r.data
    cut = r.data["earlier_expiries"]
    assert [c["time"] for c in cut] == sorted(slots)
    assert all(c["item"] == item.vm.name for c in cut)
    assert all(c["expires_at_after_change"] < c["expires_at"] for c in cut)


def test_bad_input_names_the_field(api, vault, reader):
    client = api(reader)
    r = client.post(
        SIMULATE, {"policy": {**DRAFT, "schedule": {"frequency": "daily"}}}, format="json"
    )
    assert r.status_code == 400 and "policy.schedule.time" in r.data
    r = client.post(SIMULATE, {"policy": DRAFT, "months": 99}, format="json")
    assert r.status_code == 400 and "months" in r.data
    r = client.post(SIMULATE, {"name": "Nope"}, format="json")
    assert r.status_code == 400 and "name" in r.data
    r = client.post(SIMULATE, {"policy": DRAFT, "bogus": 1}, format="json")
    assert r.status_code == 400 and "bogus" in r.data
    r = client.post(SIMULATE, {}, format="json")
    assert r.status_code == 400 and "policy" in r.data


def test_outsider_sees_nothing(api, vault, outsider):
    assert api(outsider).post(SIMULATE, {"policy": DRAFT}, format="json").status_code == 404


def test_the_editor_page_shows_the_calendar(client, vault, item, contributor):
    client.force_login(contributor)
    page = client.get(reverse("policy-edit", args=["prod", item.policy.name]))
    assert b"Simulate" in page.content
    form = {
        "name": item.policy.name,
        "kind": "standard",
        "timezone": "UTC",
        "consistency": "default",
        "schedule_frequency": "daily",
        "schedule_time": "02:00",
        "instant_restore_days": "2",
        "daily_enabled": "on",
        "daily_days": "7",
        "months": "1",
        "editing": item.policy.name,
    }
    r = client.post(reverse("policy-simulate", args=["prod"]), form, HTTP_HX_REQUEST="true")
    assert r.status_code == 200
    assert b'class="calendar"' in r.content and b"tag-daily" in r.content
    form["daily_days"] = "x"
    r = client.post(reverse("policy-simulate", args=["prod"]), form, HTTP_HX_REQUEST="true")
    assert b'role="alert"' in r.content
