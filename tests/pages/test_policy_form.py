import pytest
from django.urls import reverse

from policies.models import BackupPolicy
from tests import factories as f
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

NEW = "/vaults/prod/policies/new/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def data(**overrides):
    base = {
        "name": "Nightly",
        "kind": "standard",
        "timezone": "UTC",
        "consistency": "default",
        "schedule_frequency": "daily",
        "schedule_time": "02:00",
        "daily_enabled": "on",
        "daily_days": "30",
        "monthly_basis": "weeks",
        "yearly_basis": "weeks",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def field_block(html: str, field: str) -> str:
    """The markup of one field's block (label, input, help, errors)."""
    start = html.index(f'id="field-{field}"')
    end = html.find('id="field-', start + 1)
    return html[start : end if end > 0 else len(html)]


def test_contributor_sees_an_empty_form_with_defaults(login, contributor, vault):
    response = login(contributor).get(NEW)
    assert response.status_code == 200
    form = response.context["form"]
    assert form.initial["schedule_frequency"] == "daily"
    assert form.initial["daily_days"] == 30


def test_contributor_creates_a_daily_policy(login, contributor, vault):
    response = login(contributor).post(NEW, data())
    assert response.status_code == 302
    assert response.url == reverse("policy-list", args=["prod"])
    policy = vault.policies.get(name="Nightly")
    assert policy.representation()["retention"] == {"daily": {"days": 30}}
    assert AuditEvent.objects.filter(action="policy.create").exists()


def test_contributor_creates_an_enhanced_hourly_policy_with_every_rule(login, contributor, vault):
    response = login(contributor).post(
        NEW,
        data(
            kind="enhanced",
            timezone="Europe/Berlin",
            consistency="crash_only",
            schedule_frequency="hourly",
            schedule_interval_hours="4",
            schedule_window_start="08:00",
            schedule_window_hours="12",
            instant_restore_days="10",
            weekly_enabled="on",
            weekly_weeks="12",
            weekly_weekdays=["sun"],
            monthly_enabled="on",
            monthly_months="24",
            monthly_basis="days",
            monthly_days="1, last",
            yearly_enabled="on",
            yearly_years="5",
            yearly_months=["jan", "jul"],
            yearly_weeks=["first"],
            yearly_weekdays=["mon"],
        ),
    )
    assert response.status_code == 302, response.context["form"].errors
    rep = vault.policies.get(name="Nightly").representation()
    assert rep["schedule"] == {
        "frequency": "hourly",
        "interval_hours": 4,
        "window_start": "08:00",
        "window_hours": 12,
    }
    assert rep["instant_restore_days"] == 10
    assert rep["retention"]["monthly"] == {"months": 24, "days": [1, "last"]}
    assert rep["retention"]["yearly"] == {
        "years": 5,
        "months": ["jan", "jul"],
        "weeks": ["first"],
        "weekdays": ["mon"],
    }


def test_it_shows_an_invalid_field_message_next_to_the_field_and_saves_nothing(
    login, contributor, vault
):
    response = login(contributor).post(NEW, data(daily_days="5"))
    assert response.status_code == 200
    assert vault.policies.count() == 1  # DefaultPolicy only
    html = response.content.decode()
    assert "Must be between 7 and 9999 days." in field_block(html, "daily_days")
    assert "Must be between" not in field_block(html, "name")


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        (
            {
                "kind": "enhanced",
                "schedule_frequency": "hourly",
                "schedule_interval_hours": "4",
                "schedule_window_start": "08:00",
                "schedule_window_hours": "10",
            },
            "schedule_window_hours",
            "multiple of interval_hours",
        ),
        (
            {
                "schedule_frequency": "hourly",
                "schedule_interval_hours": "4",
                "schedule_window_start": "08:00",
                "schedule_window_hours": "12",
            },
            "schedule_frequency",
            "only available for enhanced",
        ),
        ({"schedule_time": "25:00"}, "schedule_time", "HH:MM"),
        (
            {
                "schedule_frequency": "weekly",
                "schedule_weekdays": ["sun"],
                "daily_enabled": None,
                "weekly_enabled": "on",
                "weekly_weeks": "4",
                "weekly_weekdays": ["mon"],
                "instant_restore_days": "5",
            },
            "weekly_weekdays",
            "schedule's weekdays",
        ),
        ({"instant_restore_days": "9"}, "instant_restore_days", "between 1 and 5"),
        ({"timezone": "Mars/Base"}, "timezone", "IANA"),
        ({"name": ""}, "name", "required"),
        ({"name": "DefaultPolicy"}, "name", "already exists"),
        ({"daily_enabled": None}, "daily_enabled", "Required for a daily schedule"),
        ({"daily_days": "many"}, "daily_days", "whole number"),
    ],
)
def test_it_maps_validator_errors_onto_fields(login, contributor, vault, overrides, field, message):
    response = login(contributor).post(NEW, data(**overrides))
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors.get(field, [])), dict(
        response.context["form"].errors
    )
    assert vault.policies.count() == 1


