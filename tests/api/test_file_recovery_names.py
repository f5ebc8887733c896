"""A file name that is not UTF-8 (ext4 allows any bytes) is listed, not a server error."""

import os
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.api.conftest import OS_FILES, make_ext4, needs_mkfs
from vaults.models import FileRecoverySession

NOT_UTF8 = os.fsdecode(b"srv/caf\xe9.txt")


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_non_utf8_name_is_listed_with_a_replacement_character(
    api, vm, item, admin_user, operator, run_job
):
    from pathlib import Path

    from jobs.backup_queue import backup_now

    os_disk = vm.disks.get(lun=-1)
    make_ext4(Path(os_disk.path), {**OS_FILES, NOT_UTF8: b"latin-1 name\n"})
    vm.power_state = "stopped"  # read as is, without a live-read warning on any file system
    vm.save(update_fields=["power_state"])
    job = run_job(backup_now(item, by=admin_user).pk)
    assert job.status == "completed", (job.error_message, job.warnings)
    rp = job.recovery_point
    FileRecoverySession.objects.create(
        vault=rp.vault,
        recovery_point=rp,
        user=operator,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    url = reverse("api-recovery-point-files", args=["prod", "web-01", rp.pk])
    response = api(operator).get(url, {"disk": -1, "path": "/srv"})
    assert response.status_code == 200, response.content[:300]
    entries = {e["name"]: e for e in response.json()["entries"]}
    assert entries["caf\ufffd.txt"]["utf8"] is False
    assert entries["café menu.txt"]["utf8"] is True
