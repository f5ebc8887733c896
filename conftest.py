"""Personas that encode the access model, shared by every test.

One vault `prod` with an owner, a contributor, an operator and a reader; a guard approver
(MUA) who is not a member; an outsider; and a site administrator. The vault has a linked host
with a protected VM, one recovery point and one job, so every page and endpoint has something
to show.
"""

import importlib
import os

import pytest


class _Lazy:
    """Imports a module on first use, so engine and policy tests run without Django
    (`pytest engine/tests -p no:django`)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._name), attr)


f = _Lazy("tests.factories")
vault_models = _Lazy("vaults.models")


@pytest.fixture(autouse=True)
def _isolated_data_dir(request, tmp_path):
    if not request.config.pluginmanager.hasplugin("django"):
        return
    settings = request.getfixturevalue("settings")
    # Personas are created per test; a fast hasher keeps that cheap (login still works).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LIFEBOAT = {
        **settings.LIFEBOAT,
        "VAULT_STORE_ROOT": tmp_path / "vault-stores",
        "MASTER_KEY_FILE": tmp_path / "master.key",
        "DEMO_ROOT": tmp_path / "demo",
        "DRILL_SCRATCH_ROOT": tmp_path / "drill-scratch",
    }
    # Installed as `manage.py bootstrap` installs it: nothing creates the key on demand.
    importlib.import_module("engine").create_platform_kek(settings.LIFEBOAT["MASTER_KEY_FILE"])


@pytest.fixture
def admin_user(db):
    return f.make_user("admin", superuser=True)


@pytest.fixture
def owner(db):
    return f.make_user("owner")


@pytest.fixture
def contributor(db):
    return f.make_user("contributor")


@pytest.fixture
def operator(db):
    return f.make_user("operator")


@pytest.fixture
def reader(db):
    return f.make_user("reader")


@pytest.fixture
def approver(db):
    return f.make_user("approver")


@pytest.fixture
def outsider(db):
    return f.make_user("outsider")


@pytest.fixture
def host(db, tmp_path):
    return f.make_host(tmp_path / "host1", name="host1")


@pytest.fixture
def vault(admin_user, owner, contributor, operator, reader, approver, host):
    vault = f.make_vault("prod", owner=admin_user)
    f.add_member(vault, owner, vault_models.Role.OWNER)
    f.add_member(vault, contributor, vault_models.Role.CONTRIBUTOR)
    f.add_member(vault, operator, vault_models.Role.OPERATOR)
    f.add_member(vault, reader, vault_models.Role.READER)
    vault_models.GuardApprover.objects.create(vault=vault, user=approver, assigned_by=admin_user)
    vault.linked_hosts.add(host)
    return vault


@pytest.fixture
def vm(host):
    return f.make_vm(host, name="web-01", disks=((-1, 4 << 20), (0, 2 << 20)))


@pytest.fixture
def item(vault, vm):
    return f.make_protected_item(vault, vm)


@pytest.fixture
def rp(item):
    return f.make_rp(item)


@pytest.fixture
def job(vault, item):
    return f.make_job(vault, item)


@pytest.fixture
def personas(admin_user, owner, contributor, operator, reader, approver, outsider):
    return {
        "admin": admin_user,
        "owner": owner,
        "contributor": contributor,
        "operator": operator,
        "reader": reader,
        "approver": approver,
        "outsider": outsider,
    }


def require_all() -> bool:
    """Under LIFEBOAT_REQUIRE_ALL=1 (CI) a missing tool fails instead of skipping."""
    return os.environ.get("LIFEBOAT_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # In CI every tool is installed, so a skip means a test silently did not run: fail it.
    outcome = yield
    report = outcome.get_result()
    if require_all() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under LIFEBOAT_REQUIRE_ALL=1: {report.longrepr}"


# Tests that talk to this machine's libvirtd run on one xdist worker (`--dist loadgroup`), so
# a test may restart the daemon without breaking another one mid-call.
LIBVIRT_TESTS = (
    "tests/kvm/",
    "tests/test_discovery.py",
    "tests/api/test_hosts_discovery.py",
    "tests/pages/test_host_discovery.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(LIBVIRT_TESTS):
            item.add_marker(pytest.mark.xdist_group("libvirt"))
