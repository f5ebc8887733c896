import pytest
from django.urls import reverse

from portal.models import ApiToken, hash_token

pytestmark = pytest.mark.django_db

URL = "/account/tokens/"


def test_it_creates_a_token_and_shows_the_key_once(login, reader):
    client = login(reader)
    response = client.post(URL, {"name": "report script"})
    assert response.status_code == 200
    key = response.context["new_key"]
    token = ApiToken.objects.get(user=reader)
    assert token.key_hash == hash_token(key)
    assert key in response.content.decode()
    again = client.get(URL)
    assert key not in again.content.decode()
    assert "report script" in again.content.decode()


def test_it_lists_only_my_tokens_with_last_use(login, reader, owner):
    mine, _ = ApiToken.issue(reader, "mine")
    ApiToken.issue(owner, "theirs")
    response = login(reader).get(URL)
    html = response.content.decode()
    assert "mine" in html and "theirs" not in html
    assert "never" in html


def test_it_revokes_a_token(login, reader):
    token, _ = ApiToken.issue(reader, "old")
    response = login(reader).post(reverse("account-token-revoke", args=[token.pk]))
    assert response.status_code == 302
    token.refresh_from_db()
    assert not token.is_active


def test_it_will_not_revoke_another_users_token(login, reader, owner):
    token, _ = ApiToken.issue(owner, "theirs")
    response = login(reader).post(reverse("account-token-revoke", args=[token.pk]))
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.is_active


def test_revoke_needs_post(login, reader):
    token, _ = ApiToken.issue(reader, "old")
    assert login(reader).get(reverse("account-token-revoke", args=[token.pk])).status_code == 405


def test_it_keeps_its_query_budget(assert_query_budget, reader):
    def make_rows(n):
        for i in range(n):
            ApiToken.issue(reader, f"t{i}")

    assert_query_budget(reader, URL, make_rows, 5, marker="/revoke/")
