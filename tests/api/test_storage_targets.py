"""Storage targets and vaults on object storage through the API: CRUD, validation naming the
field, the Test action naming a missing variable or file, vaults whose stores live in S3 or
Azure, and who enforces locked immutability."""

import pytest
from django.urls import reverse

from jobs import runner
from tests import factories as f
from vaults.models import AuditEvent, Immutability, StorageTarget, Vault

LIST = reverse("api-storage-target-list")
VAULTS = reverse("api-vault-list")


def detail(name):
    return reverse("api-storage-target-detail", args=[name])


def test_url(name):
    return reverse("api-storage-target-test", args=[name])


test_url.__test__ = False  # a URL helper, not a test


def s3_body(**overrides):
    data = {
        "name": "minio-eu",
        "kind": "s3",
        "endpoint": "http://127.0.0.1:9000",
        "region": "eu-west-1",
        "path_style": True,
        "credentials_env": {
            "access_key_id": "LIFEBOAT_S3_KEY_ID",
            "secret_access_key": "LIFEBOAT_S3_SECRET",
        },
    }
    data.update(overrides)
    return data


def azure_body(**overrides):
    data = {
        "name": "blob-we",
        "kind": "azure",
        "endpoint": "http://127.0.0.1:10000/devstoreaccount1",
        "credentials_env": {
            "account_name": "LIFEBOAT_AZ_ACCOUNT",
            "account_key": "LIFEBOAT_AZ_KEY",
        },
    }
    data.update(overrides)
    return data


def test_admin_creates_reads_changes_and_deletes_a_target(api, admin_user):
    client = api(admin_user)
    r = client.post(LIST, s3_body())
    assert r.status_code == 201, r.data
    assert r.data["credentials_source"] == "env"
    assert r.data["credentials_env"]["secret_access_key"] == "LIFEBOAT_S3_SECRET"
    created = AuditEvent.objects.get(action="storage_target.create")
    assert created.after["credentials_env"] == s3_body()["credentials_env"]
    assert client.get(LIST).data["count"] == 1
    r = client.patch(detail("minio-eu"), {"region": "eu-central-1", "object_lock": True})
    assert r.status_code == 200, r.data
    assert (r.data["region"], r.data["object_lock"]) == ("eu-central-1", True)
    assert AuditEvent.objects.filter(action="storage_target.update").count() == 1
    assert client.delete(detail("minio-eu")).status_code == 204
    assert not StorageTarget.objects.exists()
    assert AuditEvent.objects.filter(action="storage_target.delete").exists()


def test_a_target_from_a_credentials_file(api, admin_user, tmp_path):
    r = api(admin_user).post(
        LIST,
        azure_body(credentials_env={}, credentials_source="file", credentials_file="/etc/lb.json"),
    )
    assert r.status_code == 201, r.data


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"endpoint": "ftp://minio:21"}, "endpoint", "http(s)"),
        ({"endpoint": "not a url"}, "endpoint", "http(s)"),
        ({"endpoint": "http://h:99999"}, "endpoint", "not a URL"),
        ({"region": "eu west"}, "region", "Letters"),
        ({"kind": "gcs"}, "kind", "valid choice"),
        ({"credentials_env": {"access_key_id": "A"}}, "credentials_env", "secret_access_key"),
        ({"credentials_env": {"password": "P"}}, "credentials_env", "Unknown credential"),
        (
            {"credentials_env": {"access_key_id": "A-B", "secret_access_key": "S"}},
            "credentials_env",
            "A-B",
        ),
        ({"credentials_source": "file", "credentials_env": {}}, "credentials_file", "absolute"),
        ({"name": "1bad"}, "name", "letter first"),
    ],
)
def test_bad_targets_are_refused_naming_the_field(api, admin_user, overrides, field, words):
    r = api(admin_user).post(LIST, s3_body(**overrides))
    assert r.status_code == 400, r.data
    assert words in " ".join(r.data[field]), r.data


def test_azure_targets_take_no_s3_options(api, admin_user):
    r = api(admin_user).post(LIST, azure_body(path_style=True, object_lock=True))
    assert r.status_code == 400
    assert set(r.data) == {"path_style", "object_lock"}
    sas = azure_body(credentials_env={"sas_token": "LIFEBOAT_AZ_SAS"})
    r = api(admin_user).post(LIST, sas)
    assert "account_name" in r.data["credentials_env"][0]
    sas["credentials_env"]["account_name"] = "LIFEBOAT_AZ_ACCOUNT"
    assert api(admin_user).post(LIST, sas).status_code == 201


