"""A user adds an authenticator app in a real browser (Debian's Chromium), reading the secret
off the page as a person types it into an app, keeps the recovery codes shown once, then logs
in again: password, then the app's code. The code is computed from the secret as an app does."""

from base64 import b32decode

import pytest

from engine.tests.tools import require_tool
from tests import factories as f
from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _chromium():
    require_tool("chromium")


def test_enrol_an_app_then_log_in_with_its_code(transactional_db, live_server, page, reader):
    base = live_server.url
    log_in(page, base, "reader")
    page.click("#nav-second-factor")
    page.wait_for_url(f"{base}/account/second-factor/")
    assert page.locator("#no-apps").count() == 1
    page.click("#add-app")
    page.wait_for_url(f"{base}/account/second-factor/app/")
    assert page.locator("#qr svg").count() == 1
    key = b32decode(page.inner_text("#secret").replace(" ", "")).hex()
    page.fill("#id_name", "work phone")
    page.fill("#id_code", f.totp_code(key))
    page.click("#enrol-form button[type=submit]")
    codes = page.inner_text("#recovery-codes").split()
    assert len(codes) == 10
    assert "shown only once" in page.inner_text("main")

    page.goto(f"{base}/account/second-factor/")
    assert "work phone" in page.inner_text("#apps")
    page.click(".logout button")
    page.wait_for_url(f"{base}/login/")

    page.fill("#id_username", "reader")
    page.fill("#id_password", "pw-secret-1")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/login/code/")
    # A wrong code first: said in words, still not signed in.
    page.fill("#id_code", "000000" if f.totp_code(key, 1) != "000000" else "111111")
    page.click("#code-form button[type=submit]")
    assert "wrong or was already used" in page.inner_text("main")
    # The next time step's code (the enrolment used this one's).
    page.fill("#id_code", f.totp_code(key, steps=1))
    page.click("#code-form button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert "reader" in page.inner_text(".logout")
