"""The policy editor's Simulate, in a real browser: the form as it stands (unsaved) is
simulated and its calendar shown; nothing is saved."""

import pytest

from tests.browser.conftest import log_in, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium]


def test_contributor_simulates_an_unsaved_change(
    transactional_db, live_server, vault, item, contributor, page
):
    base = live_server.url
    log_in(page, base, "contributor")
    policy = item.policy.name
    page.goto(f"{base}/vaults/prod/policies/{policy}/edit/")
    page.check("#id_weekly_enabled")
    page.fill("#id_weekly_weeks", "4")
    page.check("input[name=weekly_weekdays][value=sun]")
    page.select_option("#simulate-controls select[name=months]", "1")
    page.click("#simulate-controls button")
    calendar = page.locator("#simulation table.calendar")
    calendar.wait_for()
    assert page.locator("#simulation .tag-weekly").count() >= 4
    assert page.locator("#simulation .tag-daily").count() >= 28
    item.policy.refresh_from_db()
    assert "weekly" not in item.policy.retention  # a simulation saves nothing
