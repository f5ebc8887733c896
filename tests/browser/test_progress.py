"""An honest progress bar, watched in a real browser against a real django-q2 worker and a
web server process on the test's database.

A VM with two disks (ext4 images of 32 MiB, 20 MiB of random data each; the worker's reads
throttled so the run lasts long enough to watch) is backed up from its page. On the job page
the overall bar must never move backwards across the snapshot and transfer phases and must
pass through several intermediate values; each disk's bars fill in both phases. Meanwhile
the VM page, never reloaded, updates its summary (state, last backup) and its recovery
points once the job ends.
"""

import random
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
from tests.browser.test_backup_now import _serve

pytestmark = [pytest.mark.browser, needs_chromium, needs_e2fsprogs]

THROTTLE_MIBPS = "5"

SAMPLE = """() => {
    const value = el => el ? Number(el.getAttribute('aria-valuenow')) : null;
    const disks = {};
    document.querySelectorAll('#disk-progress tbody tr').forEach((row, r) => {
        row.querySelectorAll('td.phase-cell').forEach((cell, c) => {
            disks[r + ':' + c] = value(cell.querySelector('[role=progressbar]'));
        });
    });
    return {
        overall: value(document.querySelector('#job-overall [role=progressbar]')),
        status: (document.querySelector('#job-status') || {}).textContent,
        phases: [...document.querySelectorAll('#disk-progress thead th')].map(th => th.textContent),
        disks,
    };
}"""


def test_two_disk_backup_progress_only_moves_forward_and_the_vm_page_follows(
    browser,
    shared_db,  # noqa: F811
    start_worker,  # noqa: F811
    tmp_path,
):
    # `browser` first: Playwright's loop is set up before `shared_db` points the test's
    # connection at the shared file (see test_backup_now).
    from django.db import connection

    assert connection.vendor != "sqlite" or not connection.is_in_memory_db()
    from jobs.models import Job
    from tests import factories as f
    from vaults.models import Role

    w = World(tmp_path, disks=((-1, 32), (0, 32)))
    for lun, seed in ((-1, 1), (0, 2)):
        make_ext4(
            w.images[lun],
            32,
            files={"/data/big.bin": random.Random(seed).randbytes(20 * MIB)},
        )
    operator = f.make_user("progress-operator")
    operator.password = PBKDF2PasswordHasher().encode("pw-secret-1", "browsertest", 1000)
    operator.save(update_fields=["password"])
    f.add_member(w.vault, operator, Role.OPERATOR)
    env = lifeboat_env({"LIFEBOAT_THROTTLE_MIBPS": THROTTLE_MIBPS})
    start_worker(["qcluster"], env)
    base = _serve(start_worker, env)

    context = browser.new_context()
    vm_page = context.new_page()
    vm_page.set_default_timeout(20_000)
    log_in(vm_page, base, "progress-operator")
    vm_page.goto(f"{base}/vaults/{w.vault.name}/items/{w.vm.name}/")
    assert "never" in vm_page.inner_text("#item-last-backup")
    assert vm_page.locator(".rp-row").count() == 0
    vm_page.evaluate("window.__notReloaded = true")
    vm_page.click("#backup-now button[type=submit]")
    vm_page.wait_for_selector("#running-job")

    job = Job.objects.get(protected_item=w.item)
    job_page = context.new_page()
    job_page.goto(f"{base}/vaults/{w.vault.name}/jobs/{job.pk}/")
    samples = []
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        s = job_page.evaluate(SAMPLE)
        samples.append(s)
        if s["status"] and s["status"].strip() in (
            "Completed",
            "Completed with warnings",
            "Failed",
        ):
            break
        time.sleep(0.15)
    else:
        pytest.fail(f"the backup did not finish; last samples: {samples[-3:]}")
    # (With warnings where the test machine's file system cannot clone: read live.)
    assert samples[-1]["status"].strip().startswith("Completed"), samples[-1]

    overall = [s["overall"] for s in samples if s["overall"] is not None]
    assert overall == sorted(overall), f"the overall bar moved backwards: {overall}"
    assert overall[-1] == 100
    intermediate = sorted({v for v in overall if 0 < v < 100})
    assert len(intermediate) >= 4, overall
    # Values seen while the snapshot ran and while the transfer ran: it never reached 100
    # before the transfer, the way a per-phase bar would.
    assert any(v < 60 for v in intermediate) and any(60 < v < 100 for v in intermediate)

    # Each disk's bar, in each phase, only moves forward and was seen part-way.
    assert samples[-1]["phases"] == ["Disk", "Snapshot", "Transfer"]
    series: dict[str, list[int]] = {}
    for s in samples:
        for key, value in s["disks"].items():
            if value is not None:
                series.setdefault(key, []).append(value)
    assert sorted(series) == ["0:0", "0:1", "1:0", "1:1"], series.keys()
    for key, values in series.items():
        assert values == sorted(values), (key, values)
        assert values[-1] == 100, (key, values)
    assert any(0 < v < 100 for v in series["0:0"] + series["1:0"]), series
    assert any(0 < v < 100 for v in series["0:1"] + series["1:1"]), series

    # The VM page follows without a reload: summary, then the new recovery point.
    vm_page.wait_for_selector("#running-job", state="detached", timeout=30_000)
    vm_page.wait_for_function(
        "() => document.querySelector('#item-last-backup').textContent.includes('Completed')"
    )
    assert vm_page.inner_text("#item-state") == "Protected"
    vm_page.wait_for_selector(".rp-row")
    assert vm_page.evaluate("window.__notReloaded") is True
    job.refresh_from_db()
    assert [t.bytes_done > 0 for t in job.subtasks.order_by("order")] == [True, True]
    context.close()
