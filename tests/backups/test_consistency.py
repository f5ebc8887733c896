"""Consistency levels and backup-extension errors, with real hook scripts and real images.

Each job runs in this process through `jobs.runner.run_job`, exactly as a worker would.
"""

import os

import pytest

from jobs.models import Status
from tests.backups.conftest import World, aside, needs_e2fsprogs, run, same_bytes, write_script
from vaults.models import RecoveryPoint

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]

OK = 'echo "$LIFEBOAT_PHASE $LIFEBOAT_VM $*"\n'
FAIL = 'echo "cannot quiesce" >&2\nexit 7\n'


def world(tmp_path, **vm):
    return World(tmp_path, **vm)


def test_application_consistent_with_scripts_and_freeze(tmp_path, hooks_dir):
    marks = tmp_path / "marks"
    w = world(
        tmp_path,
        pre_script=str(write_script(hooks_dir, "pre.sh", f"echo pre >> {marks}\n")),
        pre_script_params=["--quiesce"],
        post_script=str(write_script(hooks_dir, "post.sh", f"echo post >> {marks}\n")),
        freeze_command=f"echo freeze >> {marks}",
        thaw_command=f"echo thaw >> {marks}",
    )
    expected = aside(w.images[-1], "now")
    job = run(w.backup_now())
    assert (job.status, job.warnings) == (Status.COMPLETED, []), job.error_message
    rp = job.recovery_point
    assert rp.consistency == "application"
    assert job.result["snapshot_method"] == "frozen_read"
    assert marks.read_text().split() == ["pre", "freeze", "thaw", "post"]
    w.vm.refresh_from_db()
    assert (w.vm.extension_state, w.vm.extension_code) == ("installed", "")
    # The level is in the store's manifest too, not only in the catalog.
    import engine

    assert engine.get_recovery_point(w.snapshot_store(), str(rp.pk)).consistency == "application"
    assert engine.get_recovery_point(w.vault_store(), str(rp.pk)).consistency == "application"
    assert same_bytes(w.restore(w.vault_store(), rp.pk, -1), expected)


def test_file_system_consistent_without_scripts(tmp_path):
    w = world(tmp_path, freeze_command="true", thaw_command="true")
    job = run(w.backup_now())
    assert (job.status, job.warnings) == (Status.COMPLETED, [])
    assert job.recovery_point.consistency == "file_system"


def test_file_system_consistent_when_pre_script_fails_and_may_continue(tmp_path, hooks_dir):
    w = world(
        tmp_path,
        pre_script=str(write_script(hooks_dir, "pre.sh", FAIL)),
        continue_on_failure=True,
        freeze_command="true",
        thaw_command="true",
    )
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED_WITH_WARNINGS
    assert [x["code"] for x in job.warnings] == ["pre_script_failed"]
    assert "cannot quiesce" in job.warnings[0]["message"]
    assert job.recovery_point.consistency == "file_system"


def test_crash_consistent_when_vm_is_stopped(tmp_path, hooks_dir):
    marks = tmp_path / "marks"
    w = world(
        tmp_path,
        power_state="stopped",
        pre_script=str(write_script(hooks_dir, "pre.sh", f"echo pre >> {marks}\n")),
        freeze_command="true",
        thaw_command="true",
    )
    expected = aside(w.images[-1], "now")
    job = run(w.backup_now())
    assert (job.status, job.warnings) == (Status.COMPLETED, [])
    assert job.recovery_point.consistency == "crash"
    assert job.result["snapshot_method"] == "stopped"
    assert not marks.exists()  # no hooks run on a stopped VM
    w.vm.refresh_from_db()
    assert w.vm.extension_state == "not_installed"
    assert same_bytes(w.restore(w.snapshot_store(), job.recovery_point_id, -1), expected)


def test_crash_consistent_when_the_policy_says_crash_only(tmp_path, hooks_dir):
    marks = tmp_path / "marks"
    w = World(
        tmp_path,
        policy_rep={"consistency": "crash_only"},
        pre_script=str(write_script(hooks_dir, "pre.sh", f"echo pre >> {marks}\n")),
        freeze_command="true",
        thaw_command="true",
    )
    job = run(w.backup_now())
    assert job.recovery_point.consistency == "crash"
    assert not marks.exists()


def test_pre_script_failure_without_continue_fails_the_job(tmp_path, hooks_dir):
    marks = tmp_path / "marks"
    w = world(
        tmp_path,
        pre_script=str(write_script(hooks_dir, "pre.sh", FAIL)),
        post_script=str(write_script(hooks_dir, "post.sh", f"echo post >> {marks}\n")),
        continue_on_failure=False,
        freeze_command=f"echo freeze >> {marks}",
        thaw_command="true",
    )
    job = run(w.backup_now())
    assert (job.status, job.error_code) == (Status.FAILED, "pre_script_failed")
    assert "exited with 7" in job.error_message
    assert marks.read_text().split() == ["post"]  # post undoes pre; nothing was frozen
    assert not RecoveryPoint.objects.exists()
    assert list(job.subtasks.values_list("status", flat=True)) == ["failed", "failed"]
    w.item.refresh_from_db()
    assert (w.item.state, w.item.last_backup_status) == ("protection_error", "failed")


