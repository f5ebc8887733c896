import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_it_shows_the_login_form(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content


def test_it_sends_anonymous_users_to_login(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_reader_logs_in_and_lands_on_the_dashboard(client, reader):
    response = client.post(reverse("login"), {"username": "reader", "password": "pw-secret-1"})
    assert response.status_code == 302
    assert response.url == reverse("dashboard")


def test_it_refuses_logout_by_get(client, reader):
    client.force_login(reader)
    assert client.get(reverse("logout")).status_code == 405


def test_it_logs_out_by_post(client, reader):
    client.force_login(reader)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("dashboard")).status_code == 302
