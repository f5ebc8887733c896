import pytest

from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/items/"


def test_reader_sees_protected_vms(login, reader, item, rp):
    response = login(reader).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "web-01" in html
    assert "Protected" in html
    assert response.context["items"][0].rp_count == 1


def test_operator_is_offered_protection(login, operator, vault):
    assert b"/vaults/prod/protect/" in login(operator).get(URL).content


def test_it_keeps_its_query_budget(assert_query_budget, reader, vault, host):
    def make_rows(n):
        for _ in range(n):
            f.make_rp(f.make_protected_item(vault, f.make_vm(host)))

    assert_query_budget(reader, URL, make_rows, 6, marker="/vaults/prod/items/vm")
