"""A real slapd per test (a fresh small directory: cheap to start, nothing leaks between tests),
and the `corp-ldap` realm that points at it."""

import pytest

from identity.models import Directory, DirectoryKind

# Chromium for the OIDC flow, with the failure screenshot's report hook.
from tests.browser.conftest import browser, page, pytest_runtest_makereport  # noqa: F401
from tests.identity import servers
from tests.identity.servers import BIND_DN, SLAPD
from tests.pages.conftest import runserver  # noqa: F401  (the pages over real HTTP)


@pytest.fixture
def ldap_server(tmp_path):
    if not SLAPD.exists():
        pytest.skip("needs OpenLDAP's slapd (apt install slapd ldap-utils)")
    with servers.slapd(tmp_path / "slapd") as server:
        yield server


@pytest.fixture
def realm(db, ldap_server, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_TEST_LDAP_BIND", servers.BIND_PW)
    return Directory.objects.create(
        name="corp-ldap",
        kind=DirectoryKind.LDAP,
        title="Corp directory",
        server_uri=ldap_server.uri,
        bind_dn=BIND_DN,
        secret_source="env",
        secret_name="LIFEBOAT_TEST_LDAP_BIND",
        user_base=f"ou=people,{servers.BASE}",
        user_filter="(uid=%(user)s)",
        group_base=f"ou=groups,{servers.BASE}",
        group_type="group_of_names",
        disabled_filter="(employeeType=disabled)",
    )
