"""libvirt hosts over the API: the URI on the host, test-connection and discover, what VMs show
of discovery, and who may do it."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from engine.connectors.spec import DomainDisk, DomainInfo
from inventory import discovery
from inventory.models import Host, VirtualMachine
from tests import factories as f
from tests.libvirt_domains import URI, libvirt_unavailable, os_less_domain, virsh
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

LIST = reverse("api-host-list")


def discover_url(name):
    return reverse("api-host-discover", args=[name])


def connection_url(name):
    return reverse("api-host-test-connection", args=[name])


def kvm_host(tmp_path, name="kvm1", uri="qemu:///system"):
    return f.make_host(tmp_path / name, name=name, connector="libvirt", libvirt_uri=uri)


def web_domain(*targets, uuid="2b1c0e4e-0000-4000-8000-000000000001"):
    disks = tuple(
        DomainDisk(t, f"/var/lib/libvirt/images/web-{t}.qcow2", "qcow2", 1 << 30, i == 0)
        for i, t in enumerate(targets)
    )
    return DomainInfo("web", uuid, "running", disks, "<domain/>")


@pytest.fixture
def libvirt_domain(tmp_path):
    reason = libvirt_unavailable()
    if reason:
        pytest.skip(reason)
    with os_less_domain(tmp_path) as made:
        yield made


def test_admin_registers_a_libvirt_host(api, admin_user, tmp_path):
    (tmp_path / "d").mkdir()
    body = {
        "name": "kvm9",
        "connector": "libvirt",
        "libvirt_uri": "qemu+ssh://root@hv9/system",
        "snapshot_root": str(tmp_path / "s"),
        "allowed_roots": [str(tmp_path / "d")],
    }
    r = api(admin_user).post(LIST, body, format="json")
    assert r.status_code == 201, r.data
    assert (r.data["connector"], r.data["libvirt_uri"]) == ("libvirt", body["libvirt_uri"])
    assert Host.objects.get(name="kvm9").libvirt_uri == body["libvirt_uri"]


@pytest.mark.parametrize("uri", ["", "qemu:///sys tem", "qemu+ssh:///system", "xen:///system"])
def test_bad_uris_name_the_field(api, admin_user, tmp_path, uri):
    (tmp_path / "d").mkdir()
    body = {
        "name": "kvm9",
        "connector": "libvirt",
        "libvirt_uri": uri,
        "snapshot_root": str(tmp_path / "s"),
        "allowed_roots": [str(tmp_path / "d")],
    }
    r = api(admin_user).post(LIST, body, format="json")
    assert r.status_code == 400 and list(r.data) == ["libvirt_uri"], r.data


def test_image_hosts_refuse_discovery_and_connection_tests(api, admin_user, host):
    client = api(admin_user)
    r = client.post(discover_url(host.name))
    assert r.status_code == 400 and list(r.data) == ["connector"]
    assert "image" in r.data["connector"][0]
    r = client.post(connection_url(host.name))
    assert r.status_code == 400 and list(r.data) == ["connector"]


def test_unknown_hosts_are_404(api, admin_user):
    assert api(admin_user).post(discover_url("nope")).status_code == 404
    assert api(admin_user).post(connection_url("nope")).status_code == 404


def test_only_site_admins(api, vault, owner, operator, host, tmp_path):
    kvm = kvm_host(tmp_path)
    vault.linked_hosts.add(kvm)
    for user in (owner, operator):
        assert api(user).post(discover_url(kvm.name)).status_code == 403
        assert api(user).post(connection_url(kvm.name)).status_code == 403
    assert api(None).post(discover_url(kvm.name)).status_code in (401, 403)


def test_vms_show_what_discovery_found(api, admin_user, tmp_path):
    host = kvm_host(tmp_path)
    discovery.apply_discovery(host, [web_domain("vda", "vdb")], by=admin_user)
    discovery.apply_discovery(host, [web_domain("vda")], by=admin_user)
    vm = VirtualMachine.objects.get(name="web")
    r = api(admin_user).get(reverse("api-vm-detail", args=[vm.pk]))
    assert r.status_code == 200
    assert r.data["domain_uuid"] == "2b1c0e4e-0000-4000-8000-000000000001"
    assert r.data["vanished_at"] is None
    assert [c["change"] for c in r.data["discovery_changes"]] == ["disk_removed"]
    assert [(d["lun"], d["target"], d["format"]) for d in r.data["disks"]] == [(-1, "vda", "qcow2")]
    # What a GET shows may be sent back: nothing changes.
    r2 = api(admin_user).patch(
        reverse("api-vm-detail", args=[vm.pk]), {"disks": r.data["disks"]}, format="json"
    )
    assert r2.status_code == 200, r2.data
    # The disks of a libvirt VM come from the hypervisor.
    r3 = api(admin_user).patch(
        reverse("api-vm-detail", args=[vm.pk]),
        {"disks": [{"lun": -1, "path": str(tmp_path / "other.img")}]},
        format="json",
    )
    assert r3.status_code == 400 and list(r3.data) == ["disks"]

    discovery.apply_discovery(host, [], by=admin_user)
    r = api(admin_user).get(reverse("api-vm-detail", args=[vm.pk]))
    assert r.data["vanished_at"] is not None
    assert r.data["discovery_changes"][0]["change"] == "vanished"


def test_vm_list_queries_stay_flat_with_discovered_vms(api, admin_user, tmp_path):
    host = kvm_host(tmp_path)

    def domains(n):
        return [
            DomainInfo(
                f"d{i}",
                f"00000000-0000-4000-8000-{i:012d}",
                "running",
                (DomainDisk("vda", f"/img/d{i}.qcow2", "qcow2", 1 << 20, True),),
                "",
            )
            for i in range(n)
        ]

    counts = []
    for n in (3, 50):
        discovery.apply_discovery(host, domains(n), by=admin_user)
        with CaptureQueriesContext(connection) as ctx:
            r = api(admin_user).get(reverse("api-vm-list"), {"page_size": 100})
        assert r.status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


# -- real libvirtd ------------------------------------------------------------------------------


def test_discover_and_test_connection_through_real_libvirtd(
    api, admin_user, tmp_path, libvirt_domain
):
    name, image = libvirt_domain
    host = kvm_host(tmp_path, uri=URI)
    client = api(admin_user)
    r = client.post(connection_url(host.name))
    assert r.status_code == 200, r.data
    assert set(r.data) == {"uri", "hostname", "libvirt_version", "hypervisor_version"}
    assert r.data["uri"] and r.data["libvirt_version"]

    r = client.post(discover_url(host.name))
    assert r.status_code == 200, r.data
    ours = [v for v in r.data["new"] if v["domain"] == name]
    assert len(ours) == 1
    assert ours[0]["power_state"] == "stopped"
    assert ours[0]["disks"] == [
        {
            "target": "vda",
            "path": str(image),
            "format": "qcow2",
            "virtual_size": 64 << 20,
            "lun": -1,
        }
    ]
    assert AuditEvent.objects.filter(action="host.discover").count() == 1

    virsh("undefine", name, "--checkpoints-metadata")
    r = client.post(discover_url(host.name))
    gone = [v for v in r.data["vanished"] if v["name"] == name]
    assert len(gone) == 1 and gone[0]["vanished_at"]
    assert [c["change"] for c in gone[0]["changes"]] == ["vanished"]


def test_a_connection_failure_says_libvirts_message(api, admin_user, tmp_path):
    reason = libvirt_unavailable()
    if reason:
        pytest.skip(reason)
    host = kvm_host(tmp_path, uri="qemu+tcp://127.0.0.1:1/system")
    r = api(admin_user).post(connection_url(host.name))
    assert r.status_code == 400 and list(r.data) == ["libvirt_uri"]
    assert r.data["libvirt_uri"][0].startswith("Cannot connect: ")
