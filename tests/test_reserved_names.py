"""Names that would shadow page URLs (/vaults/new/, /inventory/vms/new/) are refused."""

import pytest
from rest_framework.test import APIClient


@pytest.mark.django_db
def test_a_vault_named_new_is_refused_naming_the_field(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    response = client.post("/api/v1/vaults/", {"name": "new"}, format="json")
    assert response.status_code == 400
    assert "reserved" in response.json()["name"][0]


@pytest.mark.django_db
def test_a_vm_named_new_is_refused_naming_the_field(admin_user, host):
    disk = f"{host.allowed_roots[0]}/new.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    client = APIClient()
    client.force_authenticate(admin_user)
    body = {"name": "New", "host": host.pk, "disks": [{"lun": -1, "path": disk}]}
    response = client.post("/api/v1/vms/", body, format="json")
    assert response.status_code == 400
    assert "reserved" in str(response.json()["name"])
