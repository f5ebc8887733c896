"""libvirt hosts: URI rules, discovery applied to the inventory (new, changed, vanished,
returned, name conflicts), refusals, and one discovery through real libvirtd."""

import uuid as uuidlib
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from engine.connectors.spec import DomainDisk, DomainInfo
from inventory import discovery, services
from inventory.models import Disk, Host, VirtualMachine, libvirt_uri_problem
from tests import factories as f
from tests.libvirt_domains import URI, libvirt_unavailable, os_less_domain, virsh
from vaults.models import AuditEvent, ProtectedVM

pytestmark = pytest.mark.django_db

GIB = 1 << 30


def libvirt_host(root: Path, name: str = "kvm1", uri: str = "qemu:///system") -> Host:
    return f.make_host(root, name=name, connector="libvirt", libvirt_uri=uri)


def disk(target: str, size: int = GIB, *, boot: bool = False, fmt: str = "qcow2", path=None):
    return DomainDisk(
        target=target,
        path=path or f"/var/lib/libvirt/images/{target}.{fmt}",
        format=fmt,
        virtual_size=size,
        boot=boot,
    )


def domain(name: str, *disks: DomainDisk, uuid: str | None = None, power="running"):
    return DomainInfo(
        name=name,
        uuid=uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, name)),
        power_state=power,
        disks=tuple(disks),
        xml=f"<domain><name>{name}</name></domain>",
    )


def luns(vm: VirtualMachine) -> dict[str, int]:
    return {d.target: d.lun for d in vm.disks.all()}


# -- URIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "qemu:///session",
        "qemu+ssh://root@hv1.example.org/system",
        "qemu+tls://hv1/system",
        "qemu+tcp://hv1:16509/system",
        "qemu+ssh://ops@hv1/system?keyfile=/root/.ssh/id_ed25519",
    ],
)
def test_good_uris_pass(uri):
    assert libvirt_uri_problem(uri) is None


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "xen:///system",
        "qemu://system",
        "qemu:///system ",
        "qemu:///sys\x00tem",
        "qemu+ssh:///system",
        "qemu+carrier-pigeon://hv1/system",
        "qemu:///elsewhere",
        "lxc:///",
        "http://hv1/system",
    ],
)
def test_bad_uris_are_refused(uri):
    assert libvirt_uri_problem(uri)


def test_creating_a_libvirt_host_checks_its_uri(admin_user, tmp_path):
    (tmp_path / "d").mkdir()
    common = {"snapshot_root": str(tmp_path / "s"), "allowed_roots": [str(tmp_path / "d")]}
    with pytest.raises(ValidationError) as exc:
        services.create_host(by=admin_user, name="kvm", connector="libvirt", **common)
    assert list(exc.value.message_dict) == ["libvirt_uri"]
    with pytest.raises(ValidationError) as exc:
        services.create_host(
            by=admin_user, name="kvm", connector="libvirt", libvirt_uri="qemu:// x", **common
        )
    assert list(exc.value.message_dict) == ["libvirt_uri"]
    with pytest.raises(ValidationError) as exc:
        services.create_host(by=admin_user, name="img", libvirt_uri="qemu:///system", **common)
    assert list(exc.value.message_dict) == ["libvirt_uri"]
    host = services.create_host(
        by=admin_user, name="kvm", connector="libvirt", libvirt_uri="qemu:///system", **common
    )
    assert host.libvirt_uri == "qemu:///system"


# -- discovery ----------------------------------------------------------------------------------


def test_new_domains_become_vms(admin_user, tmp_path):
    host = libvirt_host(tmp_path)
    result = discovery.apply_discovery(
        host,
        [
            domain("web", disk("vda", 2 * GIB), disk("vdb"), disk("vdc", fmt="raw")),
            domain("db", disk("sda"), disk("vda", boot=True), power="stopped"),
        ],
        by=admin_user,
    )
    assert sorted(e.vm.name for e in result.new) == ["db", "web"]
    web = VirtualMachine.objects.get(name="web")
    assert web.host == host and web.power_state == "running"
    assert web.domain_uuid == str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, "web"))
    assert luns(web) == {"vda": -1, "vdb": 0, "vdc": 1}
    os_disk = web.disks.get(lun=-1)
    # Hypervisor paths, outside the host's allowed roots: that is fine for libvirt hosts.
    assert (os_disk.path, os_disk.size, os_disk.format) == (
        "/var/lib/libvirt/images/vda.qcow2",
        2 * GIB,
        "qcow2",
    )
    assert web.disks.get(target="vdc").format == "raw"
    db = VirtualMachine.objects.get(name="db")
    assert db.power_state == "stopped"
    assert luns(db) == {"vda": -1, "sda": 0}
    event = AuditEvent.objects.get(action="host.discover")
    assert event.after["new"] == 2 and event.after["changed"] == 0
    assert sorted(event.after["new_vms"]) == ["db", "web"]


