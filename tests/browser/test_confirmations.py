"""Nothing destructive happens by a stray click, in a real browser (Debian's Chromium):
"Replace disks" asks for the VM's name typed, and reducing a policy's retention shows which
recovery points expire and when before it saves."""

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job, Operation
from tests import factories as f
from tests.browser.conftest import log_in, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium]


def test_replace_disks_needs_the_vm_name_typed(live_server, page, operator, real_rp):
    rp, _, _ = real_rp
    base = live_server.url
    log_in(page, base, "operator")
    page.goto(f"{base}/vaults/prod/items/files-01/rps/{rp.pk}/restore/")
    assert page.is_hidden("#id_confirm_name")
    page.check("input[name=kind][value=replace_disks]")
    assert page.is_visible("#id_confirm_name")
    page.fill("#id_confirm_name", "files-0")  # a typo
    page.click("#restore-form button[type=submit]")
    page.wait_for_selector("#errors-confirm_name .field-error")
    assert "Type the VM's name, files-01" in page.inner_text("#errors-confirm_name")
    assert not Job.objects.filter(operation=Operation.RESTORE).exists()
    # The form kept the choice: the confirmation field is still there, now typed right.
    page.fill("#id_confirm_name", "files-01")
    page.click("#restore-form button[type=submit]")
    page.wait_for_selector("#restore-details")
    assert page.inner_text("#restore-kind") == "Replace existing disks"
    assert Job.objects.filter(operation=Operation.RESTORE).count() == 1


def test_reducing_retention_previews_the_cut_and_asks_to_confirm(
    live_server, page, contributor, item
):
    now = timezone.now()
    for i in range(12):
        t = now - timedelta(days=i, hours=1)
        f.make_rp(item, time=t, in_vault_tier=True, expires_at=t + timedelta(days=30))
    base = live_server.url
    log_in(page, base, "contributor")
    page.goto(f"{base}/vaults/prod/policies/DefaultPolicy/edit/")
    page.fill("#id_daily_days", "7")
    page.click("#policy-submit")
    page.wait_for_selector("#retention-cut")
    rows = page.locator("#retention-cut-table .cut-row")
    assert rows.count() == 11  # every one but the latest expires earlier
    assert rows.filter(has_text="at once").count() == 5  # 7..11 days old
    assert page.inner_text("#policy-submit") == "Confirm and save"
    item.policy.refresh_from_db()
    assert item.policy.retention["daily"]["days"] == 30
    # The simulator shows the same points beside the draft's calendar, on this page.
    page.click("#retention-cut-simulate")
    page.wait_for_selector("#simulation table.calendar")
    simulated = page.locator("#simulation-earlier .earlier-row")
    shown = [rows.nth(i).get_attribute("data-rp") for i in range(rows.count())]
    assert [simulated.nth(i).get_attribute("data-rp") for i in range(simulated.count())] == shown
    assert page.url.endswith("/policies/DefaultPolicy/edit/")
    page.click("#policy-submit")
    page.wait_for_url(f"{base}/vaults/prod/policies/")
    item.policy.refresh_from_db()
    assert item.policy.retention["daily"]["days"] == 7
