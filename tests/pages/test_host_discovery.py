"""libvirt hosts on the pages: the form's connector and URI, the host page's Test connection and
Discover VMs (htmx fragment or whole page), and what VMs show of discovery."""

import re

import pytest
from django.urls import reverse

from engine.connectors.spec import DomainDisk, DomainInfo
from inventory import discovery
from inventory.models import Host, VirtualMachine
from tests import factories as f
from tests.libvirt_domains import URI, libvirt_unavailable, os_less_domain
from tests.pages.conftest import HTMX

pytestmark = pytest.mark.django_db


def kvm_host(tmp_path, name="kvm1", uri="qemu:///system"):
    return f.make_host(tmp_path / name, name=name, connector="libvirt", libvirt_uri=uri)


def dom(name, *targets, uuid):
    disks = tuple(
        DomainDisk(t, f"/var/lib/libvirt/images/{name}-{t}.qcow2", "qcow2", 1 << 30, i == 0)
        for i, t in enumerate(targets)
    )
    return DomainInfo(name, uuid, "running", disks, "<domain/>")


WEB = "11111111-0000-4000-8000-000000000001"
DB = "11111111-0000-4000-8000-000000000002"


def test_admin_registers_a_libvirt_host(login, admin_user, tmp_path):
    (tmp_path / "d").mkdir()
    form = {
        "name": "kvm2",
        "connector": "libvirt",
        "libvirt_uri": "qemu+ssh://root@hv2/system",
        "snapshot_root": str(tmp_path / "s"),
        "allowed_roots": str(tmp_path / "d"),
    }
    response = login(admin_user).post(reverse("host-create"), form)
    assert response.status_code == 302
    assert response["Location"] == reverse("host-detail", args=["kvm2"])
    host = Host.objects.get(name="kvm2")
    assert (host.connector, host.libvirt_uri) == ("libvirt", "qemu+ssh://root@hv2/system")

    response = login(admin_user).post(
        reverse("host-create"), {**form, "name": "kvm3", "libvirt_uri": "qemu+ssh:///system"}
    )
    assert response.status_code == 200
    assert "needs a host name" in str(response.context["form"].errors["libvirt_uri"])
    assert not Host.objects.filter(name="kvm3").exists()


def test_the_edit_form_shows_the_connector(login, admin_user, tmp_path):
    host = kvm_host(tmp_path)
    response = login(admin_user).get(reverse("host-edit", args=[host.name]))
    form = response.context["form"]
    assert form.initial["connector"] == "libvirt"
    assert form.initial["libvirt_uri"] == "qemu:///system"


def test_only_libvirt_hosts_offer_discovery(login, admin_user, host, tmp_path):
    kvm = kvm_host(tmp_path)
    client = login(admin_user)
    page = client.get(reverse("host-detail", args=[kvm.name])).content.decode()
    assert 'id="discover-vms"' in page and 'id="test-connection"' in page
    assert f'action="{reverse("host-discover", args=[kvm.name])}"' in page
    page = client.get(reverse("host-detail", args=[host.name])).content.decode()
    assert 'id="discover-vms"' not in page


def test_discovery_on_an_image_host_says_why_not(login, admin_user, host):
    client = login(admin_user)
    response = client.post(reverse("host-discover", args=[host.name]), **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="discovery">')
    assert "only libvirt hosts support discovery" in body
    response = client.post(reverse("host-test-connection", args=[host.name]))
    assert response.status_code == 200
    assert "<html" in response.content.decode() and "only libvirt hosts" in (
        response.content.decode()
    )


def test_get_is_not_allowed_on_actions(login, admin_user, tmp_path):
    kvm = kvm_host(tmp_path)
    assert login(admin_user).get(reverse("host-discover", args=[kvm.name])).status_code == 405


def test_vanished_vms_and_changes_are_shown(login, admin_user, tmp_path):
    host = kvm_host(tmp_path)
    discovery.apply_discovery(
        host, [dom("web", "vda", "vdb", uuid=WEB), dom("db", "vda", uuid=DB)], by=admin_user
    )
    discovery.apply_discovery(host, [dom("web", "vda", uuid=WEB)], by=admin_user)
    client = login(admin_user)

    page = client.get(reverse("vm-list")).content.decode()
    assert page.count("Vanished from host") == 1
    assert "disk_removed" in page and "vanished" in page

    page = client.get(reverse("vm-detail", args=["db"])).content.decode()
    assert 'id="vm-vanished"' in page and DB in page
    page = client.get(reverse("vm-detail", args=["web"])).content.decode()
    assert 'id="discovery-changes"' in page and "disk_removed" in page
    assert "<td>vda</td>" in page and "<td>qcow2</td>" in page

    page = client.get(reverse("host-detail", args=[host.name])).content.decode()
    assert 'id="host-vms"' in page and "Vanished from host" in page


def test_host_page_queries_stay_flat(assert_query_budget, admin_user, tmp_path):
    host = kvm_host(tmp_path)
    known: list[DomainInfo] = []

    def add(n):
        start = len(known)
        known.extend(
            dom(f"d{i}", "vda", "vdb", uuid=f"22222222-0000-4000-8000-{i:012d}")
            for i in range(start, start + n)
        )
        discovery.apply_discovery(host, known, by=admin_user)

    assert_query_budget(
        admin_user, reverse("host-detail", args=[host.name]), add, 12, marker="/inventory/vms/d"
    )


# -- real libvirtd ------------------------------------------------------------------------------


@pytest.fixture
def libvirt_domain(tmp_path):
    reason = libvirt_unavailable()
    if reason:
        pytest.skip(reason)
    with os_less_domain(tmp_path) as made:
        yield made


def test_buttons_through_real_libvirtd(login, admin_user, tmp_path, libvirt_domain):
    name, image = libvirt_domain
    host = kvm_host(tmp_path, uri=URI)
    client = login(admin_user)

    response = client.post(reverse("host-test-connection", args=[host.name]), **HTMX)
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="connection">')
    assert "Connected" in body and re.search(r"<dt>libvirt</dt><dd>\d+\.\d+", body)

    # Plain form: the whole page with the result table.
    response = client.post(reverse("host-discover", args=[host.name]))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="discovery-result"' in body and name in body and str(image) in body
    assert VirtualMachine.objects.filter(name=name, host=host).exists()


def test_a_failed_connection_shows_libvirts_message(login, admin_user, tmp_path):
    reason = libvirt_unavailable()
    if reason:
        pytest.skip(reason)
    host = kvm_host(tmp_path, uri="qemu+tcp://127.0.0.1:1/system")
    response = login(admin_user).post(reverse("host-test-connection", args=[host.name]), **HTMX)
    body = response.content.decode()
    assert 'id="connection-error"' in body and "Cannot connect: " in body
