"""Customer-managed keys: registration, the irreversible switch of an empty vault, real backups
under the key, rotation by update_key jobs, and a missing or disabled key failing loudly."""

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

import engine
from jobs.models import Operation
from jobs.restore import request_restore
from security import kek, keys
from security.models import Alert, CustomerKey, VaultKey
from tests import factories as f
from tests.backups.conftest import World, aside, churn, needs_e2fsprogs, run, same_bytes
from vaults import stores
from vaults.models import AuditEvent, RecoveryPoint
from vaults.protection import protect_vm
from vaults.services.vaults import update_vault

pytestmark = pytest.mark.django_db


def key_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


@pytest.fixture
def k1(tmp_path, admin_user):
    return keys.register_key(by=admin_user, name="k1", path=str(key_file(tmp_path / "keys/k1")))


# -- registration (site admins) ----------------------------------------------------------------


def test_site_admins_register_keys_by_reference(api, admin_user, tmp_path):
    path = key_file(tmp_path / "keys" / "a.key")
    r = api(admin_user).post(reverse("api-key-list"), {"name": "ops-key", "path": str(path)})
    assert r.status_code == 201, r.content
    assert r.data["path"] == str(path) and r.data["enabled"] and r.data["version"] == 1
    assert r.data["problem"] == ""
    key = CustomerKey.objects.get(name="ops-key")
    assert key.fingerprint == kek.fingerprint(path.read_bytes())
    # The key material is nowhere in the database row or the audit record.
    assert path.read_bytes().hex() not in str(CustomerKey.objects.values().get())
    assert AuditEvent.objects.filter(action="key.create", actor=admin_user).exists()


def test_registration_checks_the_file(api, admin_user, tmp_path):
    bad = tmp_path / "short.key"
    bad.write_bytes(b"x" * 10)
    for path in ("relative.key", str(tmp_path / "missing.key"), str(bad)):
        r = api(admin_user).post(reverse("api-key-list"), {"name": "k", "path": path})
        assert r.status_code == 400 and list(r.data) == ["path"], r.data


@pytest.mark.parametrize("persona", ["owner", "contributor", "reader", "outsider"])
def test_only_site_admins_register_keys(api, personas, persona, tmp_path, vault):
    path = key_file(tmp_path / "x.key")
    r = api(personas[persona]).post(reverse("api-key-list"), {"name": "x", "path": str(path)})
    assert r.status_code == 403


def test_members_see_key_names_but_not_paths(api, contributor, k1, admin_user):
    r = api(contributor).get(reverse("api-key-list"))
    assert r.status_code == 200 and r.data["results"] == [
        {"name": "k1", "enabled": True, "version": 1}
    ]
    d = api(contributor).get(reverse("api-key-detail", args=["k1"]))
    assert "path" not in d.data
    assert "path" in api(admin_user).get(reverse("api-key-detail", args=["k1"])).data
    assert (
        api(contributor)
        .patch(reverse("api-key-detail", args=["k1"]), {"enabled": False})
        .status_code
        == 403
    )


def test_a_removed_key_file_shows_as_a_problem(api, admin_user, k1):
    Path(k1.path).unlink()
    d = api(admin_user).get(reverse("api-key-detail", args=["k1"])).data
    assert "k1" in d["problem"] and "is missing" in d["problem"]


# -- choosing the key (contributors) -----------------------------------------------------------------


def test_a_contributor_switches_an_empty_vault_to_a_key(api, admin_user, contributor, k1):
    v = f.make_vault("fresh", owner=admin_user)
    f.add_member(v, contributor, "contributor")
    url = reverse("api-vault-detail", args=["fresh"])
    r = api(contributor).patch(url, {"encryption": "customer_managed", "encryption_key": "k1"})
    assert r.status_code == 200, r.content
    assert r.data["encryption"] == "customer_managed" and r.data["encryption_key"] == "k1"
    assert VaultKey.objects.get(vault=v).key == k1
    event = AuditEvent.objects.get(action="vault.update", vault=v)
    assert event.before["encryption"] == "platform" and event.after["encryption_key"] == "k1"
    # Irreversible: no way back to the platform key.
    r = api(contributor).patch(url, {"encryption": "platform"})
    assert r.status_code == 409 and r.data["rule"] == "customer_managed_key_irreversible"
    # Sending the GET body back changes nothing.
    body = api(contributor).get(url).data
    body = {k: body[k] for k in ("soft_delete_days", "encryption", "encryption_key")}
    assert api(contributor).patch(url, body).status_code == 200


def test_switching_a_vault_that_protected_something_is_refused(api, vault, item, contributor, k1):
    r = api(contributor).patch(
        reverse("api-vault-detail", args=["prod"]),
        {"encryption": "customer_managed", "encryption_key": "k1"},
    )
    assert r.status_code == 409 and r.data["rule"] == "customer_managed_key_before_protection"
    assert "before the first protection" in r.data["detail"]


