"""An operator runs a restore drill from a recovery point's page in a real browser, against a
real django-q2 worker and web server process sharing the test's database, and sees the proof:
the "verified <date>" badge, the checks, and the badge in the item's list."""

import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.backups.conftest import (  # noqa: F401  (fixtures)
    World,
    lifeboat_env,
    needs_e2fsprogs,
    run,
    shared_db,
    start_worker,
)
from tests.browser.conftest import log_in, needs_chromium
from tests.browser.test_backup_now import _serve

pytestmark = [pytest.mark.browser, needs_chromium, needs_e2fsprogs]


def test_run_drill_now_from_the_rp_page(page, shared_db, start_worker, tmp_path):  # noqa: F811
    from jobs.models import Job, Operation, Status
    from tests import factories as f
    from vaults.models import RecoveryPoint, Role

    w = World(tmp_path, freeze_command="true", thaw_command="true")
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    rp = RecoveryPoint.objects.get(pk=job.recovery_point_id)
    operator = f.make_user("drill-operator")
    # The web server process uses the project's hashers, not the test run's fast ones.
    operator.password = PBKDF2PasswordHasher().encode("pw-secret-1", "browsertest", 1000)
    operator.save(update_fields=["password"])
    f.add_member(w.vault, operator, Role.OPERATOR)
    env = lifeboat_env()
    start_worker(["qcluster"], env)
    base = _serve(start_worker, env)
    log_in(page, base, "drill-operator")
    rp_page = f"{base}/vaults/{w.vault.name}/items/{w.vm.name}/rps/{rp.pk}/restore/"
    page.goto(rp_page)
    assert "not verified" in page.inner_text("#rp-proof")
    page.click("#drill-form button[type=submit]")
    page.wait_for_url(f"{base}/vaults/{w.vault.name}/jobs/*/")
    drill = Job.objects.get(operation=Operation.DRILL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        drill.refresh_from_db()
        if drill.is_finished:
            break
        time.sleep(0.3)
    assert drill.status == Status.COMPLETED, (drill.status, drill.error_message)
    page.goto(rp_page)
    assert page.inner_text("#rp-proof").startswith("verified ")
    checks = page.inner_text("#drill-checks")
    assert "fsck lun" in checks and "e2fsck -fn" in checks
    page.goto(f"{base}/vaults/{w.vault.name}/items/{w.vm.name}/")
    assert page.locator(f"#rp-{rp.pk} .rp-verified").count() == 1
