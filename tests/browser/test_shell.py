"""The shell in a real browser (Debian's Chromium): every main page fits a 390 px phone without
page-level horizontal scrolling and has no serious or critical accessibility violation
(axe-core, vendored under static/vendor/axe-core/), an htmx action answered 403 shows what
went wrong, and the API docs render with the network blocked.

`test_axe_finds_no_serious_or_critical_violation` prints each page's result (run with -s).
"""

from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from jobs.models import Operation, Status, SubTask
from portal.reports.catalog import REPORTS
from security.models import Alert
from tests import factories as f
from tests.browser.conftest import log_in, needs_chromium
from vaults.models import Role, VaultMembership

pytestmark = [pytest.mark.browser, needs_chromium]

AXE = Path(settings.BASE_DIR) / "static" / "vendor" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
def world(vault, item, admin_user):
    """A vault with recovery points over two months, a finished two-disk backup job with its
    phases, a running one, a restore, and an alert: what the main pages show on a real day."""
    now = timezone.now()
    for i in range(30):
        f.make_rp(
            item,
            time=now - timedelta(days=i * 2, hours=1),
            consistency=["application", "file_system", "crash"][i % 3],
            in_vault_tier=i % 2 == 0,
            in_snapshot_tier=i < 4,
            tags=["daily"] if i % 7 else ["daily", "weekly"],
            vault_present_bytes=(i * 3) << 20 if i % 2 == 0 else None,
            disks=[
                {"lun": -1, "size": 4 << 20, "bytes_changed": 1 << 20},
                {"lun": 0, "size": 2 << 20, "bytes_changed": 0},
            ],
        )
    disks = [
        {"lun": -1, "done": 4 << 20, "total": 4 << 20},
        {"lun": 0, "done": 2 << 20, "total": 2 << 20},
    ]
    job = f.make_job(
        vault,
        item,
        status=Status.COMPLETED,
        started_at=now - timedelta(minutes=3),
        ended_at=now - timedelta(minutes=2),
        bytes_total=6 << 20,
        bytes_done=6 << 20,
        result={
            "consistency": "file_system",
            "snapshot_method": "reflink",
            "bytes_read": 6 << 20,
            "bytes_changed": 1 << 20,
            "bytes_stored": 1 << 20,
            "transfer": {
                "chunks_copied": 1,
                "bytes_copied": 1 << 20,
                "chunks_present": 5,
                "bytes_present": 5 << 20,
            },
            "progress": {
                "phase": "transfer",
                "percent": 100,
                "plan": [["snapshot", 60], ["transfer", 40]],
                "disks": disks,
                "phases": {"snapshot": {"disks": disks}, "transfer": {"disks": disks}},
            },
        },
    )
    SubTask.objects.create(
        job=job, order=0, name="Take snapshot", status=Status.COMPLETED, bytes_done=6 << 20
    )
    SubTask.objects.create(
        job=job, order=1, name="Transfer data to vault", status=Status.COMPLETED, bytes_done=1 << 20
    )
    f.make_job(
        vault,
        None,
        operation=Operation.GARBAGE_COLLECT,
        status=Status.FAILED,
        error_code="worker_lost",
    )
    Alert.objects.create(
        vault=vault,
        severity="sev1",
        kind="job_failed",
        message="Backup of web-01 failed.",
        dedup_key="job_failed:web-01",
    )
    return {"job": job}