def test_a_vault_whose_items_are_gone_still_counts_as_having_protected(
    admin_user, k1, host, tmp_path
):
    v = f.make_vault("once", owner=admin_user)
    v.linked_hosts.add(host)
    vm = f.make_vm(host, "gone-vm")
    item = protect_vm(v, by=admin_user, vm=vm, policy=v.policies.get())
    item.delete()  # the purge removes catalog rows; the audit log remembers
    assert keys.has_protected(v)
    with pytest.raises(ValidationError) as e:
        update_vault(v, by=admin_user, encryption="customer_managed", encryption_key="k1")
    assert "before the first protection" in str(e.value)


def test_readers_and_operators_cannot_choose_a_key(api, vault, personas, k1):
    for persona in ("reader", "operator"):
        r = api(personas[persona]).patch(
            reverse("api-vault-detail", args=["prod"]),
            {"encryption": "customer_managed", "encryption_key": "k1"},
        )
        assert r.status_code == 403


def test_unknown_or_unusable_keys_are_refused(api, admin_user, k1):
    f.make_vault("fresh", owner=admin_user)
    url = reverse("api-vault-detail", args=["fresh"])
    r = api(admin_user).patch(url, {"encryption": "customer_managed", "encryption_key": "nope"})
    assert r.status_code == 400 and list(r.data) == ["encryption_key"]
    r = api(admin_user).patch(url, {"encryption": "customer_managed"})
    assert r.status_code == 400 and list(r.data) == ["encryption_key"]
    keys.set_key_enabled(k1, False, by=admin_user)
    r = api(admin_user).patch(url, {"encryption": "customer_managed", "encryption_key": "k1"})
    assert r.status_code == 409 and "disabled" in r.data["detail"]


def test_an_existing_empty_store_is_rewrapped_on_the_switch(admin_user, k1, host):
    v = f.make_vault("pre", owner=admin_user)
    v.linked_hosts.add(host)
    stores.open_or_create_snapshot_store(v, host)  # both tiers initialised with the platform key
    platform = engine.platform_kek(settings.LIFEBOAT["MASTER_KEY_FILE"])
    update_vault(v, by=admin_user, encryption="customer_managed", encryption_key="k1")
    v.refresh_from_db()
    cmk = Path(k1.path).read_bytes()
    assert kek.kek_for(v) == cmk
    for path in (v.store_path, host.snapshot_store_path(v)):
        engine.open_store(path, cmk)
        with pytest.raises(engine.WrongKey):
            engine.open_store(path, platform)


# Jobs run in-process commit as a worker would (PostgreSQL closes a connection in a test
# transaction when the runner asks for a fresh one).
@pytest.mark.django_db(transaction=True)
def test_changing_the_key_of_a_cmk_vault_is_gated_and_runs_a_job(
    api, vault, admin_user, approver, contributor, k1, tmp_path
):
    from security.models import Approval

    # A vault that chose k1 before protecting anything, now with MUA on.
    update_vault(vault, by=admin_user, encryption="customer_managed", encryption_key="k1")
    update_vault(vault, by=admin_user, mua_enabled=True)
    k2 = keys.register_key(by=admin_user, name="k2", path=str(key_file(tmp_path / "keys/k2")))
    url = reverse("api-vault-detail", args=["prod"])
    r = api(contributor).patch(url, {"encryption_key": "k2", "encryption": "customer_managed"})
    assert r.status_code == 202, r.content
    assert Approval.objects.get().reasons == ["change the encryption key"]
    r = api(approver).post(reverse("api-approval-approve", args=["prod", r.data["approval"]]), {})
    assert r.status_code == 200, r.content
    from jobs.models import Job

    job = Job.objects.get(operation=Operation.UPDATE_KEY, vault=vault)
    assert job.params["key"] == "k2"
    assert VaultKey.objects.get(vault=vault).key == k1  # until the job has re-wrapped
    assert run(job).status == "completed", job.error_message
    vk = VaultKey.objects.get(vault=vault)
    assert vk.key == k2 and vk.path == k2.path


# -- real backups under the key ---------------------------------------------------------------------


