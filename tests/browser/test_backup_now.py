"""An operator presses "Backup now" on a protected VM page and watches it run, in a real
browser, against a real django-q2 worker (`manage.py qcluster`) and a web server process
(`manage.py runserver`) that share the test's database.

The VM's disk is a 48 MiB ext4 image holding 32 MiB of random data, and the worker's reads
are throttled (LIFEBOAT_THROTTLE_MIBPS) so the progress is observable: the page must
show at least two intermediate progress values before 100 %, and the new recovery point must
appear in the list without a page load.
"""

import random
import socket
import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.backups.conftest import (  # noqa: F401  (fixtures)
    MIB,
    World,
    lifeboat_env,
    make_ext4,
    needs_e2fsprogs,
    shared_db,
    start_worker,
)
from tests.browser.conftest import log_in, needs_chromium

pytestmark = [pytest.mark.browser, needs_chromium, needs_e2fsprogs]

THROTTLE_MIBPS = "6"


def _sample(page) -> dict:
    return page.evaluate(
        """() => {
            const bar = document.querySelector('#running-job [role=progressbar]');
            return {
                value: bar ? Number(bar.getAttribute('aria-valuenow')) : null,
                rps: document.querySelectorAll('.rp-row').length,
                running: !!document.querySelector('#running-job'),
                marker: window.__notReloaded === true,
            };
        }"""
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(start_worker, env) -> str:  # noqa: F811
    """The web server in its own process too, on the shared database: the session's
    `live_server` thread is left alone (it belongs to the in-memory test database)."""
    port = _free_port()
    web = start_worker(["runserver", f"127.0.0.1:{port}", "--noreload"], env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return base
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the web server did not start:\n{web.output()}")


def test_backup_now_shows_progress_and_the_new_recovery_point(
    page,
    shared_db,  # noqa: F811
    start_worker,  # noqa: F811
    tmp_path,
):
    # `page` comes first on purpose: Playwright's sync API runs the test in its own context,
    # so the database connection the test body uses must be the one `shared_db` points at
    # the shared file (set up after Playwright, it is).
    from django.db import connection

    assert connection.vendor != "sqlite" or not connection.is_in_memory_db()
    from tests import factories as f
    from vaults.models import RecoveryPoint, Role

    w = World(tmp_path, disks=((-1, 48),))
    image = w.images[-1]
    # Replace the default contents by 32 MiB of incompressible data: every chunk is real.
    make_ext4(
        image,
        48,
        files={"/etc/hostname": b"web\n", "/data/big.bin": random.Random(1).randbytes(32 * MIB)},
    )
    operator = f.make_user("browser-operator")
    # The web server process uses the project's hashers, not the test run's fast ones.
    operator.password = PBKDF2PasswordHasher().encode("pw-secret-1", "browsertest", 1000)
    operator.save(update_fields=["password"])
    f.add_member(w.vault, operator, Role.OPERATOR)
    env = lifeboat_env({"LIFEBOAT_THROTTLE_MIBPS": THROTTLE_MIBPS})
    start_worker(["qcluster"], env)
    base = _serve(start_worker, env)
    log_in(page, base, "browser-operator")
    page.goto(f"{base}/vaults/{w.vault.name}/items/{w.vm.name}/")
    assert page.locator(".rp-row").count() == 0
    page.evaluate("window.__notReloaded = true")
    page.click("#backup-now button[type=submit]")
    page.wait_for_selector("#running-job")

    samples = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        s = _sample(page)
        samples.append(s)
        if s["rps"] and not s["running"]:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the backup did not finish on the page; last samples: {samples[-5:]}")

    values = [s["value"] for s in samples if s["value"] is not None]
    intermediate = sorted({v for v in values if 0 < v < 100})
    assert len(intermediate) >= 2, values
    assert all(s["marker"] for s in samples), "the page was reloaded"
    rp = RecoveryPoint.objects.get(protected_item=w.item)
    assert page.locator(f"#rp-{rp.pk}").count() == 1
    assert rp.tags == ["on_demand"]
    # Finished: the live section stopped polling (htmx got 286 and the final list).
    assert page.locator("#item-live[hx-trigger]").count() == 0
