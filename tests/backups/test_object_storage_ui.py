"""Vaults on object storage made through the pages and run by a real worker: a site admin adds
an S3 target (moto) and an Azure Blob target (Azurite) with the target form, tests both with
the Test button, creates a vault in S3 with its secondary copy in Azure with the vault form,
protects a VM and presses Backup now; a real `manage.py qcluster` backs it up, transfers it to
S3 and replicates it to Azure; restores asked for on the restore page, from S3 and from the
secondary copy, are byte-identical to the disk.

The credentials are in the worker's environment only, never in this (the web) process: the
Test's OK, the backup and the restores prove that the workers read them where they are used.
"""

from pathlib import Path

from django.test import Client
from django.urls import reverse

from engine.tests.objservers import (  # noqa: F401  (session fixtures)
    AZ_ACCOUNT,
    AZ_KEY,
    S3_CREDS,
    azurite_server,
    moto_server,
    new_bucket,
    new_container,
)
from jobs.models import FINISHED, Job, Operation, Status
from tests import factories as f
from tests.backups.conftest import aside, lifeboat_env, make_ext4, needs_e2fsprogs, same_bytes
from tests.conftest import wait_until
from vaults.models import RecoveryPoint, Replication, StorageTarget, Vault

pytestmark = needs_e2fsprogs

WORKER_ONLY = {
    "UI_S3_ID": S3_CREDS["access_key_id"],
    "UI_S3_SECRET": S3_CREDS["secret_access_key"],
    "UI_AZ_ACCOUNT": AZ_ACCOUNT,
    "UI_AZ_KEY": AZ_KEY,
}


def _finished(job_id: int, worker, timeout: float = 120) -> Job:
    def done() -> Job | None:
        job = Job.objects.get(pk=job_id)
        return job if job.status in FINISHED else None

    try:
        return wait_until(done, timeout, step=0.2, what=f"job {job_id} finished")
    except AssertionError:
        raise AssertionError(f"job {job_id} did not finish:\n{worker.output()}") from None


def _ok(response, status: int = 302) -> None:
    form = response.context.get("form") if response.context else None
    assert response.status_code == status, form.errors if form is not None else response


def _add_target(client: Client, **fields: str) -> None:
    data = {"region": "", "path_style": "", "credentials_source": "env", "credentials_file": ""}
    _ok(client.post(reverse("target-create"), {**data, **fields}))


def _test_target(client: Client, name: str, location: str, worker) -> str:
    """Press Test: a worker answers; the answer as the page shows it."""
    r = client.post(reverse("target-test", args=[name]), {"location": location})
    assert "Testing" in r.content.decode()
    job = Job.objects.filter(operation=Operation.TEST_TARGET).latest("pk")
    job = _finished(job.pk, worker)
    assert job.status == Status.COMPLETED, job.error_message
    return client.get(reverse("target-test-result", args=[name, job.pk])).content.decode()


def _restore(client: Client, vault: Vault, rp: RecoveryPoint, into: Path, worker, **how) -> Path:
    into.mkdir()
    url = reverse("rp-restore", args=[vault.name, rp.protected_item.vm.name, rp.pk])
    form = {"kind": "restore_disks", "luns": ["-1"], "host": rp.protected_item.vm.host_id}
    _ok(client.post(url, {**form, "path": str(into), **how}))
    job = Job.objects.filter(operation=Operation.RESTORE).latest("pk")
    job = _finished(job.pk, worker)
    assert job.status == Status.COMPLETED, job.error_message
    return Path(job.result["targets"]["-1"])


