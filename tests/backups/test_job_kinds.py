"""Job kinds register with the runner; finished jobs are announced with `job_finished`."""

import json
import logging
import os
import subprocess
import sys

import pytest
from django.conf import settings

from jobs import runner
from jobs.models import RECORD_ONLY, Operation, Status
from jobs.signals import job_finished

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_operation_a_worker_runs_has_a_handler_once_django_is_set_up():
    """In a fresh interpreter, so that nothing this test run imported registers a kind: only
    the apps' start-up does."""
    script = (
        "import json, django; django.setup(); from jobs.runner import REGISTRY; "
        "print(json.dumps(sorted(REGISTRY)))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    registered = set(json.loads(out.stdout.splitlines()[-1]))
    assert registered == set(Operation.values) - RECORD_ONLY
    assert not registered & RECORD_ONLY


def test_a_job_whose_operation_has_no_handler_fails_naming_it(item, caplog):
    job = runner.create_job(
        operation=Operation.CONFIGURE_BACKUP, vault=item.vault, item=item, deliver=False
    )
    with caplog.at_level(logging.ERROR, logger="jobs.runner"):
        runner.run_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.error_code) == (Status.FAILED, "internal_error")
    assert job.error_message == "No handler is registered for configure_backup jobs."
    assert "no handler is registered for configure_backup jobs" in caplog.text


def test_a_second_handler_for_an_operation_is_refused(monkeypatch):
    monkeypatch.setitem(runner.REGISTRY, Operation.VERIFY, runner.REGISTRY[Operation.VERIFY])
    with pytest.raises(ValueError, match="verify jobs already have a handler"):
        runner.handles(Operation.VERIFY)(lambda ctx: None)


def test_a_failing_receiver_of_job_finished_never_fails_the_job(item, monkeypatch, caplog):
    def broken(sender, *, job, **kwargs):
        raise RuntimeError("receiver broke")

    def fine(ctx):
        ctx.set_result(ran=True)

    monkeypatch.setitem(runner.REGISTRY, Operation.VERIFY, runner.JobKind(fine))
    job_finished.connect(broken, dispatch_uid="test-broken-receiver")
    try:
        job = runner.create_job(operation=Operation.VERIFY, vault=item.vault, deliver=False)
        with caplog.at_level(logging.ERROR, logger="jobs.runner"):
            runner.run_job(job.pk)
    finally:
        job_finished.disconnect(dispatch_uid="test-broken-receiver")
    job.refresh_from_db()
    assert (job.status, job.result) == (Status.COMPLETED, {"ran": True})
    assert f"failed for finished job {job.pk}" in caplog.text
    assert "receiver broke" in caplog.text
