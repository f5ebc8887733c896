"""Error pages are styled, keep the navigation and say what happened in plain words; the API
keeps its JSON errors."""

import pytest

pytestmark = pytest.mark.django_db


def test_404_has_the_navigation_and_a_message(login, reader, item):
    response = login(reader).get("/vaults/prod/items/nope/")
    assert response.status_code == 404
    html = response.content.decode()
    assert 'id="site-nav"' in html and 'id="error-message"' in html
    assert "Not found" in html and 'href="#main"' in html


def test_403_says_the_role_does_not_allow_it(login, reader, item):
    response = login(reader).get("/vaults/prod/settings/")
    assert response.status_code == 403
    html = response.content.decode()
    assert 'id="site-nav"' in html and "Not allowed" in html and 'id="error-message"' in html


def test_405_on_a_page_is_the_styled_page_with_allow(login, operator, item):
    response = login(operator).get("/vaults/prod/items/web-01/stop/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    html = response.content.decode()
    assert 'id="site-nav"' in html and "Not possible this way" in html


def test_405_in_the_api_stays_json(api, admin_user):
    response = api(admin_user).put("/api/v1/vaults/", {}, format="json")
    assert response.status_code == 405
    assert response["Content-Type"].startswith("application/json")


def test_500_page_renders_without_a_request(settings):
    from django.template.loader import get_template

    html = get_template("500.html").render()
    assert "Something went wrong" in html and 'id="site-nav"' not in html


def test_api_docs_are_linked_and_served_from_our_static_files(login, reader, client):
    html = login(reader).get("/").content.decode()
    assert 'href="/api/docs/"' in html
    docs = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs and "cdn" not in docs
    redoc = client.get("/api/redoc/").content.decode()
    assert "/static/drf_spectacular_sidecar/redoc/" in redoc and "googleapis" not in redoc
