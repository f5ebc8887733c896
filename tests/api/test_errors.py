"""The error shape and the input rules shared by every endpoint."""

from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from portal.api.exceptions import django_errors


def test_it_serves_the_openapi_schema(api, reader):
    r = api(reader).get("/api/schema/")
    assert r.status_code == 200
    assert b"/api/v1/vaults/{vault_name}/policies/" in r.content


def test_it_serves_the_docs_page(api, reader):
    assert api(reader).get("/api/docs/").status_code == 200


def test_it_answers_400_with_detail_to_malformed_json(api, vault, admin_user):
    r = api(admin_user).post(
        "/api/v1/vaults/", data='{"name": "x",', content_type="application/json"
    )
    assert r.status_code == 400
    assert "JSON parse error" in r.data["detail"]


def test_it_answers_400_to_a_json_array_body(api, vault, admin_user):
    r = api(admin_user).post("/api/v1/vaults/", data=["x"])
    assert r.status_code == 400
    assert r.data == {"non_field_errors": ["Must be a JSON object."]}


def test_it_answers_415_to_form_data(vault, admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    r = client.post("/api/v1/vaults/", {"name": "lab"}, format="multipart")
    assert r.status_code == 415


def test_it_names_each_unknown_field(api, vault, admin_user):
    r = api(admin_user).patch("/api/v1/vaults/prod/", {"colour": "red", "size": 1})
    assert r.status_code == 400
    assert r.data == {"colour": ["Unknown field."], "size": ["Unknown field."]}


def test_it_names_fields_of_the_wrong_type(api, vault, admin_user):
    r = api(admin_user).patch(
        "/api/v1/vaults/prod/",
        {"soft_delete_days": "30", "mua_enabled": "yes", "store_location": 5},
    )
    assert r.status_code == 400
    assert set(r.data) == {"soft_delete_days", "mua_enabled", "store_location"}


def test_it_refuses_a_changed_read_only_field(api, vault, owner):
    r = api(owner).patch("/api/v1/vaults/prod/", {"name": "other"})
    assert r.status_code == 400 and r.data == {"name": ["This field is read-only."]}


def test_it_turns_a_django_field_error_into_field_keys():
    exc = ValidationError({"schedule.time": ["Bad."], "name": "Taken."})
    assert django_errors(exc) == {"schedule.time": ["Bad."], "name": ["Taken."]}


def test_it_turns_a_lone_detail_or_non_field_error_into_detail():
    assert django_errors(ValidationError({"detail": "Do X first."})) == {"detail": "Do X first."}
    assert django_errors(ValidationError("Nope.")) == {"detail": "Nope."}
    assert django_errors(ValidationError({"__all__": ["Both."]})) == {"detail": "Both."}


WEIRD = [
    None,
    [],
    "text",
    7,
    {"name": {"a": 1}},
    {"name": None, "host": None, "disks": None, "policy": None, "vm": None},
    {"linked_hosts": [10**30], "vm": 10**30, "host": 10**30, "policy": 10**30},
    {"disks": [1, "x", {"lun": "0", "path": 5}], "extension": []},
    {"included_luns": [10**30], "excluded_luns": "0"},
    {"schedule": [], "retention": "x", "name": "\x00"},
    {"user": 5, "role": ["owner"], "soft_delete_days": 1.5, "mua_enabled": 1},
    {"kind": 5, "luns": "x", "tier": [], "target": 7, "retain_until": 3},
    {"kind": "create_vm", "luns": [None], "target": {"host": "1", "path": 5, "name": []}},
    {"kind": "restore_disks", "target": {"host": True, "path": "relative"}, "retain_until": ""},
]


def test_it_never_answers_500_to_odd_input(api, job, rp, admin_user):
    client = api(admin_user)
    targets = [
        ("post", "/api/v1/vaults/"),
        ("patch", "/api/v1/vaults/prod/"),
        ("post", "/api/v1/vaults/prod/members/"),
        ("post", "/api/v1/vaults/prod/approvers/"),
        ("post", "/api/v1/vaults/prod/policies/"),
        ("put", "/api/v1/vaults/prod/policies/DefaultPolicy/"),
        ("patch", "/api/v1/vaults/prod/policies/DefaultPolicy/"),
        ("post", "/api/v1/hosts/"),
        ("patch", f"/api/v1/hosts/{job.protected_item.vm.host_id}/"),
        ("post", "/api/v1/vms/"),
        ("patch", f"/api/v1/vms/{job.protected_item.vm_id}/"),
        ("post", "/api/v1/vaults/prod/protected-items/"),
        ("patch", "/api/v1/vaults/prod/protected-items/web-01/"),
        ("post", "/api/v1/auth/token/"),
        ("post", f"/api/v1/vaults/prod/protected-items/web-01/recovery-points/{rp.pk}/restore/"),
        (
            "post",
            f"/api/v1/vaults/prod/protected-items/web-01/recovery-points/{rp.pk}/file-recovery/",
        ),
        ("post", f"/api/v1/vaults/prod/jobs/{job.pk}/cancel/"),
        ("post", "/api/v1/vaults/prod/protected-items/web-01/backup/"),
    ]
    for method, url in targets:
        for body in WEIRD:
            r = getattr(client, method)(url, body)
            assert r.status_code < 500, (method, url, body, r.content)
            # An empty body (None sends none) is an empty PATCH: a no-op.
            assert r.status_code != 200 or body is None, (method, url, body, r.data)


def test_it_answers_404_to_out_of_range_ids(api, vault, admin_user):
    client = api(admin_user)
    for url in (
        f"/api/v1/hosts/{10**30}/",
        f"/api/v1/vms/{10**30}/",
        f"/api/v1/vaults/prod/jobs/{10**30}/",
        f"/api/v1/vaults/prod/members/{10**30}/",
        f"/api/v1/auth/tokens/{10**30}/",
    ):
        assert client.get(url).status_code == 404, url


def test_it_answers_options_and_head(api, vault, reader, outsider):
    assert api(reader).options("/api/v1/vaults/prod/policies/").status_code == 200
    assert api(reader).head("/api/v1/vaults/prod/").status_code == 200
    assert api(outsider).options("/api/v1/vaults/prod/policies/").status_code == 404
