import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/"


def test_reader_sees_settings_counts_and_linked_hosts(login, reader, vault, rp):
    response = login(reader).get(URL)
    assert response.status_code == 200
    assert response.context["counts"]["items"] == 1
    assert response.context["counts"]["rps"] == 1
    assert response.context["counts"]["policies"] == 1
    html = response.content.decode()
    assert "host1" in html
    assert "14 days" in html
    # Readers are offered neither settings nor protection.
    assert reverse("vault-settings", args=["prod"]) not in html
    assert reverse("vault-protect", args=["prod"]) not in html


def test_contributor_is_offered_settings(login, contributor, vault):
    html = login(contributor).get(URL).content.decode()
    assert reverse("vault-settings", args=["prod"]) in html


def test_outsider_gets_404(login, outsider, vault):
    assert login(outsider).get(URL).status_code == 404


def test_guard_approver_gets_404(login, approver, vault):
    assert login(approver).get(URL).status_code == 404