@needs_e2fsprogs
@pytest.mark.django_db(transaction=True)
def test_cmk_backups_rotation_and_a_missing_key(
    tmp_path, mailoutbox, django_capture_on_commit_callbacks
):
    # A stopped VM: its images are read as they are (no live-read warning).
    w = World(tmp_path, protect=False, disks=((-1, 16),), power_state="stopped")
    key_path = key_file(tmp_path / "keys" / "k1-v1.key")
    key = keys.register_key(by=w.admin, name="k1", path=str(key_path))
    update_vault(w.vault, by=w.admin, encryption="customer_managed", encryption_key="k1")
    w.vault.refresh_from_db()
    w.item = protect_vm(w.vault, by=w.admin, vm=w.vm, policy=w.policy)
    image = w.images[-1]

    # Two backups under v1 of the key.
    assert run(w.backup_now()).status == "completed"
    first = aside(image, "rp1")
    churn(image, 1, "a")
    assert run(w.backup_now()).status == "completed"
    second = aside(image, "rp2")
    rps = list(RecoveryPoint.objects.filter(vault=w.vault).order_by("time"))
    assert len(rps) == 2
    with pytest.raises(engine.WrongKey):  # the stores are not under the platform key
        engine.open_store(w.vault.store_path, engine.platform_kek(tmp_path / "master.key"))

    # Rotate: one update_key job per vault, then the old file can go.
    new_path = key_file(tmp_path / "keys" / "k1-v2.key")
    jobs = keys.rotate_key(key, by=w.admin, path=str(new_path))
    assert [j.operation for j in jobs] == [Operation.UPDATE_KEY]
    assert run(jobs[0]).status == "completed", jobs[0].error_message
    assert jobs[0].result["stores_rewrapped"] == 2  # vault store + snapshot store
    assert VaultKey.objects.get(vault=w.vault).version == 2
    key_path.unlink()
    for rp, expected in zip(rps, (first, second), strict=True):
        for store in (w.vault_store(), w.snapshot_store()):
            assert same_bytes(w.restore(store, rp.pk, -1), expected)

    # The key file disappears: backups and restores fail, naming the key; a Sev-1 alert.
    hidden = new_path.with_suffix(".away")
    new_path.rename(hidden)
    with django_capture_on_commit_callbacks(execute=True):
        failed = run(w.backup_now())
    assert failed.status == "failed" and failed.error_code == "key_unavailable"
    assert "customer-managed key k1" in failed.error_message
    alert = Alert.objects.get(kind="key_unavailable", status="active")
    assert alert.severity == "sev1" and "k1" in alert.message
    assert any("Encryption key unavailable" in m.subject for m in mailoutbox)
    with pytest.raises(ValidationError) as e:
        request_restore(
            rps[0],
            by=w.admin,
            kind="restore_disks",
            target={"host": w.host.pk, "path": str(Path(w.host.allowed_roots[1]))},
        )
    assert "customer-managed key k1" in str(e.value)
    # A second failure does not raise a second alert.
    run(w.backup_now())
    assert Alert.objects.filter(kind="key_unavailable").count() == 1

    # Putting the file back heals: backups work and the key alert resolves itself.
    hidden.rename(new_path)
    assert run(w.backup_now()).status == "completed"
    assert Alert.objects.get(kind="key_unavailable").status == "resolved"
    restore_job = request_restore(
        rps[1],
        by=w.admin,
        kind="restore_disks",
        target={"host": w.host.pk, "path": str(Path(w.host.allowed_roots[1]))},
    )

    # A disabled key fails a queued restore the same way.
    keys.set_key_enabled(key, False, by=w.admin)
    restore_job = run(restore_job)
    assert restore_job.status == "failed" and restore_job.error_code == "key_unavailable"
    assert "customer-managed key k1 is disabled" in restore_job.error_message
    assert Alert.objects.filter(kind="restore_failure").count() == 1
    keys.set_key_enabled(key, True, by=w.admin)
    assert run(w.backup_now()).status == "completed"


def test_rotation_is_site_admin_work(api, contributor, admin_user, k1, tmp_path):
    new = key_file(tmp_path / "keys" / "new.key")
    url = reverse("api-key-rotate", args=["k1"])
    assert api(contributor).post(url, {"path": str(new)}).status_code == 403
    r = api(admin_user).post(url, {"path": str(new)})
    assert r.status_code == 202 and r.data["key"]["version"] == 2 and r.data["jobs"] == []
    r = api(admin_user).post(url, {"path": str(new)})
    assert r.status_code == 400 and list(r.data) == ["path"]  # the same key again


def test_disabling_a_key_is_audited_per_vault(api, admin_user, k1):
    v = f.make_vault("fresh", owner=admin_user)
    update_vault(v, by=admin_user, encryption="customer_managed", encryption_key="k1")
    r = api(admin_user).patch(reverse("api-key-detail", args=["k1"]), {"enabled": False})
    assert r.status_code == 200 and r.data["enabled"] is False
    assert AuditEvent.objects.filter(action="vault.key_disable", vault=v).exists()
    with pytest.raises(engine.KeyUnavailable, match="k1 is disabled"):
        kek.kek_for(v)
