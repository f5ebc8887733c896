"""The vault's Encryption page: platform key or a registered customer-managed key, chosen by
name; only before anything was protected, irreversible, gated by MUA."""

import pytest
from rest_framework.test import APIClient

from security.keys import fingerprint
from security.models import Approval, CustomerKey, VaultKey
from vaults.models import Vault

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/encryption/"


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "k1.key"
    path.write_bytes(b"\x07" * 32)
    return CustomerKey.objects.create(
        name="k1", path=str(path), fingerprint=fingerprint(path.read_bytes())
    )


def test_contributor_sees_key_names_but_not_paths(login, contributor, vault, key):
    body = login(contributor).get(URL).content.decode()
    assert 'value="k1"' in body
    assert key.path not in body
    assert "irreversible" in body


def test_contributor_chooses_a_customer_managed_key(login, contributor, vault, key):
    response = login(contributor).post(
        URL, {"encryption": "customer_managed", "encryption_key": "k1"}
    )
    assert response.status_code == 302
    vault.refresh_from_db()
    assert vault.encryption == "customer_managed"
    assert VaultKey.objects.get(vault=vault).key == key


def test_going_back_to_the_platform_key_is_refused(login, contributor, vault, key):
    client = login(contributor)
    client.post(URL, {"encryption": "customer_managed", "encryption_key": "k1"})
    response = client.post(URL, {"encryption": "platform"})
    assert response.status_code == 200
    assert "irreversible" in str(response.context["form"].errors["encryption"])
    vault.refresh_from_db()
    assert vault.encryption == "customer_managed"


def test_after_protection_it_is_refused_as_in_the_api(login, contributor, vault, item, key):
    response = login(contributor).post(
        URL, {"encryption": "customer_managed", "encryption_key": "k1"}
    )
    shown = str(response.context["form"].errors["encryption"])
    api = APIClient()
    api.force_authenticate(contributor)
    refused = api.patch(
        "/api/v1/vaults/prod/",
        {"encryption": "customer_managed", "encryption_key": "k1"},
        format="json",
    )
    assert refused.status_code == 409
    assert refused.json()["detail"] in shown
    assert 'id="cmk-too-late"' in response.content.decode()


def test_choosing_a_key_waits_for_approval_under_mua(login, contributor, vault, key):
    Vault.objects.filter(pk=vault.pk).update(mua_enabled=True)
    response = login(contributor).post(
        URL, {"encryption": "customer_managed", "encryption_key": "k1"}, follow=True
    )
    approval = Approval.objects.get()
    assert f"Waiting for approval #{approval.pk}" in response.content.decode()
    vault.refresh_from_db()
    assert vault.encryption == "platform"


def test_operator_gets_403(login, operator, vault):
    assert login(operator).get(URL).status_code == 403
