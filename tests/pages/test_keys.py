"""Customer-managed keys page (site admins): register by file path, enable/disable, rotate to
a new file (update_key jobs, linked from the page). Real key files in tmp_path."""

import pytest
from django.urls import reverse

from security.models import CustomerKey, VaultKey
from vaults.services.vaults import update_vault

pytestmark = pytest.mark.django_db

URL = "/keys/"


def key_file(tmp_path, name: str, byte: int) -> str:
    path = tmp_path / name
    path.write_bytes(bytes([byte]) * 32)
    return str(path)


def test_site_admin_registers_a_key(login, admin_user, tmp_path):
    path = key_file(tmp_path, "k1.key", 1)
    response = login(admin_user).post(URL, {"name": "k1", "path": path})
    assert response.status_code == 302
    key = CustomerKey.objects.get(name="k1")
    assert key.path == path
    assert path in login(admin_user).get(URL).content.decode()


def test_a_bad_key_file_is_refused_next_to_the_field(login, admin_user, tmp_path):
    response = login(admin_user).post(URL, {"name": "k1", "path": str(tmp_path / "missing")})
    assert response.status_code == 400
    assert response.context["form"].errors["path"]
    response = login(admin_user).post(URL, {"name": "k1", "path": "relative.key"})
    assert "absolute path" in str(response.context["form"].errors["path"])


def test_disable_and_enable(login, admin_user, tmp_path):
    client = login(admin_user)
    client.post(URL, {"name": "k1", "path": key_file(tmp_path, "k1.key", 1)})
    client.post(reverse("key-enabled", args=["k1"]), {"enabled": "false"})
    assert CustomerKey.objects.get(name="k1").enabled is False
    client.post(reverse("key-enabled", args=["k1"]), {"enabled": "true"})
    assert CustomerKey.objects.get(name="k1").enabled is True


def test_rotate_queues_update_key_jobs_and_links_them(
    login, admin_user, contributor, vault, tmp_path
):
    client = login(admin_user)
    client.post(URL, {"name": "k1", "path": key_file(tmp_path, "k1.key", 1)})
    update_vault(vault, by=contributor, encryption="customer_managed", encryption_key="k1")
    new = key_file(tmp_path, "k1-v2.key", 2)
    response = client.post(reverse("key-rotate", args=["k1"]), {"path": new}, follow=True)
    key = CustomerKey.objects.get(name="k1")
    assert (key.path, key.version) == (new, 2)
    job = vault.jobs.get(operation="update_key")
    assert reverse("job-detail", args=["prod", job.pk]) in response.content.decode()
    assert "re-wrapping" in response.content.decode()
    assert VaultKey.objects.get(vault=vault).version == 1  # until the job has run


def test_rotating_to_the_same_file_is_refused(login, admin_user, tmp_path):
    path = key_file(tmp_path, "k1.key", 1)
    client = login(admin_user)
    client.post(URL, {"name": "k1", "path": path})
    response = client.post(reverse("key-rotate", args=["k1"]), {"path": path}, follow=True)
    assert "holds the key&#x27;s current version" in response.content.decode()


def test_vault_owners_get_403(login, owner, vault):
    assert login(owner).get(URL).status_code == 403