def test_a_second_discovery_changes_nothing(admin_user, tmp_path):
    host = libvirt_host(tmp_path)
    domains = [domain("web", disk("vda"), disk("vdb"))]
    discovery.apply_discovery(host, domains, by=admin_user)
    result = discovery.apply_discovery(host, domains, by=admin_user)
    assert result.counts() == {
        "new": 0,
        "changed": 0,
        "vanished": 0,
        "unchanged": 1,
        "conflicts": 0,
    }
    assert result.unchanged[0].disks[0] == {
        "target": "vda",
        "path": "/var/lib/libvirt/images/vda.qcow2",
        "format": "qcow2",
        "virtual_size": GIB,
        "lun": -1,
    }
    assert AuditEvent.objects.filter(action="host.discover").count() == 2


def test_disks_added_removed_and_resized_keep_their_luns(admin_user, tmp_path):
    host = libvirt_host(tmp_path)
    discovery.apply_discovery(
        host, [domain("web", disk("vda"), disk("vdb"), disk("vdc"))], by=admin_user
    )
    vm = VirtualMachine.objects.get(name="web")
    assert luns(vm) == {"vda": -1, "vdb": 0, "vdc": 1}

    # vdb detached, vdc grown, vdd attached: vdd takes the freed LUN 0, vdc keeps LUN 1.
    result = discovery.apply_discovery(
        host,
        [domain("web", disk("vda"), disk("vdc", 3 * GIB), disk("vdd", fmt="raw"))],
        by=admin_user,
        request=None,
    )
    assert [e.vm.name for e in result.changed] == ["web"]
    vm.refresh_from_db()
    assert luns(vm) == {"vda": -1, "vdc": 1, "vdd": 0}
    assert vm.disks.get(target="vdc").size == 3 * GIB
    kinds = {(c["change"], c["target"]) for c in vm.discovery_changes}
    assert kinds == {("disk_removed", "vdb"), ("disk_resized", "vdc"), ("disk_added", "vdd")}
    assert result.changed[0].changes == vm.discovery_changes

    # Another disk: the next free LUN after 0 and 1.
    discovery.apply_discovery(
        host,
        [domain("web", disk("vda"), disk("vdc", 3 * GIB), disk("vdd", fmt="raw"), disk("vde"))],
        by=admin_user,
    )
    vm.refresh_from_db()
    assert luns(vm) == {"vda": -1, "vdc": 1, "vdd": 0, "vde": 2}
    assert vm.discovery_changes == [
        {"change": "disk_added", "target": "vde", "detail": vm.discovery_changes[0]["detail"]}
    ]


def test_a_replaced_image_is_reported(admin_user, tmp_path):
    host = libvirt_host(tmp_path)
    discovery.apply_discovery(host, [domain("web", disk("vda"))], by=admin_user)
    discovery.apply_discovery(
        host, [domain("web", disk("vda", path="/srv/new.qcow2"))], by=admin_user
    )
    vm = VirtualMachine.objects.get(name="web")
    assert vm.disks.get().path == "/srv/new.qcow2"
    assert [c["change"] for c in vm.discovery_changes] == ["disk_replaced"]


def test_a_vanished_domain_keeps_its_vm_and_its_protection(admin_user, vault, tmp_path):
    host = libvirt_host(tmp_path)
    discovery.apply_discovery(
        host, [domain("web", disk("vda")), domain("db", disk("vda"))], by=admin_user
    )
    db = VirtualMachine.objects.get(name="db")
    item = f.make_protected_item(vault, db)
    result = discovery.apply_discovery(host, [domain("web", disk("vda"))], by=admin_user)
    assert [e.vm.name for e in result.vanished] == ["db"]
    db.refresh_from_db()
    assert db.vanished_at is not None and db.power_state == "unknown"
    assert [c["change"] for c in db.discovery_changes] == ["vanished"]
    assert db.disks.count() == 1
    assert ProtectedVM.objects.get(pk=item.pk).state == item.state
    assert AuditEvent.objects.filter(action="host.discover").order_by("pk").last().after[
        "vanished_vms"
    ] == ["db"]

    # Still gone: still vanished, nothing new to report; the time it vanished stays.
    first = db.vanished_at
    result = discovery.apply_discovery(host, [domain("web", disk("vda"))], by=admin_user)
    db.refresh_from_db()
    assert [e.vm.name for e in result.vanished] == ["db"] and result.vanished[0].changes == []
    assert db.vanished_at == first and db.discovery_changes == []

    # Back again (with a new disk): cleared, "returned".
    result = discovery.apply_discovery(
        host,
        [domain("web", disk("vda")), domain("db", disk("vda"), disk("vdb"))],
        by=admin_user,
    )
    db.refresh_from_db()
    assert [e.vm.name for e in result.changed] == ["db"]
    assert db.vanished_at is None
    assert [c["change"] for c in db.discovery_changes] == ["returned", "disk_added"]


