"""An operator opens a file-recovery session in a real browser, walks into a subdirectory
(htmx swaps the listing) and downloads a file whose bytes equal the original; damaged data
makes a download fail visibly and the page say so.

The recovery point is real: an ext4 image backed up in this process (`real_rp`)."""

import pytest
from django.urls import reverse

from tests.browser.conftest import log_in, needs_chromium
from tests.damage import flip_chunks_holding

pytestmark = [pytest.mark.browser, needs_chromium]


def test_operator_browses_and_downloads_a_file(
    transactional_db, live_server, operator, real_rp, page
):
    rp, files, _ = real_rp
    base = live_server.url
    log_in(page, base, "operator")
    files_url = reverse("rp-files", args=["prod", "files-01", rp.pk])
    page.goto(base + files_url)
    page.click("#open-session")
    page.wait_for_selector("#end-session")
    assert "Session open until" in page.inner_text("#session")

    page.click("#disk-picker >> text=OS disk")
    page.locator("#entries >> text=data/").wait_for()
    page.evaluate("window.__notReloaded = true")
    page.click("#entries >> text=data/")
    page.locator("#entries >> text=sub/").wait_for()
    page.click("#entries >> text=sub/")
    page.locator("#entries >> text=deeper/").wait_for()
    page.click("#entries >> text=deeper/")
    row = page.locator("#entries tr", has_text="blob.bin")
    row.wait_for()
    # htmx swapped the listing and pushed the address: no page load happened.
    assert page.evaluate("window.__notReloaded") is True
    assert "path=%2Fdata%2Fsub%2Fdeeper" in page.url
    crumbs = page.inner_text("#breadcrumbs")
    assert "data" in crumbs and "sub" in crumbs and "deeper" in crumbs

    with page.expect_download() as info:
        row.locator("a.download").click()
    download = info.value
    assert download.suggested_filename == "blob.bin"
    assert open(download.path(), "rb").read() == files["/data/sub/deeper/blob.bin"]


REPORT, BLOB = "/data/sub/report.txt", "/data/sub/deeper/blob.bin"


@pytest.fixture
def damaged_rp(real_rp):
    """`real_rp` with the start of report.txt and the end of blob.bin damaged (its first MiB
    stays readable). A fixture, so the ORM runs before Playwright: in the test body it would
    open a second database connection that nothing closes."""
    rp, files, image = real_rp
    flip_chunks_holding(rp, -1, image, files[REPORT][:512], files[BLOB][-1024:-512])
    return rp


def test_a_damaged_download_fails_in_the_browser_and_the_page_says_so(
    transactional_db, runserver, operator, damaged_rp, page
):
    """Served as `manage.py runserver` serves (portal/server.py)."""
    base = f"http://localhost:{runserver.port}"
    log_in(page, base, "operator")
    files_url = base + reverse("rp-files", args=["prod", "files-01", damaged_rp.pk])
    page.goto(files_url)
    page.click("#open-session")
    page.wait_for_selector("#end-session")

    # Damage at the start: the link leads to the page, which says what happened.
    page.goto(files_url + "?disk=-1&path=%2Fdata%2Fsub")
    page.locator("#entries tr", has_text="report.txt").locator("a.download").click()
    page.wait_for_selector("#damage-notice")
    assert "damaged" in page.inner_text("#listing") and REPORT in page.inner_text("#listing")

    # Damage further in: the download has begun, and the browser marks it failed.
    page.goto(files_url + "?disk=-1&path=%2Fdata%2Fsub%2Fdeeper")
    with page.expect_download() as info:
        page.locator("#entries tr", has_text="blob.bin").locator("a.download").click()
    assert info.value.failure() is not None
    page.reload()
    assert BLOB in page.inner_text("#damage-notice")
