"""The protection card of a protected VM page: stop (three modes), resume, undelete, change
policy. Every rule answers on the page as it does in the API (same message)."""

import pytest
from django.urls import reverse

from security.models import Approval
from tests import factories as f
from vaults.models import Vault

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/items/web-01/"
STOP = "/vaults/prod/items/web-01/stop/"


def page_errors(response) -> str:
    return " ".join(
        str(e)
        for form in ("stop_form", "resume_form", "policy_form")
        if response.context and response.context.get(form) is not None
        for e in response.context[form].errors.values()
    )


def test_contributor_sees_every_stop_mode_explained(login, contributor, item):
    body = login(contributor).get(URL).content.decode()
    for mode in ("retain_forever", "retain_as_per_policy", "delete_data"):
        assert f'value="{mode}"' in body
    assert "latest one is kept forever" in body
    assert 'hx-confirm="Stop protection of web-01?"' in body


def test_operator_and_reader_see_no_protection_card(login, operator, reader, item):
    for user in (operator, reader):
        body = login(user).get(URL).content.decode()
        assert 'id="protection"' not in body


def test_immutable_vault_offers_only_retain_modes_and_says_why(login, contributor, item):
    Vault.objects.filter(pk=item.vault_id).update(immutability="unlocked")
    body = login(contributor).get(URL).content.decode()
    assert 'value="delete_data"' not in body
    assert 'value="retain_forever"' in body
    assert 'id="immutable-note"' in body


def test_delete_data_in_an_immutable_vault_is_refused_as_in_the_api(login, api, contributor, item):
    Vault.objects.filter(pk=item.vault_id).update(immutability="unlocked")
    response = login(contributor).post(STOP, {"mode": "delete_data"})
    assert response.status_code == 400
    shown = page_errors(response)
    refused = api(contributor).post(
        "/api/v1/vaults/prod/protected-items/web-01/stop/", {"mode": "delete_data"}, format="json"
    )
    assert refused.status_code == 409
    assert refused.json()["detail"] in shown
    item.refresh_from_db()
    assert item.state == "protected"


def test_stop_retain_forever_then_resume(login, contributor, item, rp):
    client = login(contributor)
    response = client.post(STOP, {"mode": "retain_forever"})
    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.state, item.retention_mode) == ("protection_stopped", "retain_forever")
    body = client.get(URL).content.decode()
    assert 'id="resume-form"' in body
    assert 'value="retain_forever"' not in body  # the mode it is already in
    response = client.post(reverse("item-resume", args=["prod", "web-01"]), {"policy": ""})
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.state == "protected"


def test_resume_under_another_policy(login, contributor, item, rp, vault):
    f.make_policy(vault, "Longer", retention={"daily": {"days": 60}})
    client = login(contributor)
    client.post(STOP, {"mode": "retain_as_per_policy"})
    client.post(reverse("item-resume", args=["prod", "web-01"]), {"policy": "Longer"})
    item.refresh_from_db()
    assert (item.state, item.policy.name) == ("protected", "Longer")


def test_stop_with_delete_data_lands_in_the_recycle_bin_and_undelete_brings_it_back(
    login, contributor, item, rp
):
    client = login(contributor)
    response = client.post(STOP, {"mode": "delete_data"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("vault-recycle-bin", args=["prod"])
    assert "web-01" in response.content.decode()
    item.refresh_from_db()
    assert item.state == "soft_deleted"
    body = client.get(URL).content.decode()
    assert 'id="undelete-form"' in body and 'id="stop-form"' not in body
    response = client.post(reverse("item-undelete", args=["prod", "web-01"]), follow=True)
    assert "Protection stopped" in response.content.decode()
    item.refresh_from_db()
    assert (item.state, item.retention_mode) == ("protection_stopped", "retain_forever")


def test_change_policy(login, contributor, item, vault):
    f.make_policy(vault, "Spare")
    response = login(contributor).post(
        reverse("item-change-policy", args=["prod", "web-01"]), {"policy": "Spare"}
    )
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.policy.name == "Spare"


def test_a_blocked_move_shows_the_rule_as_the_api_does(login, api, contributor, item, vault):
    short = f.make_policy(vault, "Short", retention={"daily": {"days": 7}})
    f.make_rp(item, time=item.created_at)
    Vault.objects.filter(pk=vault.pk).update(immutability="unlocked")
    url = reverse("item-change-policy", args=["prod", "web-01"])
    response = login(contributor).post(url, {"policy": short.name})
    refused = api(contributor).patch(
        "/api/v1/vaults/prod/protected-items/web-01/", {"policy": "Short"}, format="json"
    )
    assert refused.status_code == 409 and refused.json()["rule"] == "immutability"
    detail = refused.json()["detail"]
    assert response.status_code == 400
    assert detail in page_errors(response)
    item.refresh_from_db()
    assert item.policy.name == "DefaultPolicy"


def test_htmx_refusal_comes_back_inside_the_card(login, contributor, item):
    Vault.objects.filter(pk=item.vault_id).update(immutability="unlocked")
    response = login(contributor).post(STOP, {"mode": "delete_data"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<section class="card protection" id="protection">')
    assert "is immutable" in body


def test_mua_gated_stop_waits_and_the_approver_runs_it_for_the_requester(
    login, client, contributor, approver, item, rp, vault
):
    Vault.objects.filter(pk=vault.pk).update(mua_enabled=True)
    response = login(contributor).post(STOP, {"mode": "delete_data"}, follow=True)
    approval = Approval.objects.get()
    detail = reverse("approval-detail", args=["prod", approval.pk])
    assert response.redirect_chain[-1][0] == detail
    body = response.content.decode()
    assert f"Waiting for approval #{approval.pk} by a guard approver" in body
    assert f'href="{detail}"' in body
    item.refresh_from_db()
    assert item.state == "protected"

    client.force_login(approver)
    response = client.post(reverse("approval-approve", args=["prod", approval.pk]), follow=True)
    assert "on behalf of contributor" in response.content.decode()
    approval.refresh_from_db()
    item.refresh_from_db()
    assert approval.status == "executed"
    assert item.state == "soft_deleted"
    assert item.deleted_by == contributor
