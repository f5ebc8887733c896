import pytest
from django.urls import reverse

from vaults.models import AuditEvent, Vault

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/settings/"


def data(**overrides):
    base = {
        "soft_delete_state": "enabled",
        "soft_delete_days": "14",
        "immutability": "disabled",
    }
    base.update(overrides)
    return base


def test_contributor_sees_the_current_settings(login, contributor, vault):
    response = login(contributor).get(URL)
    assert response.status_code == 200
    assert response.context["form"].initial["soft_delete_days"] == 14


def test_contributor_changes_settings(login, contributor, vault):
    response = login(contributor).post(
        URL, data(soft_delete_days="60", immutability="unlocked", mua_enabled="on")
    )
    assert response.status_code == 302
    vault.refresh_from_db()
    assert (vault.soft_delete_days, vault.immutability, vault.mua_enabled) == (60, "unlocked", True)
    event = AuditEvent.objects.get(action="vault.update")
    assert event.before["soft_delete_days"] == 14
    assert event.after["soft_delete_days"] == 60


def test_it_shows_the_service_refusal_next_to_the_field(login, contributor, vault):
    Vault.objects.filter(pk=vault.pk).update(immutability="locked")
    response = login(contributor).post(URL, data(immutability="unlocked"))
    assert response.status_code == 200
    assert "irreversible" in str(response.context["form"].errors["immutability"])
    vault.refresh_from_db()
    assert vault.immutability == "locked"


def test_operator_gets_403(login, operator, vault):
    assert login(operator).get(URL).status_code == 403
    assert login(operator).post(URL, data(soft_delete_days="60")).status_code == 403


def test_owner_deletes_an_empty_vault(login, owner, vault):
    response = login(owner).post(reverse("vault-delete", args=["prod"]))
    assert response.status_code == 302
    assert response.url == reverse("vault-list")
    assert not Vault.objects.filter(name="prod").exists()


def test_it_refuses_to_delete_a_vault_with_data(login, owner, vault, item):
    client = login(owner)
    response = client.post(reverse("vault-delete", args=["prod"]), follow=True)
    assert Vault.objects.filter(name="prod").exists()
    assert "still holds 1 protected item" in response.content.decode()


def test_htmx_delete_answers_with_a_client_redirect(login, owner, vault):
    response = login(owner).post(reverse("vault-delete", args=["prod"]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("vault-list")


def test_contributor_cannot_delete(login, contributor, vault):
    assert login(contributor).post(reverse("vault-delete", args=["prod"])).status_code == 403
    assert login(contributor).get(reverse("vault-delete", args=["prod"])).status_code == 405


# -- irreversible settings and MUA, as the API answers them ------------------------------------


def api_patch(user, body):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client.patch("/api/v1/vaults/prod/", body, format="json")


def test_always_on_cannot_be_turned_off_even_by_a_site_admin(login, admin_user, vault):
    Vault.objects.filter(pk=vault.pk).update(soft_delete_state="always_on")
    client = login(admin_user)
    assert 'id="always-on-note"' in client.get(URL).content.decode()
    response = client.post(URL, data(soft_delete_state="enabled"))
    shown = str(response.context["form"].errors["soft_delete_state"])
    refused = api_patch(admin_user, {"soft_delete_state": "enabled"})
    assert refused.status_code == 409
    assert refused.json()["detail"] in shown
    vault.refresh_from_db()
    assert vault.soft_delete_state == "always_on"


def test_locking_immutability_needs_it_enabled_first(login, contributor, vault):
    response = login(contributor).post(URL, data(immutability="locked"))
    shown = str(response.context["form"].errors["immutability"])
    assert api_patch(contributor, {"immutability": "locked"}).json()["detail"] in shown


def test_the_page_explains_the_irreversible_settings(login, contributor, vault):
    body = login(contributor).get(URL).content.decode()
    assert "Always on is irreversible" in body
    assert "locked is irreversible" in body


def test_a_gated_change_shows_the_pending_approval(login, contributor, vault):
    from security.models import Approval

    Vault.objects.filter(pk=vault.pk).update(mua_enabled=True)
    response = login(contributor).post(
        URL, data(soft_delete_state="disabled", mua_enabled="on"), follow=True
    )
    approval = Approval.objects.get()
    body = response.content.decode()
    assert f"Waiting for approval #{approval.pk} by a guard approver" in body
    assert response.redirect_chain[-1][0] == reverse("approval-detail", args=["prod", approval.pk])
    vault.refresh_from_db()
    assert vault.soft_delete_state == "enabled"


def test_enabling_mua_without_a_guard_shows_the_rule(login, owner, admin_user):
    from tests import factories as f

    f.make_vault("bare", owner=admin_user)
    f.add_member(Vault.objects.get(name="bare"), owner, "owner")
    response = login(owner).post("/vaults/bare/settings/", data(mua_enabled="on"))
    assert "has no guard approver" in str(response.context["form"].errors["mua_enabled"])