def main_pages(job) -> list[str]:
    """The pages an administrator uses every day (each tab of a vault, the site pages)."""
    vault, vm = "prod", "web-01"
    return [
        reverse("dashboard"),
        reverse("vault-list"),
        reverse("vault-detail", args=[vault]),
        reverse("item-list", args=[vault]),
        reverse("item-detail", args=[vault, vm]),
        reverse("item-rps", args=[vault, vm]),
        reverse("job-list", args=[vault]),
        reverse("job-detail", args=[vault, job.pk]),
        reverse("policy-list", args=[vault]),
        reverse("policy-edit", args=[vault, job.protected_item.policy.name]),
        reverse("alert-list", args=[vault]),
        reverse("vault-access", args=[vault]),
        reverse("vault-settings", args=[vault]),
        reverse("vault-recycle-bin", args=[vault]),
        reverse("vault-audit", args=[vault]),
        reverse("vault-protect", args=[vault]),
        reverse("site-alerts"),
        reverse("host-list"),
        reverse("vm-list"),
        reverse("target-list"),
        reverse("key-list"),
        reverse("site-audit"),
        reverse("account-tokens"),
        reverse("report-list"),
        *(reverse("report-detail", args=[slug]) for slug in REPORTS),
        reverse("site-health"),
        reverse("account-second-factor"),
        reverse("directory-list"),
        reverse("vault-attach"),
        "/vaults/prod/no-such-page/",
    ]


def _no_sideways_scroll(page) -> dict:
    return page.evaluate(
        """() => ({
            scroll: document.documentElement.scrollWidth,
            width: document.documentElement.clientWidth,
            wide: [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
                        && !e.closest('.table-scroll, table.list, .tabs'))
                .slice(0, 3).map(e => e.tagName + '#' + e.id + '.' + e.className),
        })"""
    )


def test_no_horizontal_scroll_at_390_px_on_every_main_page(live_server, browser, world):
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    base = live_server.url
    log_in(page, base, "admin")
    # The navigation is folded behind its button, and opens.
    assert page.is_visible(".nav-toggle") and not page.is_visible("#site-nav")
    page.click(".nav-toggle")
    assert page.is_visible("#nav-api-docs")
    failures = {}
    for path in main_pages(world["job"]):
        page.goto(base + path)
        m = _no_sideways_scroll(page)
        if m["scroll"] > m["width"]:
            failures[path] = m
    context.close()
    assert failures == {}


def _axe(page) -> list[dict]:
    page.add_script_tag(path=str(AXE))
    return page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,
                                           where: v.nodes.slice(0, 2).map(n => n.target.join(' ') + ' ' + (n.failureSummary || '').slice(0, 160))}));
        }"""
    )


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_axe_finds_no_serious_or_critical_violation(live_server, browser, world, viewport):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    base = live_server.url
    log_in(page, base, "admin")
    serious = {}
    for path in main_pages(world["job"]):
        page.goto(base + path)
        found = _axe(page)
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        print(
            f"axe {viewport['width']}px {path}: {len(bad)} serious/critical, "
            f"{len(found) - len(bad)} minor/moderate {[v['id'] for v in found]}"
        )
        if bad:
            serious[path] = bad
            print(bad)
    context.close()
    assert serious == {}


def test_an_htmx_action_answered_403_shows_a_message(live_server, page, vault, operator, item):
    base = live_server.url
    log_in(page, base, "operator")
    page.goto(f"{base}/vaults/prod/items/web-01/")
    assert page.is_hidden("#htmx-error")
    # Demoted while the page is open: the button is still there, the server now says no.
    VaultMembership.objects.filter(vault=vault, user=operator).update(role=Role.READER)
    page.click("#backup-now button[type=submit]")
    page.wait_for_selector("#htmx-error", state="visible")
    text = page.inner_text("#htmx-error")
    assert "Not allowed" in text
    assert page.locator("#running-job").count() == 0


def test_api_docs_render_with_the_network_blocked(live_server, page):
    base = live_server.url
    outside = []

    def only_ours(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append((route.request.resource_type, route.request.url))
            route.abort()

    page.route("**/*", only_ours)
    page.goto(f"{base}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert page.locator(".swagger-ui .opblock").count() > 20
    page.goto(f"{base}/api/redoc/")
    page.wait_for_selector("redoc [data-section-id], .api-content", timeout=20_000)
    assert "Lifeboat API" in page.inner_text("body")
    # No script, style sheet, font or data from outside. ReDoc's bundle alone asks for its
    # maker's logo image, which it hides when that fails.
    assert [(kind, url) for kind, url in outside if kind != "image"] == []
