"""Consistency-hook details are for operators and above.

What a VM's hooks are (script paths, their parameters, freeze/thaw and probe commands) and
what they printed can name internal paths, hosts or secrets. Readers see that a hook failed,
in words of their own; operators, contributors and owners of the vault, and site
administrators, see the details. A VM's configuration shows to operators and above of a vault
that protects it (a reader of any vault linked to the host still sees the VM itself).
"""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse

from inventory.models import Disk, VirtualMachine
from jobs.backup_queue import backup_now
from tests import factories as f
from tests.api.conftest import OS_FILES, make_ext4, needs_mkfs
from vaults.models import ItemState, Role

SECRET = "SECRET-HOOK-OUTPUT-4711"
PARAM = "PARAM-MARK-4711"
FREEZE = "FREEZE-MARK-4711"
PROBE = "PROBE-MARK-4711"
HOOK_FIELDS = {
    "pre_script",
    "pre_script_params",
    "post_script",
    "post_script_params",
    "freeze_command",
    "thaw_command",
}


def leaks(text: str, *markers: str) -> list[str]:
    return [m for m in (SECRET, PARAM, FREEZE, PROBE, *markers) if m in text]


def page(user, url) -> str:
    client = Client()
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def api_text(api, user, url) -> str:
    response = api(user).get(url)
    assert response.status_code == 200, response.content
    return json.dumps(response.data)


def vm_data(api, user, vm) -> dict:
    r = api(user).get(reverse("api-vm-list"))
    assert r.status_code == 200
    listed = next(v for v in r.data["results"] if v["id"] == vm.pk)
    detail = api(user).get(reverse("api-vm-detail", args=[vm.pk])).data
    assert listed == detail
    return detail


# -- a real backup whose hooks fail loudly -----------------------------------------------------