def test_taken_names_fall_back_to_domain_at_host_or_conflict(admin_user, tmp_path):
    image_host = f.make_host(tmp_path / "img", name="img")
    f.make_vm(image_host, name="web")
    f.make_vm(image_host, name="db")
    f.make_vm(image_host, name="db-kvm1")
    host = libvirt_host(tmp_path / "kvm")
    result = discovery.apply_discovery(
        host,
        [
            domain("web", disk("vda")),
            domain("db", disk("vda")),
            domain("bad name", disk("vda")),
            domain("new", disk("vda")),
        ],
        by=admin_user,
    )
    assert sorted(e.vm.name for e in result.new) == ["new-kvm1", "web-kvm1"]
    assert {c.domain for c in result.conflicts} == {"db", "bad name"}
    db = next(c for c in result.conflicts if c.domain == "db")
    assert "taken by another VM" in db.reason and "db-kvm1" in db.reason
    assert VirtualMachine.objects.get(name="web-kvm1").domain_uuid
    assert AuditEvent.objects.get(action="host.discover").after["conflicts"] == 2


def test_vms_registered_by_hand_are_left_alone(admin_user, tmp_path):
    host = libvirt_host(tmp_path)
    VirtualMachine.objects.create(name="manual", host=host)
    result = discovery.apply_discovery(host, [], by=admin_user)
    assert result.counts()["vanished"] == 0
    assert VirtualMachine.objects.get(name="manual").vanished_at is None


def test_image_hosts_refuse_discovery(admin_user, host):
    with pytest.raises(ValidationError) as exc:
        services.discover_host(host, by=admin_user)
    assert list(exc.value.message_dict) == ["connector"]
    assert "image" in exc.value.message_dict["connector"][0]
    with pytest.raises(ValidationError):
        discovery.apply_discovery(host, [domain("web", disk("vda"))], by=admin_user)
    with pytest.raises(ValidationError) as exc:
        services.test_connection(host, by=admin_user)
    assert list(exc.value.message_dict) == ["connector"]


def test_only_site_admins_discover(vault, owner, tmp_path):
    host = libvirt_host(tmp_path)
    with pytest.raises(PermissionDenied):
        discovery.apply_discovery(host, [], by=owner)
    with pytest.raises(PermissionDenied):
        services.test_connection(host, by=owner)


def test_libvirt_vms_keep_their_hypervisor_disks(admin_user, tmp_path):
    host = libvirt_host(tmp_path)
    discovery.apply_discovery(host, [domain("web", disk("vda"), disk("vdb"))], by=admin_user)
    vm = VirtualMachine.objects.get(name="web")
    # Other settings change; the disks (outside the allowed roots) stay as discovered.
    services.update_vm(vm, by=admin_user, script_timeout=90)
    assert luns(vm) == {"vda": -1, "vdb": 0}
    assert set(Disk.objects.filter(vm=vm).values_list("format", flat=True)) == {"qcow2"}
    with pytest.raises(ValidationError) as exc:
        services.update_vm(vm, by=admin_user, disks=[{"lun": -1, "path": "/tmp/x.img"}])
    assert list(exc.value.message_dict) == ["disks"]
    with pytest.raises(ValidationError) as exc:
        services.create_vm(by=admin_user, host=host, name="x", disks=[])
    assert list(exc.value.message_dict) == ["host"]
    # Neither the connector of a host with VMs nor its allowed roots are held to the disks.
    with pytest.raises(ValidationError) as exc:
        services.update_host(host, by=admin_user, connector="image", libvirt_uri="")
    assert "connector" in exc.value.message_dict
    host.refresh_from_db()
    services.update_host(host, by=admin_user, allowed_roots=[str(tmp_path / "restores")])


# -- real libvirtd ------------------------------------------------------------------------------


@pytest.fixture
def libvirt_domain(tmp_path):
    reason = libvirt_unavailable()
    if reason:
        pytest.skip(reason)
    with os_less_domain(tmp_path) as made:
        yield made


def test_discovery_through_real_libvirtd(admin_user, tmp_path, libvirt_domain):
    name, image = libvirt_domain
    host = libvirt_host(tmp_path, uri=URI)
    info = services.test_connection(host, by=admin_user)
    assert info.libvirt_version and info.hypervisor_version

    result = services.discover_host(host, by=admin_user)
    ours = [e for e in result.new if e.domain == name]
    assert len(ours) == 1, result
    vm = ours[0].vm
    assert vm.name == name and vm.power_state == "stopped"
    disk_row = vm.disks.get()
    assert (disk_row.lun, disk_row.target, disk_row.format) == (-1, "vda", "qcow2")
    assert disk_row.path == str(image) and disk_row.size == 64 << 20

    virsh("undefine", name, "--checkpoints-metadata")
    result = services.discover_host(host, by=admin_user)
    assert vm.pk in [e.vm.pk for e in result.vanished]
    vm.refresh_from_db()
    assert vm.vanished_at is not None


def test_a_bad_uri_names_libvirts_error(admin_user, tmp_path):
    reason = libvirt_unavailable()
    if reason:
        pytest.skip(reason)
    host = libvirt_host(tmp_path, uri="qemu+tcp://127.0.0.1:1/system")
    with pytest.raises(ValidationError) as exc:
        services.test_connection(host, by=admin_user)
    message = exc.value.message_dict["libvirt_uri"][0]
    assert message.startswith("Cannot connect: ")
    assert AuditEvent.objects.get(action="host.test_connection").after["ok"] is False
