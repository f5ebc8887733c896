"""Paths on the server are compared as the files they name: a disk file belongs to one VM
however its path is spelt ('..', symlinks, hard links), and a vault store is an absolute
directory of its own."""

import os

import pytest
from django.urls import reverse

from inventory.models import Disk
from tests import factories as f
from vaults.models import Vault

VMS = reverse("api-vm-list")
VAULTS = reverse("api-vault-list")


def new_vm(host, os_disk: str) -> dict:
    return {"name": "db-01", "host": host.pk, "disks": [{"lun": -1, "path": os_disk}]}


def spelt_with_dot_dot(path: str) -> str:
    folder, name = os.path.split(path)
    return os.path.join(folder, "..", os.path.basename(folder), name)


def test_a_disk_spelt_with_dot_dot_is_still_the_other_vms(api, admin_user, vm):
    taken = vm.disks.get(lun=0).path
    r = api(admin_user).post(VMS, new_vm(vm.host, spelt_with_dot_dot(taken)))
    assert r.status_code == 400, r.data
    assert list(r.data) == ["disks"]
    assert "already a disk of VM web-01" in r.data["disks"][0]
    assert Disk.objects.filter(vm__name="db-01").count() == 0


def test_a_symlink_or_hard_link_to_another_vms_disk_is_refused(api, admin_user, vm):
    taken = vm.disks.get(lun=0).path
    folder = os.path.dirname(taken)
    os.symlink(taken, os.path.join(folder, "alias.img"))
    os.link(taken, os.path.join(folder, "twin.img"))
    for name in ("alias.img", "twin.img"):
        r = api(admin_user).post(VMS, new_vm(vm.host, os.path.join(folder, name)))
        assert r.status_code == 400, (name, r.data)
        assert "already a disk of VM web-01" in r.data["disks"][0]


def test_changing_a_vm_cannot_take_another_vms_disk(api, admin_user, vm, host):
    other = f.make_vm(host, name="db-01")
    r = api(admin_user).patch(
        reverse("api-vm-detail", args=[other.pk]),
        {"disks": [{"lun": -1, "path": spelt_with_dot_dot(vm.disks.get(lun=-1).path)}]},
    )
    assert r.status_code == 400 and list(r.data) == ["disks"]


def test_one_vm_cannot_name_a_file_twice_by_another_spelling(api, admin_user, host):
    path = os.path.join(host.allowed_roots[0], "db.img")
    with open(path, "wb") as fh:
        fh.truncate(1 << 20)
    body = new_vm(host, path)
    body["disks"].append({"lun": 0, "path": spelt_with_dot_dot(path)})
    r = api(admin_user).post(VMS, body)
    assert r.status_code == 400 and "Two disks name the same file." in r.data["disks"]


def test_a_disk_path_is_stored_resolved(api, admin_user, host):
    path = os.path.join(host.allowed_roots[0], "db.img")
    with open(path, "wb") as fh:
        fh.truncate(1 << 20)
    r = api(admin_user).post(VMS, new_vm(host, spelt_with_dot_dot(path)))
    assert r.status_code == 201, r.data
    assert r.data["disks"][0]["path"] == os.path.realpath(path)


# -- vault stores ---------------------------------------------------------------------------------


def test_a_relative_store_location_is_refused_naming_it(api, admin_user):
    r = api(admin_user).post(VAULTS, {"name": "lab", "store_location": "stores/lab"})
    assert r.status_code == 400, r.data
    assert list(r.data) == ["store_location"]
    assert "absolute" in r.data["store_location"][0]
    assert not Vault.objects.filter(name="lab").exists()


def test_moving_an_empty_vault_to_a_relative_store_is_refused(api, admin_user, vault):
    r = api(admin_user).patch(reverse("api-vault-detail", args=["prod"]), {"store_location": "x"})
    assert r.status_code == 400 and list(r.data) == ["store_location"]


def test_the_vault_page_shows_a_relative_store_as_a_field_error(client, admin_user):
    client.force_login(admin_user)
    r = client.post(
        "/vaults/new/",
        {
            "name": "lab",
            "store_location": "stores/lab",
            "soft_delete_state": "enabled",
            "soft_delete_days": "14",
            "immutability": "disabled",
        },
    )
    assert "absolute" in str(r.context["form"].errors["store_location"])
    assert not Vault.objects.filter(name="lab").exists()


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_two_vaults_never_share_a_store(api, admin_user, vault, where):
    prod = str(vault.store_path)
    location = {
        "same": os.path.join(prod, "..", os.path.basename(prod)),
        "inside": os.path.join(prod, "nested"),
        "around": os.path.dirname(prod),
    }[where]
    r = api(admin_user).post(VAULTS, {"name": "lab", "store_location": location})
    assert r.status_code == 400, r.data
    assert "vault prod" in r.data["store_location"][0]


def test_a_new_vault_cannot_take_a_store_named_after_it(api, admin_user, vault, settings):
    default = os.path.join(settings.LIFEBOAT["VAULT_STORE_ROOT"], "lab")
    r = api(admin_user).patch(
        reverse("api-vault-detail", args=["prod"]), {"store_location": default}
    )
    assert r.status_code == 200, r.data
    r = api(admin_user).post(VAULTS, {"name": "lab"})
    assert r.status_code == 400 and list(r.data) == ["store_location"]