def write_script(directory: Path, name: str, body: str) -> Path:
    """A real hook script: 0700, in a 0700 directory (the extension refuses anything looser)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o700)
    return path


@pytest.fixture
def hooked(vault, host, tmp_path, admin_user, run_job):
    """A running VM `hooked-01` protected in `prod` whose pre-script prints a secret and fails:
    one backup completed with warnings (its hook log kept), one failed on the pre-script."""
    os.chmod(tmp_path, 0o700)
    pre = write_script(
        tmp_path / "hooks", "pre.sh", f'echo "{SECRET} out"\necho "{SECRET} err" >&2\nexit 3\n'
    )
    image = make_ext4(Path(host.allowed_roots[0]) / "hooked-os.img", OS_FILES)
    vm = VirtualMachine.objects.create(
        name="hooked-01",
        host=host,
        power_state="running",
        power_probe_command=f"echo running # {PROBE}",
        pre_script=str(pre),
        pre_script_params=["--label", PARAM],
        freeze_command=f"echo {FREEZE}",
        thaw_command="true",
        continue_on_failure=True,
    )
    Disk.objects.create(vm=vm, lun=-1, path=str(image), size=image.stat().st_size)
    item = f.make_protected_item(vault, vm)
    warned = run_job(backup_now(item, by=admin_user).pk)
    assert warned.status == "completed_with_warnings", (warned.error_code, warned.error_message)
    assert SECRET in warned.warnings[0]["message"] and FREEZE in str(warned.result["hook_log"])
    VirtualMachine.objects.filter(pk=vm.pk).update(continue_on_failure=False)
    failed = run_job(backup_now(item, by=admin_user).pk)
    assert (failed.status, failed.error_code) == ("failed", "pre_script_failed")
    assert SECRET in failed.error_message
    return SimpleNamespace(vm=vm, item=item, warned=warned, failed=failed, pre=str(pre))


def job_urls(job):
    return (
        reverse("job-detail", args=["prod", job.pk]),
        reverse("api-job-detail", args=["prod", job.pk]),
    )


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_readers_see_that_hooks_failed_but_not_what_they_are_or_said(api, reader, hooked):
    for job in (hooked.warned, hooked.failed):
        page_url, api_url = job_urls(job)
        html = page(reader, page_url)
        assert leaks(html, hooked.pre) == [], html
        # The code in plain words (portal.words), and the reader's message.
        assert "Pre-script failed" in html and "The pre-script failed." in html
        assert 'id="hook-log"' not in html
        assert leaks(api_text(api, reader, api_url), hooked.pre) == []
    warnings = api(reader).get(job_urls(hooked.warned)[1]).data["warnings"]
    assert warnings[0]["code"] == "pre_script_failed"
    assert warnings[0]["message"].startswith("The pre-script failed.")
    failed = api(reader).get(job_urls(hooked.failed)[1]).data
    assert failed["error_message"].startswith("The pre-script failed.")
    jobs = api_text(api, reader, reverse("api-job-list", args=["prod"]))
    assert leaks(jobs, hooked.pre) == []

    data = vm_data(api, reader, hooked.vm)
    assert leaks(json.dumps(data), hooked.pre) == []
    assert HOOK_FIELDS.isdisjoint(data["extension"]) and "power_probe_command" not in data
    assert data["extension"]["state"] == "installed"  # what the VM is, not how

    assert leaks(page(reader, reverse("item-detail", args=["prod", "hooked-01"])), hooked.pre) == []
    # The failed backup's alert is read by every member.
    assert leaks(page(reader, reverse("alert-list", args=["prod"])), hooked.pre) == []
    alerts = api_text(api, reader, reverse("api-alert-list", args=["prod"]))
    assert "pre_script_failed" in alerts and leaks(alerts, hooked.pre) == []


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_operators_see_the_hooks_and_their_output(api, operator, admin_user, hooked):
    warned_page, warned_api = job_urls(hooked.warned)
    html = page(operator, warned_page)
    assert 'id="hook-log"' in html and f"{SECRET} err" in html and FREEZE in html
    assert hooked.pre in html
    assert SECRET in api(operator).get(warned_api).data["warnings"][0]["message"]
    failed_page, failed_api = job_urls(hooked.failed)
    assert SECRET in page(operator, failed_page)
    assert SECRET in api(operator).get(failed_api).data["error_message"]
    for user in (operator, admin_user):
        data = vm_data(api, user, hooked.vm)
        assert data["extension"]["pre_script"] == hooked.pre
        assert data["extension"]["pre_script_params"] == ["--label", PARAM]
        assert FREEZE in data["extension"]["freeze_command"]
        assert PROBE in data["power_probe_command"]


# -- whose VM configuration -------------------------------------------------------------------


@pytest.fixture
def hook_config():
    return {
        "pre_script": "/opt/hooks/pre.sh",
        "pre_script_params": [PARAM],
        "freeze_command": f"fsfreeze -f / # {FREEZE}",
        "thaw_command": "fsfreeze -u /",
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    "persona, shown",
    [
        ("admin", True),
        ("owner", True),
        ("contributor", True),
        ("operator", True),
        ("reader", False),
    ],
)
def test_a_protected_vms_hooks_show_to_operators_and_above(
    api, personas, vault, host, hook_config, persona, shown
):
    vm = f.make_vm(host, "guarded-01", **hook_config)
    f.make_protected_item(vault, vm)
    data = vm_data(api, personas[persona], vm)
    assert (data["extension"].get("pre_script") == "/opt/hooks/pre.sh") is shown
    assert bool(leaks(json.dumps(data))) is shown


@pytest.mark.django_db
def test_hooks_of_vms_not_protected_in_the_users_vault_stay_hidden(
    api, vault, host, hook_config, owner, operator, admin_user
):
    # All on the host linked to `prod`: one unprotected, one protected in a vault the
    # operator is not in, one whose protection in `prod` is in the recycle bin.
    loose = f.make_vm(host, "loose-01", **hook_config)
    elsewhere = f.make_vm(host, "elsewhere-01", **hook_config)
    f.make_protected_item(f.make_vault("other", owner=admin_user), elsewhere)
    binned = f.make_vm(host, "binned-01", **hook_config)
    f.make_protected_item(vault, binned, state=ItemState.SOFT_DELETED)
    for vm in (loose, elsewhere, binned):
        for user in (owner, operator):
            assert leaks(json.dumps(vm_data(api, user, vm))) == [], (vm.name, user.username)
        assert vm_data(api, admin_user, vm)["extension"]["pre_script"] == "/opt/hooks/pre.sh"


@pytest.mark.django_db
def test_the_vm_list_decides_per_vm_without_a_query_per_row(
    api, vault, host, hook_config, operator, django_assert_max_num_queries
):
    for n in range(3):
        f.make_protected_item(vault, f.make_vm(host, f"shown-{n}", **hook_config))
        f.make_vm(host, f"hidden-{n}", **hook_config)
    with django_assert_max_num_queries(8):
        results = api(operator).get(reverse("api-vm-list")).data["results"]
    shown = {v["name"] for v in results if "pre_script" in v["extension"]}
    assert shown == {"shown-0", "shown-1", "shown-2"}


@pytest.mark.django_db
def test_the_extension_message_is_a_detail_too(api, vault, item, reader, operator):
    vm = item.vm
    vm.extension_state = "failed"
    vm.extension_code = "insecure_permissions"
    vm.extension_message = f"pre-script: directory /srv/{SECRET} is writable by group or others"
    vm.save()
    url = reverse("item-detail", args=["prod", vm.name])
    html = page(reader, url)
    assert "Insecure permissions" in html and leaks(html) == []
    assert SECRET in page(operator, url)
    assert leaks(json.dumps(vm_data(api, reader, vm))) == []
    assert vm_data(api, reader, vm)["extension"]["code"] == "insecure_permissions"
    assert SECRET in vm_data(api, operator, vm)["extension"]["message"]


@pytest.mark.django_db
def test_a_thaw_failure_stays_loud_for_readers(vault, item, reader):
    job = f.make_job(
        vault,
        item,
        status="completed_with_warnings",
        warnings=[{"code": "thaw_failed", "message": f"THAW FAILED: `{FREEZE}` exited with 1"}],
    )
    html = page(reader, reverse("job-detail", args=["prod", job.pk]))
    assert 'id="loud-warnings"' in html and "Thaw failed" in html and leaks(html) == []


def test_the_hook_action_is_an_operator_action():
    from vaults import access

    assert access.ACTIONS["view_hook_details"] == Role.OPERATOR
