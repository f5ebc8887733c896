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


def test_the_list_filters_by_health(login, reader, vault, host):
    from vaults.models import ItemState

    f.make_protected_item(vault, f.make_vm(host, name="ok-01"))
    f.make_protected_item(vault, f.make_vm(host, name="bad-01"), state=ItemState.PROTECTION_ERROR)
    f.make_protected_item(
        vault, f.make_vm(host, name="warn-01"), last_backup_status="completed_with_warnings"
    )
    client = login(reader)

    def names(health):
        response = client.get(URL, {"health": health})
        assert response.status_code == 200
        return [i.vm.name for i in response.context["items"]]

    assert names("failed") == ["bad-01"]
    assert names("warning") == ["warn-01"]
    assert names("protected") == ["ok-01"]
    response = client.get(URL, {"health": "sunny"})
    assert response.status_code == 400
    assert "<strong>health</strong>" in response.content.decode()
