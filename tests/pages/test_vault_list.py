import pytest
from django.urls import reverse

from tests import factories as f

pytestmark = pytest.mark.django_db


def test_reader_sees_only_their_vaults(login, reader, vault, admin_user, item):
    f.make_vault("other", owner=admin_user)
    response = login(reader).get(reverse("vault-list"))
    assert response.status_code == 200
    names = [v.name for v in response.context["vaults"]]
    assert names == ["prod"]
    assert response.context["vaults"][0].item_count == 1
    assert reverse("vault-create").encode() not in response.content


def test_admin_sees_every_vault_and_the_create_link(login, admin_user, vault):
    f.make_vault("other", owner=admin_user)
    response = login(admin_user).get(reverse("vault-list"))
    assert [v.name for v in response.context["vaults"]] == ["other", "prod"]
    assert reverse("vault-create").encode() in response.content


def test_it_keeps_its_query_budget(assert_query_budget, reader, admin_user):
    def make_rows(n):
        for _ in range(n):
            f.add_member(f.make_vault(owner=admin_user), reader)

    assert_query_budget(reader, reverse("vault-list"), make_rows, 5, marker='<td class="num">')
