"""A VM's recovery points by date: the month calendar, a date-range filter in the policy's
time zone, paging, and a clear error naming a bad field."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/items/web-01/rps/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def test_the_calendar_marks_days_with_their_best_tier_and_consistency(login, reader, item):
    day = timezone.now().astimezone(ZoneInfo("UTC")).replace(day=3, hour=10)
    f.make_rp(item, time=day, consistency="crash")
    f.make_rp(item, time=day + timedelta(hours=2), consistency="application", in_vault_tier=True)
    html = login(reader).get(URL, {"month": day.strftime("%Y-%m")}).content.decode()
    cell = html[html.index(f'data-day="{day.date().isoformat()}"') - 60 :][:700]
    assert "tier-snapshot_and_vault" in cell and "Application-consistent" in cell
    assert ">2<" in cell  # two recovery points that day
    assert html.count('class="has-rps') == 1


def test_the_date_filter_uses_the_policy_time_zone(login, reader, item):
    item.policy.timezone = "Asia/Tokyo"
    item.policy.save()
    tokyo = ZoneInfo("Asia/Tokyo")
    # 23:30 in Tokyo on the 10th is still the 10th there, though already 14:30 UTC.
    late = datetime(2026, 11, 10, 23, 30, tzinfo=tokyo)
    next_day = datetime(2026, 11, 11, 0, 30, tzinfo=tokyo)
    a = f.make_rp(item, time=late)
    f.make_rp(item, time=next_day)
    response = login(reader).get(URL, {"from": "2026-11-10", "to": "2026-11-10"})
    assert [rp.pk for rp in response.context["rps"]] == [a.pk]
    html = response.content.decode()
    assert "2026-11-10 23:30:00" in html and "Asia/Tokyo" in html


def test_it_pages_twenty_at_a_time(login, reader, item):
    now = timezone.now()
    for i in range(45):
        f.make_rp(item, time=now - timedelta(hours=i))
    client = login(reader)
    first = client.get(URL)
    assert len(first.context["rps"]) == 20
    third = client.get(URL, {"page": 3})
    assert len(third.context["rps"]) == 5 and "Page 3 of 3" in third.content.decode()


def test_a_bad_date_names_the_field(login, reader, item):
    response = login(reader).get(URL, {"from": "yesterday"})
    assert response.status_code == 400
    assert "from: enter a date as YYYY-MM-DD" in response.content.decode()
    # htmx gets the browser back with the message inside it.
    fragment = login(reader).get(URL, {"to": "2026-01-01", "from": "2026-02-01"}, **HTMX)
    assert fragment.status_code == 200
    assert "to: the end date is before the start date." in fragment.content.decode()


def test_rp_table_shows_changed_and_deduplicated_bytes(login, reader, item):
    f.make_rp(
        item,
        in_vault_tier=True,
        vault_present_bytes=3 << 20,
        disks=[{"lun": -1, "size": 4 << 20, "bytes_changed": 1 << 20}],
        snapshot_method="live_read",
    )
    html = login(reader).get(URL).content.decode()
    assert "Changed" in html and "Not needed by the vault" in html
    assert ">1.0 MiB<" in html and ">3.0 MiB<" in html
    # Read while the VM kept writing: the label says it is no point-in-time copy.
    assert "not point-in-time" in html


def test_it_keeps_its_query_budget(assert_query_budget, reader, item):
    def make_rows(n):
        now = timezone.now()
        for i in range(n):
            f.make_rp(item, time=now - timedelta(hours=i + 1))

    assert_query_budget(reader, URL, make_rows, 10, marker=None)


def test_outsider_gets_404(login, outsider, item):
    assert login(outsider).get(URL).status_code == 404
