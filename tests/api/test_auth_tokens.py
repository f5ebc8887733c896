from django.urls import reverse

from portal.models import ApiToken
from tests.api.clients import JsonClient
from vaults.models import AuditEvent

TOKEN_URL = "/api/v1/auth/token/"


def obtain(username="owner", password="pw-secret-1", **extra):
    return JsonClient().post(TOKEN_URL, {"username": username, "password": password, **extra})


def test_it_issues_a_token_and_authenticates_with_it_until_revoked(vault, owner):
    r = obtain()
    assert r.status_code == 201, r.content
    key = r.data["token"]
    token = ApiToken.objects.get(user=owner)
    assert token.name == "api" and token.last_used_at is None
    assert key.startswith(token.prefix) and token.key_hash != key

    client = JsonClient(HTTP_AUTHORIZATION=f"Token {key}")
    r = client.get("/api/v1/vaults/prod/")
    assert r.status_code == 200 and r.data["role"] == "owner"
    token.refresh_from_db()
    assert token.last_used_at is not None
    assert token.last_used_ip == "127.0.0.1"

    r = client.delete(f"/api/v1/auth/tokens/{token.pk}/")
    assert r.status_code == 204
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert client.get("/api/v1/vaults/").status_code == 401
    assert AuditEvent.objects.filter(action="token.revoke", actor=owner).exists()


def test_it_names_the_token_when_asked(owner):
    assert obtain(name="ci").status_code == 201
    assert ApiToken.objects.get(user=owner).name == "ci"


def test_it_refuses_a_wrong_password_with_401(owner):
    r = obtain(password="nope")
    assert r.status_code == 401
    assert "detail" in r.data
    assert not ApiToken.objects.exists()


def test_it_refuses_unknown_fields_when_obtaining(owner):
    r = obtain(scope="all")
    assert r.status_code == 400 and r.data == {"scope": ["Unknown field."]}


def test_it_answers_401_to_a_bad_token(vault):
    client = JsonClient(HTTP_AUTHORIZATION="Token deadbeef")
    assert client.get("/api/v1/vaults/").status_code == 401


def test_it_answers_401_without_credentials(vault):
    r = JsonClient().get("/api/v1/vaults/")
    assert r.status_code == 401
    assert r["WWW-Authenticate"] == "Token"


def test_it_lists_only_the_callers_own_tokens(api, owner, reader):
    ApiToken.issue(owner, "mine")
    ApiToken.issue(reader, "theirs")
    r = api(owner).get(reverse("api-token-list"))
    assert r.status_code == 200
    assert [t["name"] for t in r.data["results"]] == ["mine"]
    assert set(r.data["results"][0]) == {
        "id",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    }


def test_it_answers_404_when_revoking_another_users_token(api, owner, reader):
    theirs, _ = ApiToken.issue(reader, "theirs")
    r = api(owner).delete(reverse("api-token-detail", args=[theirs.pk]))
    assert r.status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_it_keeps_the_token_list_query_count_flat(api, owner, assert_flat_queries):
    assert_flat_queries(
        api(owner),
        reverse("api-token-list"),
        lambda n: [ApiToken.issue(owner, f"t{i}") for i in range(n)],
        budget=2,
    )
