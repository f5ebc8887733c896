import pytest
from django.urls import reverse

from inventory.models import VirtualMachine
from tests import factories as f
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def images(host):
    root = host.allowed_roots[0]
    paths = []
    for name, size in (("new-os.img", 3 << 20), ("new-data.img", 1 << 20)):
        path = f"{root}/{name}"
        with open(path, "wb") as fh:
            fh.truncate(size)
        paths.append(path)
    return paths


def vm_data(host, disks, **overrides):
    base = {
        "name": "app-01",
        "host": host.pk,
        "os_type": "linux",
        "power_state": "running",
        "script_timeout": "30",
        "script_retries": "0",
        "continue_on_failure": "on",
        "freeze_enabled": "on",
        "freeze_timeout": "60",
        "disks": disks,
    }
    base.update(overrides)
    return base


def test_admin_sees_vms(login, admin_user, item):
    response = login(admin_user).get(reverse("vm-list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "web-01" in html and "host1" in html and "prod" in html


def test_admin_registers_a_vm_with_disks(login, admin_user, host, images):
    os_img, data_img = images
    response = login(admin_user).post(
        reverse("vm-create"),
        vm_data(host, f"-1 {os_img}\n0 {data_img}", pre_script_params="--fast\n--quiet"),
    )
    assert response.status_code == 302
    vm = VirtualMachine.objects.get(name="app-01")
    assert [(d.lun, d.size) for d in vm.disks.order_by("lun")] == [(-1, 3 << 20), (0, 1 << 20)]
    assert vm.pre_script_params == ["--fast", "--quiet"]
    assert AuditEvent.objects.filter(action="vm.create").exists()


@pytest.mark.parametrize(
    "disks, message",
    [
        ("0 {data}", "exactly one OS disk"),
        ("-1 /etc/passwd", "outside host host1's allowed roots"),
        ("-1 {root}/missing.img", "not an existing file"),
        ("-1 {os}\n0 {data}\n0 {data}", "more than once"),
        ("x {os}", "start with the LUN"),
        ("-1 {root}/../../escape.img", "outside"),
    ],
)
def test_it_checks_disk_lines(login, admin_user, host, images, disks, message):
    text = disks.format(os=images[0], data=images[1], root=host.allowed_roots[0])
    response = login(admin_user).post(reverse("vm-create"), vm_data(host, text))
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["disks"])
    assert not VirtualMachine.objects.filter(name="app-01").exists()


def test_it_refuses_a_relative_script_path(login, admin_user, host, images):
    response = login(admin_user).post(
        reverse("vm-create"), vm_data(host, f"-1 {images[0]}", pre_script="pre.sh")
    )
    assert "absolute path" in str(response.context["form"].errors["pre_script"])
    assert not VirtualMachine.objects.filter(name="app-01").exists()


def test_it_refuses_a_duplicate_name(login, admin_user, vm, images):
    response = login(admin_user).post(
        reverse("vm-create"), vm_data(vm.host, f"-1 {images[0]}", name="web-01")
    )
    assert "name" in response.context["form"].errors


def test_vm_detail_shows_extension_state(login, admin_user, vm):
    vm.extension_state = "failed"
    vm.extension_code = "pre_script_not_found"
    vm.extension_message = "/opt/pre.sh is missing"
    vm.save()
    response = login(admin_user).get(reverse("vm-detail", args=["web-01"]))
    html = response.content.decode()
    for text in ("Failed", "Pre-script not found", "/opt/pre.sh is missing", "web-01-lun0.img"):
        assert text in html


def test_admin_edits_a_vm_and_its_disks(login, admin_user, vm, images):
    url = reverse("vm-edit", args=["web-01"])
    client = login(admin_user)
    initial = client.get(url).context["form"].initial
    assert "-1 " in initial["disks"]
    os_path = vm.disks.get(lun=-1).path
    response = client.post(
        url, vm_data(vm.host, f"-1 {os_path}\n1 {images[1]}", name="web-01", power_state="stopped")
    )
    assert response.status_code == 302, response.context["form"].errors
    vm.refresh_from_db()
    assert vm.power_state == "stopped"
    assert sorted(vm.disks.values_list("lun", flat=True)) == [-1, 1]


@pytest.mark.parametrize("persona", ["owner", "operator", "outsider"])
def test_non_admins_get_403(login, personas, persona, vm):
    client = login(personas[persona])
    for name, args in (
        ("vm-list", []),
        ("vm-create", []),
        ("vm-detail", ["web-01"]),
        ("vm-edit", ["web-01"]),
    ):
        assert client.get(reverse(name, args=args)).status_code == 403


def test_it_keeps_its_query_budget(assert_query_budget, admin_user, vault, host):
    def make_rows(n):
        for _ in range(n):
            f.make_protected_item(vault, f.make_vm(host))

    assert_query_budget(admin_user, reverse("vm-list"), make_rows, 5, marker="/inventory/vms/vm")
