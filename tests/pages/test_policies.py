import pytest
from django.urls import reverse

from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/policies/"


def test_reader_sees_policies_with_schedule_and_retention(login, reader, vault, item):
    response = login(reader).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "DefaultPolicy" in html
    assert "Daily at 02:00" in html
    assert "daily: 30 days" in html
    assert response.context["policies"][0].item_count == 1
    assert reverse("policy-create", args=["prod"]) not in html


def test_contributor_is_offered_create_edit_delete(login, contributor, vault):
    html = login(contributor).get(URL).content.decode()
    assert reverse("policy-create", args=["prod"]) in html
    assert reverse("policy-edit", args=["prod", "DefaultPolicy"]) in html
    assert "hx-confirm" in html


def test_contributor_deletes_an_unused_policy(login, contributor, vault):
    f.make_policy(vault, "Spare")
    response = login(contributor).post(reverse("policy-delete", args=["prod", "Spare"]))
    assert response.status_code == 302
    assert not vault.policies.filter(name="Spare").exists()


def test_it_refuses_to_delete_a_policy_in_use(login, contributor, vault, item):
    response = login(contributor).post(
        reverse("policy-delete", args=["prod", "DefaultPolicy"]), follow=True
    )
    assert vault.policies.filter(name="DefaultPolicy").exists()
    assert "is used by 1 protected item" in response.content.decode()


def test_operator_cannot_delete(login, operator, vault):
    response = login(operator).post(reverse("policy-delete", args=["prod", "DefaultPolicy"]))
    assert response.status_code == 403


def test_it_keeps_its_query_budget(assert_query_budget, reader, vault):
    def make_rows(n):
        for _ in range(n):
            f.make_policy(vault)

    assert_query_budget(reader, URL, make_rows, 6, marker="Daily at 02:00")