def test_only_site_admins_see_targets(api, admin_user):
    owner = f.make_user()
    f.add_member(f.make_vault(owner=admin_user), owner, "owner")
    api(admin_user).post(LIST, s3_body())
    assert api(owner).get(LIST).status_code == 403
    assert api(owner).post(LIST, s3_body(name="other")).status_code == 403


def _tested(client, name: str, location: str) -> dict:
    """Queue a Test (202), run its job as a worker does, and read the answer."""
    r = client.post(test_url(name), {"location": location})
    assert r.status_code == 202, r.data
    assert (r.data["status"], r.data["finished"], r.data["ok"]) == ("queued", False, None)
    assert r.data["url"] == reverse("api-storage-target-test-result", args=[name, r.data["job"]])
    runner.run_job(r.data["job"])
    answer = client.get(r.data["url"])
    assert answer.status_code == 200, answer.data
    assert answer.data["finished"] and answer.data["location"] == location
    return answer.data


# The job runs here as on a worker, which closes a connection left in a transaction.
@pytest.mark.django_db(transaction=True)
def test_the_test_action_names_the_missing_variable(api, admin_user, monkeypatch, quiet_heartbeat):
    monkeypatch.delenv("LIFEBOAT_S3_SECRET", raising=False)
    monkeypatch.setenv("LIFEBOAT_S3_KEY_ID", "id")
    api(admin_user).post(LIST, s3_body())
    data = _tested(api(admin_user), "minio-eu", "s3://backups/lifeboat")
    assert data["ok"] is False and data["status"] == "failed"
    assert "LIFEBOAT_S3_SECRET" in data["detail"]
    assert "LIFEBOAT_S3_KEY_ID" not in data["detail"]
    assert data["worker"]  # the process that read the variables says who it was
    audited = AuditEvent.objects.get(action="storage_target.test")
    assert audited.after == {"location": "s3://backups/lifeboat", "job": data["job"]}


# The job runs here as on a worker, which closes a connection left in a transaction.
@pytest.mark.django_db(transaction=True)
def test_the_test_action_names_an_unreadable_file(api, admin_user, tmp_path, quiet_heartbeat):
    missing = tmp_path / "nowhere.json"
    client = api(admin_user)
    client.post(
        LIST, s3_body(credentials_env={}, credentials_source="file", credentials_file=str(missing))
    )
    data = _tested(client, "minio-eu", "s3://backups/x")
    assert data["ok"] is False
    assert str(missing) in data["detail"]
    missing.write_text("{not json")
    assert "is not JSON" in _tested(client, "minio-eu", "s3://backups/x")["detail"]
    missing.write_text('{"access_key_id": "a"}')
    assert "secret_access_key" in _tested(client, "minio-eu", "s3://backups/x")["detail"]


def test_a_test_answer_is_read_only_under_its_own_target(api, admin_user):
    client = api(admin_user)
    client.post(LIST, s3_body())
    client.post(LIST, s3_body(name="other"))
    job = client.post(test_url("minio-eu"), {"location": "s3://backups/x"}).data["job"]
    other = reverse("api-storage-target-test-result", args=["other", job])
    assert client.get(other).status_code == 404
    mine = reverse("api-storage-target-test-result", args=["minio-eu", job])
    assert client.get(mine).data["detail"] == "Waiting for a worker to run the test."


@pytest.mark.parametrize(
    "location, words",
    [
        ("gs://bucket/x", "Unknown scheme gs://"),
        ("/srv/vaults", "local directory"),
        ("s3://B!/x", "not a valid bucket"),
        ("", "Give a s3://"),
    ],
)
def test_the_test_action_refuses_bad_locations(api, admin_user, location, words):
    api(admin_user).post(LIST, s3_body())
    r = api(admin_user).post(test_url("minio-eu"), {"location": location})
    assert r.status_code == 400, r.data
    assert words in r.data["location"][0]


# -- vaults on object storage ---------------------------------------------------------------------


