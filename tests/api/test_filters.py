"""List filters: an impossible date or a value outside a filter's choices is a 400 naming the
filter (a form error on pages), never a 500 and never silently ignored."""

import pytest
from django.urls import reverse

# -- dates ----------------------------------------------------------------------------------------

AUDIT_URLS = [
    reverse("api-vault-audit-list", args=["prod"]),
    reverse("api-vault-audit-export", args=["prod"]),
    reverse("api-audit-list"),
    reverse("api-audit-export"),
]


@pytest.mark.parametrize("url", AUDIT_URLS)
@pytest.mark.parametrize(
    "param, value",
    [
        ("since", "2020-02-30"),
        ("until", "2020-13-01"),
        ("since", "2021-02-29T10:00:00Z"),
        ("until", "2020-01-01T24:00:00"),
        ("since", "9999-12-31T23:59:59-23:59"),
        ("until", "0001-01-01T00:00:00+23:59"),
    ],
)
def test_an_impossible_audit_date_is_a_400_naming_it(api, vault, admin_user, url, param, value):
    r = api(admin_user).get(url, {param: value})
    assert r.status_code == 400, r.content
    assert list(r.json()) == [param]


def test_the_audit_page_shows_an_impossible_date_as_a_form_error(client, vault, admin_user):
    client.force_login(admin_user)
    for url in ("/vaults/prod/audit/", "/audit/"):
        r = client.get(url, {"since": "2020-02-30"})
        assert r.status_code == 200
        assert "Give an ISO date" in r.content.decode()


def test_jobs_since_takes_a_date_and_refuses_an_impossible_one(api, job, reader):
    url = reverse("api-job-list", args=["prod"])
    assert api(reader).get(url, {"since": "2000-01-01"}).json()["count"] == 1
    r = api(reader).get(url, {"since": "2020-02-30"})
    assert r.status_code == 400 and list(r.json()) == ["since"]


# -- filter values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, query",
    [
        ("api-alert-list", {"status": "bogus"}),
        ("api-alert-list", {"severity": "sev9"}),
        ("api-alert-list", {"kind": "no_such_alert"}),
        ("api-approval-list", {"status": "bogus"}),
        ("api-job-list", {"status": "bogus"}),
        ("api-job-list", {"operation": "bogus"}),
    ],
)
def test_an_unknown_filter_value_is_a_400_naming_the_filter(api, vault, admin_user, name, query):
    r = api(admin_user).get(reverse(name, args=["prod"]), query)
    assert r.status_code == 400, r.content
    assert list(r.json()) == list(query)


def test_known_filter_values_and_blank_ones_still_filter(api, vault, admin_user):
    client = api(admin_user)
    for name, query in (
        ("api-alert-list", {"status": "active", "severity": "sev0", "kind": "mua_disabled"}),
        ("api-alert-list", {"status": ""}),
        ("api-approval-list", {"status": "expired"}),
        ("api-approval-list", {"status": ""}),
    ):
        r = client.get(reverse(name, args=["prod"]), query)
        assert r.status_code == 200, (name, query, r.content)
