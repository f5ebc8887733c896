"""Every security endpoint × every persona (DESIGN §2), in the shape of the project's permission
matrix (tests/test_permission_matrix.py), so its rows can be merged there as they are.

Columns: admin, owner, contributor, operator, reader, approver (guard approver of `prod`, not a
member), outsider, anon.
"""

from datetime import timedelta

import pytest
from django.urls import get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from security.models import Alert, Approval, CustomerKey

PERSONAS = ("admin", "owner", "contributor", "operator", "reader", "approver", "outsider", "anon")

SECURITY_MATRIX = [
    ("api-approval-list", "GET", {"vault_name": "prod"}, None, "200 200 200 403 403 200 404 401"),
    (
        "api-approval-detail",
        "GET",
        {"vault_name": "prod", "approval_id": "{approval}"},
        None,
        "200 200 200 403 403 200 404 401",
    ),
    # The request is the owner's: the owner may not decide it, the approver may.
    (
        "api-approval-approve",
        "POST",
        {"vault_name": "prod", "approval_id": "{approval}"},
        {},
        "403 403 403 403 403 200 404 401",
    ),
    (
        "api-approval-reject",
        "POST",
        {"vault_name": "prod", "approval_id": "{approval}"},
        {},
        "403 403 403 403 403 200 404 401",
    ),
    ("api-alert-list", "GET", {"vault_name": "prod"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-alert-detail",
        "GET",
        {"vault_name": "prod", "alert_id": "{alert}"},
        None,
        "200 200 200 200 200 404 404 401",
    ),
    (
        "api-alert-acknowledge",
        "POST",
        {"vault_name": "prod", "alert_id": "{alert}"},
        {},
        "200 200 200 200 403 404 404 401",
    ),
    (
        "api-alert-resolve",
        "POST",
        {"vault_name": "prod", "alert_id": "{alert}"},
        {},
        "200 200 200 403 403 404 404 401",
    ),
    ("api-alert-settings", "GET", {"vault_name": "prod"}, None, "200 200 200 200 200 404 404 401"),
    (
        "api-alert-settings",
        "PATCH",
        {"vault_name": "prod"},
        {"job_alerts": False},
        "200 200 200 403 403 404 404 401",
    ),
    ("api-alert-count", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-vault-audit-list",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 200 403 403 403 404 404 401",
    ),
    (
        "api-vault-audit-export",
        "GET",
        {"vault_name": "prod"},
        None,
        "200 200 403 403 403 404 404 401",
    ),
    ("api-audit-list", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    ("api-audit-export", "GET", {}, None, "200 403 403 403 403 403 403 401"),
    ("api-key-list", "GET", {}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-key-list",
        "POST",
        {},
        {"name": "k9", "path": "{key_file}"},
        "201 403 403 403 403 403 403 401",
    ),
    ("api-key-detail", "GET", {"key_name": "k1"}, None, "200 200 200 200 200 200 200 401"),
    (
        "api-key-detail",
        "PATCH",
        {"key_name": "k1"},
        {"enabled": False},
        "200 403 403 403 403 403 403 401",
    ),
    (
        "api-key-rotate",
        "POST",
        {"key_name": "k1"},
        {"path": "{key_file}"},
        "202 403 403 403 403 403 403 401",
    ),
]


@pytest.fixture
def scenario(vault, personas, item, tmp_path):
    from jobs import runner
    from jobs.models import Status
    from tests import factories as f

    now = timezone.now()
    approval = Approval.objects.create(
        vault=vault,
        operation="vault.update",
        summary="vault.update: disable soft delete",
        reasons=["disable soft delete"],
        params={"soft_delete_days": 31},
        requested_by=personas["owner"],
        requested_by_name="owner",
        expires_at=now + timedelta(hours=24),
    )
    job = f.make_job(vault, item, status=Status.IN_PROGRESS)
    runner.finish(job, Status.FAILED, code="x", message="boom")
    k1, k9 = tmp_path / "k1.key", tmp_path / "k9.key"
    k1.write_bytes(b"\x01" * 32)
    k9.write_bytes(b"\x02" * 32)
    from security.keys import fingerprint

    CustomerKey.objects.create(name="k1", path=str(k1), fingerprint=fingerprint(k1.read_bytes()))
    return {"approval": approval.pk, "alert": Alert.objects.get().pk, "key_file": str(k9)}


def _fill(value, names):
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return names[value[1:-1]]
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


@pytest.mark.parametrize("row", SECURITY_MATRIX, ids=[f"{r[0]}-{r[1]}" for r in SECURITY_MATRIX])
@pytest.mark.parametrize("persona", PERSONAS)
def test_matrix(row, persona, scenario, personas, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    name, method, kwargs, body, expected = row
    codes = dict(zip(PERSONAS, expected.split(), strict=True))
    client = APIClient()
    if persona != "anon":
        client.force_login(personas[persona])
    url = reverse(name, kwargs=_fill(kwargs, scenario))
    response = getattr(client, method.lower())(url, _fill(body, scenario), format="json")
    assert response.status_code == int(codes[persona]), (
        f"{persona} {method} {url}: {response.status_code}: {response.content[:300]!r}"
    )


def test_every_security_route_has_rows():
    import security.api.urls

    names = {p.name for p in security.api.urls.urlpatterns}
    assert names <= {r[0] for r in SECURITY_MATRIX}
    assert all(get_resolver().reverse_dict.getlist(n) for n in names)
