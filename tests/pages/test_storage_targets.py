"""Storage-target pages (site administrators) and vaults created on object storage from the
vault page, with where their stores live on the settings page."""

import pytest
from django.urls import reverse

from jobs import runner
from jobs.models import Job, Operation
from tests import factories as f
from vaults.models import AuditEvent, Immutability, StorageTarget, Vault

pytestmark = pytest.mark.django_db


def target_data(**overrides):
    data = {
        "name": "minio-eu",
        "kind": "s3",
        "endpoint": "http://127.0.0.1:9000",
        "region": "eu-west-1",
        "path_style": "on",
        "credentials_source": "env",
        "credentials_env": "access_key_id=LB_PAGE_KEY_ID\nsecret_access_key=LB_PAGE_SECRET\n",
        "credentials_file": "",
    }
    data.update(overrides)
    return data


def test_admin_adds_a_target_and_sees_it_listed(login, admin_user):
    client = login(admin_user)
    r = client.post(reverse("target-create"), target_data())
    assert r.status_code == 302
    target = StorageTarget.objects.get()
    assert target.credentials_env == {
        "access_key_id": "LB_PAGE_KEY_ID",
        "secret_access_key": "LB_PAGE_SECRET",
    }
    assert AuditEvent.objects.filter(action="storage_target.create").exists()
    page = client.get(reverse("target-list")).content.decode()
    assert "minio-eu" in page and "LB_PAGE_SECRET" in page
    assert client.get(reverse("target-edit", args=["minio-eu"])).status_code == 200


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"endpoint": "minio:9000"}, "endpoint", "http(s)"),
        ({"credentials_env": "access_key_id"}, "credentials_env", "key=VARIABLE"),
        ({"credentials_env": "access_key_id=A"}, "credentials_env", "secret_access_key"),
        ({"credentials_source": "file", "credentials_env": ""}, "credentials_file", "absolute"),
    ],
)
def test_bad_targets_show_the_error_by_the_field(login, admin_user, overrides, field, words):
    r = login(admin_user).post(reverse("target-create"), target_data(**overrides))
    assert r.status_code == 200
    assert words in " ".join(r.context["form"].errors[field])
    assert not StorageTarget.objects.exists()


# The job runs here as on a worker, which closes a connection left in a transaction.
@pytest.mark.django_db(transaction=True)
def test_the_test_button_names_the_missing_variable(
    login, admin_user, monkeypatch, quiet_heartbeat
):
    monkeypatch.delenv("LB_PAGE_KEY_ID", raising=False)
    monkeypatch.delenv("LB_PAGE_SECRET", raising=False)
    client = login(admin_user)
    client.post(reverse("target-create"), target_data())
    url = reverse("target-test", args=["minio-eu"])
    r = client.post(url, {"location": "s3://backups/v1"}, HTTP_HX_REQUEST="true")
    body = r.content.decode()
    assert 'id="check"' in body and "<html" not in body
    # Queued for a worker: the answer polls until the job has finished.
    job = Job.objects.get(operation=Operation.TEST_TARGET)
    result = reverse("target-test-result", args=["minio-eu", job.pk])
    assert "Testing" in body and f'hx-get="{result}"' in body and f'href="{result}"' in body
    assert client.get(result, HTTP_HX_REQUEST="true").status_code == 200
    runner.run_job(job.pk)
    r = client.get(result, HTTP_HX_REQUEST="true")
    assert r.status_code == 286  # htmx stops polling
    body = r.content.decode()
    assert "Failed" in body and "LB_PAGE_KEY_ID, LB_PAGE_SECRET" in body
    assert "Checked by" in body and "hx-get" not in body
    # Without htmx: the whole page, with the answer.
    assert "LB_PAGE_SECRET" in client.get(result).content.decode()
    r = client.post(url, {"location": "gs://backups/v1"})
    assert "Unknown scheme gs://" in r.content.decode()


def test_a_target_that_a_vault_names_is_not_deleted(login, admin_user):
    client = login(admin_user)
    client.post(reverse("target-create"), target_data())
    r = client.post(
        reverse("vault-create"),
        {
            "name": "obj-1",
            "store_location": "s3://backups/obj-1",
            "storage_target": "minio-eu",
            "secondary_location": "",
            "secondary_target": "",
            "soft_delete_state": "enabled",
            "soft_delete_days": "14",
            "immutability": "disabled",
        },
    )
    assert r.status_code == 302, r.context["form"].errors
    vault = Vault.objects.get(name="obj-1")
    assert vault.storage_target.name == "minio-eu"
    r = client.post(reverse("target-delete", args=["minio-eu"]), follow=True)
    assert "obj-1" in r.content.decode()
    assert StorageTarget.objects.exists()


def test_the_vault_create_page_names_the_wrong_target_kind(login, admin_user):
    client = login(admin_user)
    client.post(reverse("target-create"), target_data())
    r = client.post(
        reverse("vault-create"),
        {
            "name": "obj-2",
            "store_location": "az://lifeboat/obj-2",
            "storage_target": "minio-eu",
            "soft_delete_state": "enabled",
            "soft_delete_days": "14",
            "immutability": "disabled",
        },
    )
    assert r.status_code == 200
    assert "azure target" in " ".join(r.context["form"].errors["storage_target"])


def test_the_settings_page_shows_where_the_stores_are(login, admin_user, tmp_path):
    target = StorageTarget.objects.create(
        name="minio-eu",
        kind="s3",
        object_lock=True,
        credentials_env={"access_key_id": "A", "secret_access_key": "B"},
    )
    vault = f.make_vault(
        "obj-3",
        owner=admin_user,
        store_location="s3://backups/obj-3",
        storage_target=target,
        secondary_location=str(tmp_path / "copy"),
    )
    page = login(admin_user).get(reverse("vault-settings", args=["obj-3"])).content.decode()
    assert "s3://backups/obj-3 (target minio-eu)" in page
    assert "Secondary copy" in page and str(tmp_path / "copy") in page
    Vault.objects.filter(pk=vault.pk).update(immutability=Immutability.LOCKED)
    page = login(admin_user).get(reverse("vault-settings", args=["obj-3"])).content.decode()
    assert "Enforced by the store (S3 Object Lock, COMPLIANCE)" in page


def test_the_vault_page_shows_the_replication_lag(login, admin_user, tmp_path, vm):
    vault = f.make_vault("geo-1", owner=admin_user, secondary_location=str(tmp_path / "copy"))
    item = f.make_protected_item(vault, vm)
    f.make_rp(item, in_vault_tier=True, replication="replicated")
    f.make_rp(item, in_vault_tier=True, replication="pending")
    f.make_rp(item, in_vault_tier=True, replication="failed", replication_error="bucket gone")
    page = login(admin_user).get(reverse("vault-detail", args=["geo-1"])).content.decode()
    assert 'id="replication-pending">1<' in page
    assert 'id="replication-failed">1<' in page
    assert "bucket gone" in page
    item_page = (
        login(admin_user).get(reverse("item-detail", args=["geo-1", vm.name])).content.decode()
    )
    assert "Replication failed" in item_page and "Replicated" in item_page
