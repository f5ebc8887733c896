"""A site admin creates a vault and a policy in a real browser, fixing an invalid field.

Drives Debian's Chromium (no browser download). The policy form validates inline with htmx
on change, and again on submit without it.
"""

import os
from pathlib import Path

import pytest

from vaults.models import Vault

CHROMIUM = Path("/usr/bin/chromium")

# Playwright's sync API runs an event loop in this thread; the ORM calls below are still
# plain synchronous code.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium"),
]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, tmp_path, request):
    page = browser.new_page()
    page.set_default_timeout(10_000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is None or report.failed:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
    page.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call":
        item.rep_call = outcome.get_result()


def test_admin_creates_a_vault_and_fixes_an_invalid_policy(
    transactional_db, live_server, admin_user, page
):
    base = live_server.url

    page.goto(f"{base}/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "pw-secret-1")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")

    page.goto(f"{base}/vaults/new/")
    page.fill("#id_name", "browser-vault")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/vaults/browser-vault/")
    assert Vault.objects.filter(name="browser-vault").exists()

    page.click("nav.tabs >> text=Policies")
    page.click("text=New policy")
    page.wait_for_url(f"{base}/vaults/browser-vault/policies/new/")
    # Fields of other frequencies are hidden by the small script, not removed.
    assert page.is_hidden("#field-schedule_interval_hours")

    page.fill("#id_name", "Nightly")
    page.fill("#id_daily_days", "5")
    page.press("#id_daily_days", "Tab")  # change → htmx validation, nothing saved
    error = page.locator("#field-daily_days .field-error")
    error.wait_for()
    assert "Must be between 7 and 9999 days." in error.inner_text()
    assert not Vault.objects.get(name="browser-vault").policies.filter(name="Nightly").exists()

    page.click("main button[type=submit]")  # a full submit shows the same message
    page.locator("#field-daily_days .field-error").wait_for()

    page.fill("#id_daily_days", "30")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/vaults/browser-vault/policies/")
    row = page.locator("#policy-Nightly")
    row.wait_for()
    assert "daily: 30 days" in row.inner_text()
    assert "Policy Nightly created." in page.inner_text(".messages")
