"""The ransomware signal, from real backups of a real ext4 image: normal churn (random new files,
`lab churn`) is the negative control, a simulated attack (`lab attack`: files overwritten with
random bytes and renamed) is flagged, and its Sev-1 alert is raised once."""

import pytest
from django.urls import reverse

from inventory.lab.attack import attack_image, documents
from inventory.lab.images import churn_image
from jobs.anomaly import HISTORY, MIN_HISTORY, last_clean_before
from jobs.models import Status
from security.models import Alert, Severity
from tests.backups.conftest import World, make_ext4, needs_e2fsprogs, run
from vaults.models import Anomaly, RecoveryPoint

pytestmark = [needs_e2fsprogs, pytest.mark.django_db(transaction=True)]


def backup(w: World) -> RecoveryPoint:
    job = run(w.backup_now())
    assert job.status == Status.COMPLETED, job.error_message
    return RecoveryPoint.objects.get(pk=job.recovery_point_id)


def test_normal_churn_is_not_flagged_and_an_attack_is_once(tmp_path, client):
    w = World(tmp_path, disks=((-1, 48),), freeze_command="true", thaw_command="true")
    image = w.images[-1]
    make_ext4(image, 48, files=documents(image.name))
    first = backup(w)
    assert first.signal["full"] is True and first.anomaly == Anomaly.NONE

    # Negative control: a history of normal churn, 0.25 to 1 MiB of new files per backup.
    clean = []
    for i in range(HISTORY + 2):
        churn_image(image, 0.25 + 0.25 * (i % 4), tag=f"c{i}")
        clean.append(backup(w))
    assert [rp.anomaly for rp in clean] == [Anomaly.NONE] * len(clean)
    assert clean[MIN_HISTORY].signal["history"] == MIN_HISTORY
    disk = clean[-1].signal["disks"][0]
    assert 0 < disk["incompressible"] < 0.8 and 0 < disk["entropy"] < 7.5

    # The attack: every file overwritten with random bytes and renamed.
    hit = attack_image(image)
    assert len(hit.encrypted) >= 3
    attacked = backup(w)
    assert attacked.anomaly == Anomaly.SUSPICIOUS, attacked.signal
    assert "of chunks changed" in attacked.signal["reasons"][0]
    alert = Alert.objects.get(kind="ransomware_suspected")
    assert alert.severity == Severity.SEV1
    assert (alert.object_type, alert.object_id) == ("RecoveryPoint", str(attacked.pk))

    # Normal churn afterwards is not flagged, and the alert is not raised again.
    churn_image(image, 0.5, tag="after")
    after = backup(w)
    assert after.anomaly == Anomaly.NONE, after.signal
    assert Alert.objects.filter(kind="ransomware_suspected").count() == 1
    assert Alert.objects.get(kind="ransomware_suspected").occurrences == 1

    # The restore form points to the last RP before the attack; lists mark the RP.
    assert last_clean_before(w.item) == clean[-1]
    client.force_login(w.admin)
    page = client.get(
        reverse("rp-restore", args=[w.vault.name, w.vm.name, after.pk])
    ).content.decode()
    assert "last-clean-rp" in page and str(clean[-1].pk) in page
    listing = client.get(reverse("item-detail", args=[w.vault.name, w.vm.name])).content.decode()
    assert listing.count("rp-suspicious") == 1
