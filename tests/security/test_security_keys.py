"""Security keys without a browser: what is refused before any key answers (the ceremonies
themselves run in Chromium, tests/browser/test_security_key.py)."""

import json

import pytest
from django.urls import reverse

from security.models import SecurityKey
from tests import factories as f

pytestmark = pytest.mark.django_db


def post_json(client, name, body=None):
    return client.post(reverse(name), json.dumps(body or {}), content_type="application/json")


def test_a_key_stands_beside_an_app(client, reader):
    client.force_login(reader)
    r = post_json(client, "account-security-key-options")
    assert r.status_code == 400 and "authenticator app first" in r.json()["key"][0]


def test_registration_options_name_this_site_and_exclude_known_keys(client, reader):
    f.make_totp(reader)
    client.force_login(reader)
    r = post_json(client, "account-security-key-options")
    assert r.status_code == 200
    options = r.json()
    assert options["rp"] == {"id": "testserver", "name": "Lifeboat"}
    assert options["user"]["name"] == "reader" and options["excludeCredentials"] == []


def test_an_answer_without_a_ceremony_or_a_credential_is_refused(client, reader):
    f.make_totp(reader)
    client.force_login(reader)
    r = post_json(client, "account-security-key-add", {"credential": {"id": "x"}})
    assert r.status_code == 400 and "not asked here" in r.json()["key"][0]
    post_json(client, "account-security-key-options")
    r = post_json(client, "account-security-key-add", {"credential": "garbage"})
    assert r.status_code == 400 and list(r.json()) == ["credential"]
    # The challenge answered once (wrongly) is gone: a second answer finds no ceremony.
    r = post_json(client, "account-security-key-add", {"credential": {"id": "x"}})
    assert r.status_code == 400 and "not asked here" in r.json()["key"][0]
    assert not SecurityKey.objects.exists()


def test_the_login_key_step_needs_the_password_step(client, reader):
    for name in ("login-key-options", "login-key"):
        r = post_json(client, name)
        assert r.status_code == 400 and "password first" in r.json()["detail"][0]
    client.post(reverse("login"), {"username": "reader", "password": "pw-secret-1"})
    assert "_auth_user_id" in client.session  # no app, so no second step and no key
