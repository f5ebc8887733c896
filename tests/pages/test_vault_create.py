import pytest
from django.urls import reverse

from vaults.models import AuditEvent, Role, Vault

pytestmark = pytest.mark.django_db

URL = "/vaults/new/"


def data(**overrides):
    base = {
        "name": "backup-1",
        "store_location": "",
        "soft_delete_state": "enabled",
        "soft_delete_days": "14",
        "immutability": "disabled",
    }
    base.update(overrides)
    return base


def test_admin_creates_a_vault_and_becomes_owner(login, admin_user):
    response = login(admin_user).post(URL, data(soft_delete_days="30"))
    assert response.status_code == 302
    assert response.url == reverse("vault-detail", args=["backup-1"])
    vault = Vault.objects.get(name="backup-1")
    assert vault.soft_delete_days == 30
    assert vault.memberships.get(user=admin_user).role == Role.OWNER
    assert vault.policies.filter(name="DefaultPolicy").exists()
    assert AuditEvent.objects.filter(action="vault.create", vault=vault).exists()


@pytest.mark.parametrize(
    "name, message",
    [
        ("1abc", "a letter first"),
        ("a", "2–50 characters"),
        ("has space", "letters, digits or hyphens"),
    ],
)
def test_it_shows_the_name_rule_next_to_the_name(login, admin_user, name, message):
    response = login(admin_user).post(URL, data(name=name))
    assert response.status_code == 200
    assert message in str(response.context["form"].errors["name"])
    assert not Vault.objects.exists()


def test_it_refuses_a_duplicate_name(login, admin_user, vault):
    response = login(admin_user).post(URL, data(name="PROD"))
    assert "already exists" in str(response.context["form"].errors["name"])
    assert Vault.objects.count() == 1


def test_it_checks_soft_delete_days(login, admin_user):
    response = login(admin_user).post(URL, data(soft_delete_days="5"))
    assert "soft_delete_days" in response.context["form"].errors
    assert not Vault.objects.exists()


@pytest.mark.parametrize("persona", ["owner", "reader", "outsider"])
def test_non_admins_get_403(login, personas, persona, vault):
    client = login(personas[persona])
    assert client.get(URL).status_code == 403
    assert client.post(URL, data()).status_code == 403
