"""Hostile input answers 4xx naming what is wrong, never 500: bodies nested without end,
integers no database column holds, and NUL characters (which PostgreSQL text and every
file-system call refuse) in bodies, parameters, addresses and forms."""

import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from vaults.models import Vault

BIG = 2**70
# The parser's bound (portal.api.parsers.MAX_DEPTH); the API's own bodies nest 4 levels at most.
MAX_DEPTH = 32


def raw(client, method, url, text: str):
    return getattr(client, method)(url, data=text, content_type="application/json")


def nested(depth: int, inner: str = "1") -> str:
    return '{"name": ' + "[" * depth + inner + "]" * depth + "}"


# -- nesting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000, 100_000])
def test_a_body_nested_too_deeply_is_a_400_even_before_login(depth):
    r = raw(APIClient(), "post", reverse("api-token-obtain"), nested(depth))
    assert r.status_code == 400, r.content
    assert f"{MAX_DEPTH} levels" in r.json()["detail"]


def test_a_body_nested_too_deeply_is_a_400_on_a_signed_in_endpoint(api, vault, admin_user):
    for url, method in (("/api/v1/vaults/", "post"), ("/api/v1/vaults/prod/", "patch")):
        r = raw(api(admin_user), method, url, "[" * 5000 + "]" * 5000)
        assert r.status_code == 400, (url, r.content)


def test_nesting_within_the_bound_reaches_the_serializers(api, vault, admin_user):
    r = raw(api(admin_user), "post", "/api/v1/vaults/", nested(MAX_DEPTH - 1))
    assert r.status_code == 400
    assert "name" in r.json()


# -- integers -----------------------------------------------------------------------------------


def test_an_id_beyond_64_bits_is_a_400_naming_the_field(api, vault, admin_user):
    r = api(admin_user).post("/api/v1/vaults/", {"name": "lab", "linked_hosts": [BIG]})
    assert r.status_code == 400, r.content
    assert list(r.json()) == ["linked_hosts.0"]
    assert not Vault.objects.filter(name="lab").exists()


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 10**30])
def test_every_integer_beyond_64_bits_is_refused_where_it_stands(api, vm, admin_user, value):
    r = api(admin_user).patch(f"/api/v1/vms/{vm.pk}/", {"extension": {"script_timeout": value}})
    assert r.status_code == 400
    assert list(r.json()) == ["extension.script_timeout"]


def test_the_largest_64_bit_integers_still_reach_the_serializers(api, vault, admin_user):
    r = api(admin_user).post("/api/v1/vaults/", {"name": "lab", "linked_hosts": [2**63 - 1]})
    assert r.status_code == 400
    assert r.json() == {"linked_hosts": [f"No host with id {2**63 - 1}."]}


# -- NUL ----------------------------------------------------------------------------------------


def restore_url(rp) -> str:
    return reverse(
        "api-recovery-point-restore",
        kwargs={"vault_name": "prod", "vm_name": "web-01", "rp_id": rp.pk},
    )


def test_nul_in_a_restore_target_path_is_a_400_naming_it(api, rp, host, operator):
    path = host.allowed_roots[1] + "/a\x00b"
    r = api(operator).post(
        restore_url(rp), {"kind": "restore_disks", "target": {"host": host.pk, "path": path}}
    )
    assert r.status_code == 400, r.content
    assert list(r.json()) == ["target.path"]
    assert "NUL" in r.json()["target.path"][0]


def test_nul_in_a_key_of_a_body_is_a_400(api, vault, admin_user):
    r = api(admin_user).patch("/api/v1/vaults/prod/", {"mua\x00": True})
    assert r.status_code == 400
    assert "NUL" in json.dumps(r.json())


@pytest.mark.parametrize(
    "url, param",
    [
        ("/api/v1/vaults/prod/alerts/?kind=a%00b", "kind"),
        ("/api/v1/audit/?actor=a%00b", "actor"),
        ("/api/v1/vaults/prod/audit/export/?action=x%00", "action"),
        ("/api/v1/vaults/prod/jobs/?vm=web%00", "vm"),
    ],
)
def test_nul_in_a_query_parameter_is_a_400_naming_it(api, vault, admin_user, url, param):
    r = api(admin_user).get(url)
    assert r.status_code == 400, r.content
    assert list(r.json()) == [param]


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/vaults/a%00b/",
        "/api/v1/keys/a%00b/",
        "/api/v1/vaults/prod/protected-items/a%00b/",
        "/vaults/a%00b/",
        "/vaults/prod/jobs/?vm=a%00b",
    ],
)
def test_nul_in_the_address_is_a_400(client, vault, admin_user, url):
    client.force_login(admin_user)
    r = client.get(url)
    assert r.status_code == 400, r.content


def test_nul_in_a_cookie_is_a_400(client, vault, admin_user):
    client.cookies["sessionid"] = "abcdefgh\x00ijkl"
    for url in ("/vaults/", "/api/v1/vaults/"):
        r = client.get(url)
        assert r.status_code == 400, r.content
        assert "Cookies" in r.content.decode()


def test_nul_in_a_page_form_is_a_400(client, admin_user, tmp_path):
    key = tmp_path / "k1.key"
    key.write_bytes(b"\x01" * 32)
    client.force_login(admin_user)
    client.post("/keys/", {"name": "k1", "path": str(key)})
    r = client.post(reverse("key-rotate", args=["k1"]), {"path": str(tmp_path / "k\x00")})
    assert r.status_code == 400
    assert "path" in r.content.decode()
