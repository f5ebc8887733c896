"""Alerts: per vault (readers+; acknowledge operators+, resolve contributors+; the job-alert
switch contributors+), the site-wide list of the user's vaults, and the navigation badge."""

import pytest
from django.urls import reverse

from security.alerts import active_alert_count
from security.models import Alert, VaultAlertSettings
from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/alerts/"


def make_alert(vault, n=0, **fields) -> Alert:
    fields.setdefault("severity", "sev1")
    fields.setdefault("kind", "backup_failure")
    return Alert.objects.create(
        vault=vault, message=f"Backup failed #{n}", dedup_key=f"test:{vault.pk}:{n}", **fields
    )


def test_reader_sees_alerts_without_actions(login, reader, vault):
    make_alert(vault)
    body = login(reader).get(URL).content.decode()
    assert "Backup failed #0" in body
    assert ">Acknowledge</button>" not in body and ">Resolve</button>" not in body


def test_operator_acknowledges_but_does_not_resolve(login, operator, vault):
    alert = make_alert(vault)
    client = login(operator)
    body = client.get(URL).content.decode()
    assert ">Acknowledge</button>" in body and ">Resolve</button>" not in body
    response = client.post(reverse("alert-acknowledge", args=["prod", alert.pk]))
    assert response.status_code == 302
    alert.refresh_from_db()
    assert (alert.status, alert.acknowledged_by) == ("acknowledged", operator)
    assert client.post(reverse("alert-resolve", args=["prod", alert.pk])).status_code == 403


def test_contributor_resolves(login, contributor, vault):
    alert = make_alert(vault)
    response = login(contributor).post(
        reverse("alert-resolve", args=["prod", alert.pk]), {"next": "/alerts/"}
    )
    assert response.url == "/alerts/"
    alert.refresh_from_db()
    assert alert.status == "resolved"


def test_acknowledging_twice_shows_the_rule(login, operator, vault):
    alert = make_alert(vault, status="acknowledged")
    response = login(operator).post(
        reverse("alert-acknowledge", args=["prod", alert.pk]), follow=True
    )
    assert "only an active alert is acknowledged" in response.content.decode()


def test_open_is_the_default_filter(login, reader, vault):
    make_alert(vault, 1)
    make_alert(vault, 2, status="resolved")
    client = login(reader)
    body = client.get(URL).content.decode()
    assert "#1" in body and "Backup failed #2" not in body
    assert "Backup failed #2" in client.get(URL + "?status=all").content.decode()


def test_contributor_switches_job_alerts(login, contributor, operator, vault):
    response = login(contributor).post(
        reverse("alert-settings", args=["prod"]), {"job_alerts": "false"}
    )
    assert response.status_code == 302
    assert VaultAlertSettings.objects.get(vault=vault).job_alerts is False
    body = login(operator).get(URL).content.decode()
    assert 'id="alert-settings-form"' not in body
    assert 'id="job-alerts-state">off' in body


def test_site_alerts_list_only_the_users_vaults(login, reader, admin_user, vault):
    other = f.make_vault("other", owner=admin_user)
    make_alert(vault, 1)
    make_alert(other, 2)
    body = login(reader).get(reverse("site-alerts")).content.decode()
    assert "Backup failed #1" in body and "Backup failed #2" not in body
    admin_body = login(admin_user).get(reverse("site-alerts")).content.decode()
    assert "Backup failed #2" in admin_body


def test_badge_shows_active_alert_count(login, reader, outsider, admin_user, vault):
    make_alert(vault, 1)
    make_alert(vault, 2)
    make_alert(vault, 3, status="acknowledged")
    make_alert(f.make_vault("other", owner=admin_user), 4)
    body = login(reader).get("/").content.decode()
    assert active_alert_count(reader) == 2
    assert 'id="alert-badge" title="Active alerts">2<' in body
    assert active_alert_count(admin_user) == 3
    assert (
        'id="alert-badge" title="Active alerts">3<' in login(admin_user).get("/").content.decode()
    )
    assert 'id="alert-badge"' not in login(outsider).get("/").content.decode()


def test_it_keeps_its_query_budget(assert_query_budget, operator, vault):
    made = []

    def make_rows(n):
        for _ in range(n):
            made.append(make_alert(vault, len(made)))

    assert_query_budget(operator, URL, make_rows, 8, marker='class="alert-row"')


def test_site_list_keeps_its_query_budget(assert_query_budget, operator, vault):
    made = []

    def make_rows(n):
        for _ in range(n):
            made.append(make_alert(vault, len(made)))

    assert_query_budget(operator, reverse("site-alerts"), make_rows, 6, marker='class="alert-row"')


def test_the_navigation_costs_one_query(rf, reader, vault, django_assert_num_queries):
    from portal.templatetags.lifeboat import nav_state

    make_alert(vault, 1)
    request = rf.get("/")
    request.user = reader
    with django_assert_num_queries(1):
        state = nav_state({"request": request})
    assert state == {"alerts": active_alert_count(reader), "guard": False}