def test_pre_script_timeout(tmp_path, hooks_dir):
    w = world(
        tmp_path,
        pre_script=str(write_script(hooks_dir, "pre.sh", "sleep 30\n")),
        script_timeout=1,
        continue_on_failure=False,
    )
    job = run(w.backup_now())
    assert (job.status, job.error_code) == (Status.FAILED, "pre_script_timeout")
    assert job.duration.total_seconds() < 15
    assert not RecoveryPoint.objects.exists()


def _not_found(hooks_dir):
    return {"pre_script": str(hooks_dir / "missing.sh")}


def _not_executable(hooks_dir):
    return {"pre_script": str(write_script(hooks_dir, "pre.sh", "true\n", mode=0o600))}


def _insecure(hooks_dir):
    return {"pre_script": str(write_script(hooks_dir, "pre.sh", "true\n", mode=0o777))}


def _invalid(hooks_dir):
    return {"freeze_command": "true", "thaw_command": ""}


@pytest.mark.parametrize(
    "code, config",
    [
        ("pre_script_not_found", _not_found),
        ("script_not_executable", _not_executable),
        ("insecure_permissions", _insecure),
        ("invalid_configuration", _invalid),
    ],
)
def test_extension_error_is_recorded_on_the_vm_and_the_job(tmp_path, hooks_dir, code, config):
    w = world(tmp_path, continue_on_failure=False, **config(hooks_dir))
    job = run(w.backup_now())
    assert (job.status, job.error_code) == (Status.FAILED, code)
    w.vm.refresh_from_db()
    assert (w.vm.extension_state, w.vm.extension_code) == ("failed", code)
    assert w.vm.extension_message and w.vm.extension_message == job.error_message
    assert not RecoveryPoint.objects.exists()

    # Repaired configuration: the next backup validates again and the extension heals.
    from inventory.models import VirtualMachine

    VirtualMachine.objects.filter(pk=w.vm.pk).update(
        pre_script="", freeze_command="true", thaw_command="true"
    )
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    w.vm.refresh_from_db()
    assert (w.vm.extension_state, w.vm.extension_code, w.vm.extension_message) == (
        "installed",
        "",
        "",
    )


def test_extension_error_with_continue_backs_up_without_scripts(tmp_path, hooks_dir):
    w = world(
        tmp_path,
        pre_script=str(write_script(hooks_dir, "pre.sh", "true\n", mode=0o777)),
        freeze_command="true",
        thaw_command="true",
    )
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED_WITH_WARNINGS
    assert [x["code"] for x in job.warnings] == ["insecure_permissions"]
    assert job.recovery_point.consistency == "file_system"
    w.vm.refresh_from_db()
    assert (w.vm.extension_state, w.vm.extension_code) == ("failed", "insecure_permissions")


@pytest.mark.parametrize("broken", ["post", "thaw"])
def test_post_script_or_thaw_failure_only_warns(tmp_path, hooks_dir, broken):
    w = world(
        tmp_path,
        pre_script=str(write_script(hooks_dir, "pre.sh", OK)),
        post_script=str(write_script(hooks_dir, "post.sh", FAIL if broken == "post" else OK)),
        freeze_command="true",
        thaw_command="exit 9" if broken == "thaw" else "true",
    )
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED_WITH_WARNINGS, job.error_message
    assert [x["code"] for x in job.warnings] == [
        f"{broken}_{'script_' if broken == 'post' else ''}failed"
    ]
    rp = job.recovery_point
    assert rp.consistency == "application"
    assert rp.type == "snapshot_and_vault"
    w.item.refresh_from_db()
    assert w.item.last_backup_status == Status.COMPLETED_WITH_WARNINGS
    assert w.item.state == "protected"


def test_hook_processes_get_a_clean_environment(tmp_path, hooks_dir):
    env_dump = tmp_path / "env"
    os.environ["LIFEBOAT_TEST_LEAK"] = "secret"
    try:
        w = world(
            tmp_path,
            pre_script=str(write_script(hooks_dir, "pre.sh", f"env > {env_dump}\n")),
        )
        run(w.backup_now())
    finally:
        del os.environ["LIFEBOAT_TEST_LEAK"]
    env = dict(line.split("=", 1) for line in env_dump.read_text().splitlines())
    assert env["LIFEBOAT_VM"] == w.vm.name and env["LIFEBOAT_PHASE"] == "pre"
    assert "LIFEBOAT_TEST_LEAK" not in env and "DATABASE_URL" not in env