def test_a_vault_on_s3_with_a_copy_in_azure_from_the_pages(
    shared_db,
    start_worker,
    tmp_path,
    monkeypatch,
    moto_server,  # noqa: F811
    azurite_server,  # noqa: F811
):
    for name in WORKER_ONLY:
        monkeypatch.delenv(name, raising=False)  # the web process has none of them
    admin = f.make_user("ui-admin", superuser=True)
    host = f.make_host(tmp_path / "host", name="ui-host")
    vm = f.make_vm(host, name="ui-web", disks=(), freeze_command="true", thaw_command="true")
    image = make_ext4(Path(host.allowed_roots[0]) / "ui-web-lun-1.img", 16)
    vm.disks.create(lun=-1, path=str(image), size=image.stat().st_size)
    expected = aside(image, "backup")
    bucket = new_bucket(moto_server.endpoint)
    container = new_container(azurite_server.endpoint)
    worker = start_worker(["qcluster"], lifeboat_env(WORKER_ONLY))
    client = Client()
    client.force_login(admin)

    # 1. Storage targets, from the target form; the Test runs on the worker.
    _add_target(
        client,
        name="ui-moto",
        kind="s3",
        endpoint=moto_server.endpoint,
        region="us-east-1",
        path_style="on",
        credentials_env="access_key_id=UI_S3_ID\nsecret_access_key=UI_S3_SECRET\n",
    )
    _add_target(
        client,
        name="ui-azurite",
        kind="azure",
        endpoint=azurite_server.endpoint,
        credentials_env="account_name=UI_AZ_ACCOUNT\naccount_key=UI_AZ_KEY\n",
    )
    assert StorageTarget.objects.count() == 2
    answer = _test_target(client, "ui-moto", f"s3://{bucket}/ui", worker)
    assert "OK" in answer and "reachable; no store yet" in answer and "Checked by" in answer
    answer = _test_target(client, "ui-azurite", f"az://{container}/copy", worker)
    assert "OK" in answer and "reachable; no store yet" in answer

    # 2. The vault, from the vault form: its store in S3, its second copy in Azure.
    _ok(
        client.post(
            reverse("vault-create"),
            {
                "name": "ui-geo",
                "store_location": f"s3://{bucket}/ui",
                "storage_target": "ui-moto",
                "secondary_location": f"az://{container}/copy",
                "secondary_target": "ui-azurite",
                "soft_delete_state": "enabled",
                "soft_delete_days": "14",
                "immutability": "disabled",
            },
        )
    )
    vault = Vault.objects.get(name="ui-geo")
    assert (vault.storage_target.name, vault.secondary_target.name) == ("ui-moto", "ui-azurite")
    vault.linked_hosts.add(host)  # hosts are linked by site admins; not what this test is about

    # 3. Protect the VM and press Backup now; the worker backs up, transfers and replicates.
    policy = vault.policies.get()
    _ok(
        client.post(
            reverse("vault-protect", args=["ui-geo"]),
            {"vm": "ui-web", "policy": policy.name, "disk_selection": "all", "luns": ""},
        )
    )
    _ok(client.post(reverse("item-backup-now", args=["ui-geo", "ui-web"]), {}))
    backup = _finished(Job.objects.get(operation=Operation.BACKUP).pk, worker)
    assert backup.status == Status.COMPLETED, (backup.error_message, backup.warnings)
    rp = RecoveryPoint.objects.get(vault=vault)
    assert rp.in_vault_tier
    replicate = _finished(Job.objects.get(operation=Operation.REPLICATE).pk, worker)
    assert replicate.status == Status.COMPLETED, replicate.error_message
    rp.refresh_from_db()
    assert rp.replication == Replication.REPLICATED

    # 4. Restores from the restore page: from S3, and from the copy in Azure.
    from_s3 = _restore(
        client, vault, rp, tmp_path / "host" / "restores" / "s3", worker, tier="vault"
    )
    assert same_bytes(from_s3, expected)
    from_azure = _restore(
        client,
        vault,
        rp,
        tmp_path / "host" / "restores" / "az",
        worker,
        tier="auto",
        source="secondary",
    )
    assert same_bytes(from_azure, expected)
    restores = Job.objects.filter(operation=Operation.RESTORE).order_by("pk")
    assert [j.params.get("tier") for j in restores] == ["vault", "secondary"]