def test_unmapped_errors_go_to_the_top(login, contributor, vault):
    response = login(contributor).post(NEW, data(daily_enabled=None))
    form = response.context["form"]
    # No rule at all: the validator's "retention" error has no field of its own.
    assert "At least one retention rule is required." in form.non_field_errors()


def test_htmx_validation_returns_the_form_fragment_only_and_saves_nothing(
    login, contributor, vault
):
    response = login(contributor).post(NEW, {**data(daily_days="5"), "_validate": "1"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith("<form")
    assert "<html" not in html and 'class="tabs"' not in html
    assert "Must be between 7 and 9999 days." in field_block(html, "daily_days")
    assert vault.policies.count() == 1


def test_htmx_validation_of_a_valid_form_saves_nothing(login, contributor, vault):
    response = login(contributor).post(NEW, {**data(), "_validate": "1"}, **HTMX)
    assert response.status_code == 200
    assert "No problems found." in response.content.decode()
    assert not vault.policies.filter(name="Nightly").exists()


def test_contributor_edits_a_policy(login, contributor, vault):
    policy = f.make_policy(
        vault,
        "Weekly",
        schedule={"frequency": "weekly", "time": "03:00", "weekdays": ["sat"]},
        instant_restore_days=5,
        retention={"weekly": {"weeks": 8, "weekdays": ["sat"]}},
    )
    url = reverse("policy-edit", args=["prod", "Weekly"])
    client = login(contributor)
    form = client.get(url).context["form"]
    assert form.initial["schedule_weekdays"] == ["sat"]
    assert form.initial["weekly_enabled"] is True
    assert form.initial["daily_enabled"] is False
    edit = data(
        name="Weekly2",
        schedule_frequency="weekly",
        schedule_time="03:00",
        schedule_weekdays=["sat", "sun"],
        instant_restore_days="5",
        daily_enabled=None,
        weekly_enabled="on",
        weekly_weeks="10",
        weekly_weekdays=["sun"],
    )
    # Saturdays no longer make weekly points: the page shows the cut and asks to confirm.
    response = client.post(url, edit)
    assert response.status_code == 200, response.context["form"].errors
    cut = response.context["cut"]
    assert cut["reduces_retention"] and 'id="retention-cut"' in response.content.decode()
    policy.refresh_from_db()
    assert policy.name == "Weekly"
    response = client.post(url, {**edit, "confirm_cut": cut["token"]})
    assert response.status_code == 302, response.context["form"].errors
    policy.refresh_from_db()
    assert policy.name == "Weekly2"
    assert policy.retention == {"weekly": {"weeks": 10, "weekdays": ["sun"]}}


def test_editing_keeps_the_own_name(login, contributor, vault):
    url = reverse("policy-edit", args=["prod", BackupPolicy.DEFAULT_NAME])
    response = login(contributor).post(url, data(name="DefaultPolicy", daily_days="45"))
    assert response.status_code == 302
    assert vault.policies.get(name="DefaultPolicy").retention == {"daily": {"days": 45}}


def test_operator_gets_403(login, operator, vault):
    client = login(operator)
    assert client.get(NEW).status_code == 403
    assert client.post(NEW, data()).status_code == 403
    assert client.get(reverse("policy-edit", args=["prod", "DefaultPolicy"])).status_code == 403


def test_unknown_policy_is_404(login, contributor, vault):
    assert login(contributor).get(reverse("policy-edit", args=["prod", "Nope"])).status_code == 404
