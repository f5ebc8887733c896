"""A contributor stops protection of a VM with delete data, finds it in the vault's recycle
bin, undeletes it and sees it back as "protection stopped" — in a real browser (Debian's
Chromium), through htmx's confirmations and client-side redirects."""

import pytest

from tests.browser.conftest import log_in, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium]


def test_contributor_deletes_finds_and_undeletes_an_item(
    transactional_db, live_server, page, vault, contributor, item, rp
):
    base = live_server.url
    confirms = []

    def accept(dialog):
        confirms.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    log_in(page, base, "contributor")

    page.goto(f"{base}/vaults/prod/items/web-01/")
    assert page.inner_text("#item-state") == "Protected"
    page.check("#stop-form input[value=delete_data]")
    page.click("#stop-form button[type=submit]")
    page.wait_for_url(f"{base}/vaults/prod/recycle-bin/")
    assert confirms == ["Stop protection of web-01?"]
    row = page.locator(".bin-row", has_text="web-01")
    assert row.count() == 1
    assert "contributor" in row.inner_text()
    assert "Protection stopped with delete data" in row.inner_text()

    row.locator("button", has_text="Undelete").click()
    page.wait_for_url(f"{base}/vaults/prod/items/web-01/")
    assert confirms[-1] == "Undelete web-01?"
    assert page.inner_text("#item-state") == "Protection stopped"
    assert "undeleted" in page.inner_text(".messages")
    page.goto(f"{base}/vaults/prod/recycle-bin/")
    assert page.locator(".bin-row").count() == 0