def test_vaults_on_s3_and_on_azure(api, admin_user):
    client = api(admin_user)
    client.post(LIST, s3_body())
    client.post(LIST, azure_body())
    r = client.post(
        VAULTS,
        {"name": "obj-s3", "store_location": "s3://backups/obj-s3", "storage_target": "minio-eu"},
    )
    assert r.status_code == 201, r.data
    assert (r.data["store_location"], r.data["storage_target"]) == (
        "s3://backups/obj-s3",
        "minio-eu",
    )
    r = client.post(
        VAULTS,
        {
            "name": "obj-az",
            "store_location": "az://lifeboat/obj-az",
            "storage_target": "blob-we",
            "secondary_location": "s3://backups/obj-az-copy",
            "secondary_target": "minio-eu",
        },
    )
    assert r.status_code == 201, r.data
    assert r.data["secondary_target"] == "minio-eu"
    vault = Vault.objects.get(name="obj-az")
    assert vault.vault_location == "az://lifeboat/obj-az"
    assert not vault.store_is_local
    # A target that a vault names stays.
    r = client.delete(detail("blob-we"))
    assert r.status_code == 400
    assert "obj-az" in str(r.data["detail"])


@pytest.mark.parametrize(
    "body, field, words",
    [
        ({"store_location": "s3://backups/v"}, "storage_target", "Choose the storage target"),
        (
            {"store_location": "az://backups/v", "storage_target": "minio-eu"},
            "storage_target",
            "azure target",
        ),
        ({"store_location": "gs://backups/v"}, "store_location", "Unknown scheme"),
        ({"store_location": "/srv/x", "storage_target": "minio-eu"}, "storage_target", "Only"),
        ({"store_location": "relative/dir"}, "store_location", "absolute directory"),
        ({"storage_target": "nope"}, "storage_target", "does not exist"),
        (
            {
                "store_location": "s3://backups/v",
                "storage_target": "minio-eu",
                "secondary_location": "s3://backups/v/copy",
                "secondary_target": "minio-eu",
            },
            "secondary_location",
            "apart",
        ),
    ],
)
def test_bad_vault_locations_are_refused_naming_the_field(api, admin_user, body, field, words):
    api(admin_user).post(LIST, s3_body())
    r = api(admin_user).post(VAULTS, {"name": "v1", **body})
    assert r.status_code == 400, r.data
    assert words in " ".join(r.data[field]), r.data


def test_two_vaults_never_share_a_bucket_prefix(api, admin_user):
    client = api(admin_user)
    client.post(LIST, s3_body())
    body = {"store_location": "s3://backups/a", "storage_target": "minio-eu"}
    assert client.post(VAULTS, {"name": "va", **body}).status_code == 201
    nested = {"store_location": "s3://backups/a/b", "storage_target": "minio-eu"}
    r = client.post(VAULTS, {"name": "vb", **nested})
    assert r.status_code == 400
    assert "vault va" in r.data["store_location"][0]


def test_locations_are_for_site_admins_only(api, admin_user):
    client = api(admin_user)
    client.post(LIST, s3_body())
    vault = f.make_vault("v1", owner=admin_user)
    owner = f.make_user()
    f.add_member(vault, owner, "owner")
    r = api(owner).patch(
        reverse("api-vault-detail", args=["v1"]),
        {"secondary_location": "s3://backups/copy", "secondary_target": "minio-eu"},
    )
    assert r.status_code == 403
    r = client.patch(
        reverse("api-vault-detail", args=["v1"]),
        {"secondary_location": "s3://backups/copy", "secondary_target": "minio-eu"},
    )
    assert r.status_code == 200, r.data
    assert r.data["secondary_location"] == "s3://backups/copy"


@pytest.mark.parametrize(
    "target, object_lock, expected",
    [
        ("minio-eu", True, "Enforced by the store (S3 Object Lock, COMPLIANCE)"),
        ("minio-eu", False, "Enforced by Lifeboat only"),
        ("blob-we", False, "Enforced by Lifeboat only"),
        (None, False, "Enforced by Lifeboat only"),
    ],
)
def test_who_enforces_locked_immutability(api, admin_user, target, object_lock, expected):
    client = api(admin_user)
    client.post(LIST, s3_body(object_lock=object_lock))
    client.post(LIST, azure_body())
    where = {}
    if target is not None:
        scheme = "s3" if target == "minio-eu" else "az"
        where = {"store_location": f"{scheme}://backups/v1", "storage_target": target}
    assert client.post(VAULTS, {"name": "v1", **where}).status_code == 201
    url = reverse("api-vault-detail", args=["v1"])
    assert client.get(url).data["immutability_enforcement"] is None
    Vault.objects.filter(name="v1").update(immutability=Immutability.LOCKED)
    assert client.get(url).data["immutability_enforcement"] == expected
