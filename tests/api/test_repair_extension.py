from django.urls import reverse

from inventory.models import VirtualMachine
from tests import factories as f
from vaults.models import AuditEvent


def url(vm):
    return reverse("api-vm-repair-extension", args=[vm.pk])


def broken(vm):
    VirtualMachine.objects.filter(pk=vm.pk).update(
        extension_state="failed", extension_code="pre_script_not_found", extension_message="gone"
    )
    return vm


def test_operator_of_the_protecting_vault_repairs_the_extension(api, item, vm, operator):
    r = api(operator).post(url(broken(vm)))
    assert r.status_code == 200, r.data
    assert r.data["id"] == vm.pk
    assert r.data["extension"]["state"] == "not_installed" and r.data["extension"]["code"] is None
    vm.refresh_from_db()
    assert vm.extension_state == "not_installed" and vm.extension_code == ""
    assert AuditEvent.objects.filter(actor=operator, object_id=str(vm.pk)).exists()


def test_reader_gets_403(api, item, vm, reader):
    assert api(reader).post(url(broken(vm))).status_code == 403
    vm.refresh_from_db()
    assert vm.extension_state == "failed"


def test_outsider_gets_404(api, item, vm, outsider):
    assert api(outsider).post(url(broken(vm))).status_code == 404


def test_only_site_admins_repair_an_unprotected_vm(api, vault, host, operator, admin_user):
    vm = broken(f.make_vm(host, name="spare-01"))
    # The operator sees the VM (its host is linked to their vault) but no vault protects it.
    assert api(operator).get(reverse("api-vm-detail", args=[vm.pk])).status_code == 200
    assert api(operator).post(url(vm)).status_code == 403
    r = api(admin_user).post(url(vm))
    assert r.status_code == 200 and r.data["extension"]["state"] == "not_installed"


def test_it_answers_405_to_get(api, item, vm, operator):
    assert api(operator).get(url(vm)).status_code == 405
