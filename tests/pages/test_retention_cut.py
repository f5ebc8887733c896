"""Reducing a policy's retention shows which recovery points expire earlier and when, and
saves only once confirmed; the API offers the same as a dry run."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests import factories as f
from tests.pages.test_policy_form import data

pytestmark = pytest.mark.django_db

URL = reverse("policy-edit", args=["prod", "DefaultPolicy"])


@pytest.fixture
def history(item):
    """Daily recovery points of the last 20 days under DefaultPolicy (30 days)."""
    now = timezone.now()
    rps = []
    for i in range(20):
        rps.append(
            f.make_rp(
                item,
                time=now - timedelta(days=i, hours=1),
                in_vault_tier=True,
                expires_at=now - timedelta(days=i, hours=1) + timedelta(days=30),
            )
        )
    return rps


def _ten_days():
    return data(name="DefaultPolicy", daily_days="10", instant_restore_days="2")


def test_reducing_retention_lists_what_expires_and_saves_only_when_confirmed(
    login, contributor, item, history
):
    client = login(contributor)
    response = client.post(URL, _ten_days())
    assert response.status_code == 200
    cut = response.context["cut"]
    # The ten oldest expire at once (to the recycle bin); the latest is never among them.
    at_once = [c for c in cut["expiring"] if c.expires_now]
    later = [c for c in cut["expiring"] if not c.expires_now]
    assert len(at_once) == 10 and len(later) == 9
    assert str(history[0].pk) not in {c.rp_id for c in cut["expiring"]}
    html = response.content.decode()
    assert html.count('class="cut-row"') == 19 and "Confirm and save" in html
    item.policy.refresh_from_db()
    assert item.policy.retention["daily"]["days"] == 30
    # A further change after the preview is previewed again, not saved with the old token.
    again = client.post(URL, {**_ten_days(), "daily_days": "9", "confirm_cut": cut["token"]})
    assert again.status_code == 200 and again.context["cut"]
    saved = client.post(URL, {**_ten_days(), "confirm_cut": cut["token"]})
    assert saved.status_code == 302
    item.policy.refresh_from_db()
    assert item.policy.retention["daily"]["days"] == 10
    assert item.recovery_points.filter(soft_deleted_at__isnull=False).count() == 10


def test_a_change_that_cuts_nothing_saves_at_once(login, contributor, item, history):
    response = login(contributor).post(
        URL, data(name="DefaultPolicy", daily_days="60", instant_restore_days="2")
    )
    assert response.status_code == 302


def test_the_api_dry_run_shows_the_same_and_changes_nothing(api, contributor, item, history):
    url = "/api/v1/vaults/prod/policies/DefaultPolicy/"
    client = api(contributor)
    body = client.get(url).json()
    body["retention"]["daily"]["days"] = 10
    body.pop("protected_items", None)
    response = client.put(url + "?dry_run=true", body, format="json")
    assert response.status_code == 200, response.json()
    out = response.json()
    assert out["dry_run"] is True and out["reduces_retention"] is True
    assert len(out["expiring"]) == 19
    assert sum(1 for e in out["expiring"] if e["expires_now"]) == 10
    assert {"vm_name", "recovery_point", "time", "expires_at", "new_expires_at"} <= set(
        out["expiring"][0]
    )
    item.policy.refresh_from_db()
    assert item.policy.retention["daily"]["days"] == 30
    bad = client.put(url + "?dry_run=perhaps", body, format="json")
    assert bad.status_code == 400 and "dry_run" in bad.json()
