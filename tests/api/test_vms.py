import os

from django.urls import reverse

from inventory.models import VirtualMachine
from tests import factories as f
from vaults.models import AuditEvent

LIST = reverse("api-vm-list")


def detail(pk):
    return reverse("api-vm-detail", args=[pk])


def disk_file(host, name, size):
    path = os.path.join(host.allowed_roots[0], name)
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def body(on, **overrides):
    host = on
    data = {
        "name": "db-01",
        "host": host.pk,
        "disks": [
            {"lun": -1, "path": disk_file(host, "db-os.img", 1 << 20)},
            {"lun": 0, "path": disk_file(host, "db-data.img", 3 << 20)},
        ],
    }
    data.update(overrides)
    return data


def test_admin_registers_a_vm_with_sizes_read_from_files(api, admin_user, host):
    r = api(admin_user).post(
        LIST,
        body(host, extension={"pre_script": "/opt/hooks/pre.sh", "script_timeout": 60}),
    )
    assert r.status_code == 201, r.data
    assert [(d["lun"], d["size"]) for d in r.data["disks"]] == [(-1, 1 << 20), (0, 3 << 20)]
    ext = r.data["extension"]
    assert ext["state"] == "not_installed" and ext["code"] is None
    assert ext["pre_script"] == "/opt/hooks/pre.sh" and ext["script_timeout"] == 60
    assert r.data["power_state"] == "running"
    assert AuditEvent.objects.filter(action="vm.create").exists()


def test_owner_gets_403_registering_a_vm(api, vault, owner, host):
    assert api(owner).post(LIST, body(host)).status_code == 403


def test_it_refuses_disks_outside_the_allowed_roots(api, admin_user, host, tmp_path):
    outside = tmp_path / "outside.img"
    outside.write_bytes(b"x")
    data = body(host)
    data["disks"][1]["path"] = str(outside)
    r = api(admin_user).post(LIST, data)
    assert r.status_code == 400 and list(r.data) == ["disks"]
    assert "allowed roots" in r.data["disks"][0]


def test_it_refuses_a_symlink_escaping_the_allowed_roots(api, admin_user, host, tmp_path):
    target = tmp_path / "secret.img"
    target.write_bytes(b"x")
    link = os.path.join(host.allowed_roots[0], "link.img")
    os.symlink(target, link)
    data = body(host)
    data["disks"][1]["path"] = link
    assert api(admin_user).post(LIST, data).status_code == 400


def test_it_refuses_missing_files_and_bad_lun_sets(api, admin_user, host):
    client = api(admin_user)
    data = body(host)
    data["disks"][1]["path"] = os.path.join(host.allowed_roots[0], "missing.img")
    assert list(client.post(LIST, data).data) == ["disks"]
    data = body(host)
    data["disks"][1]["lun"] = -1
    r = client.post(LIST, data)
    assert r.status_code == 400 and "exactly one OS disk" in r.data["disks"][0]
    data = body(host)
    data["disks"].append({"lun": 0, "path": disk_file(host, "x.img", 10)})
    r = client.post(LIST, data)
    assert r.status_code == 400 and "more than once" in " ".join(r.data["disks"])


def test_it_names_bad_nested_fields(api, admin_user, host):
    data = body(host, extension={"script_timeout": 0, "shell": "bash"})
    data["disks"][0]["bus"] = "scsi"
    r = api(admin_user).post(LIST, data)
    assert r.status_code == 400
    assert set(r.data["extension"]) == {"script_timeout", "shell"}
    assert r.data["disks"][0] == {"bus": ["Unknown field."]}


def test_it_names_an_unknown_host(api, admin_user, host):
    r = api(admin_user).post(LIST, body(host, host=999))
    assert r.status_code == 400 and list(r.data) == ["host"]


def test_members_see_vms_of_linked_hosts_only(api, vault, vm, reader, outsider, tmp_path):
    stray = f.make_vm(f.make_host(tmp_path / "h2", name="host2"), name="stray")
    assert [v["name"] for v in api(reader).get(LIST).data["results"]] == ["web-01"]
    assert api(reader).get(detail(stray.pk)).status_code == 404
    assert api(outsider).get(LIST).data["count"] == 0
    assert api(outsider).get(detail(vm.pk)).status_code == 404


def test_a_get_can_be_patched_back_unchanged(api, admin_user, vm):
    client = api(admin_user)
    before = client.get(detail(vm.pk)).data
    r = client.patch(detail(vm.pk), before)
    assert r.status_code == 200, r.data
    assert r.data == before
    assert not AuditEvent.objects.filter(action="vm.update").exists()


def test_admin_changes_extension_settings_key_by_key(api, admin_user, vm):
    r = api(admin_user).patch(detail(vm.pk), {"extension": {"freeze_enabled": False}})
    assert r.status_code == 200, r.data
    vm.refresh_from_db()
    assert vm.freeze_enabled is False and vm.script_timeout == 30


def test_operator_gets_403_changing_a_vm(api, vault, vm, operator):
    assert api(operator).patch(detail(vm.pk), {"power_state": "stopped"}).status_code == 403


def test_admin_replaces_the_disks(api, admin_user, vm):
    os_disk = vm.disks.get(lun=-1)
    new = disk_file(vm.host, "web-data2.img", 5 << 20)
    r = api(admin_user).patch(
        detail(vm.pk), {"disks": [{"lun": -1, "path": os_disk.path}, {"lun": 3, "path": new}]}
    )
    assert r.status_code == 200, r.data
    assert [(d["lun"], d["size"]) for d in r.data["disks"]] == [(-1, 4 << 20), (3, 5 << 20)]


def test_it_refuses_moving_a_protected_vm_to_another_host(api, admin_user, item, tmp_path):
    other = f.make_host(tmp_path / "h2", name="host2")
    r = api(admin_user).patch(detail(item.vm_id), {"host": other.pk})
    assert r.status_code == 400 and list(r.data) == ["host"]


def test_it_refuses_deleting_a_protected_vm(api, admin_user, item):
    r = api(admin_user).delete(detail(item.vm_id))
    assert r.status_code == 400 and "prod" in r.data["detail"]


def test_admin_deletes_an_unprotected_vm(api, admin_user, vm):
    assert api(admin_user).delete(detail(vm.pk)).status_code == 204
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()


def test_it_keeps_the_vm_list_query_count_flat(api, vault, host, reader, assert_flat_queries):
    assert_flat_queries(
        api(reader),
        LIST,
        lambda n: [f.make_vm(host, disks=((-1, 1024), (0, 1024))) for _ in range(n)],
        budget=4,
    )
