import pytest
from django.urls import reverse

from policies.models import BackupPolicy
from tests import factories as f
from vaults.models import AuditEvent

LIST = reverse("api-policy-list", args=["prod"])


def detail(name):
    return reverse("api-policy-detail", args=["prod", name])


def rep(**overrides):
    base = {
        "name": "Nightly",
        "kind": "standard",
        "timezone": "Europe/Berlin",
        "consistency": "default",
        "schedule": {"frequency": "daily", "time": "02:00"},
        "instant_restore_days": 2,
        "retention": {"daily": {"days": 30}},
    }
    base.update(overrides)
    return base


WEEKLY = {
    "schedule": {"frequency": "weekly", "time": "01:00", "weekdays": ["sun"]},
    "retention": {"weekly": {"weeks": 12, "weekdays": ["sun"]}},
}


def test_reader_lists_policies_with_their_use(api, item, reader):
    r = api(reader).get(LIST)
    assert r.status_code == 200
    (default,) = r.data["results"]
    assert default == {
        **BackupPolicy.objects.get(vault=item.vault).representation(),
        "protected_items": 1,
    }


def test_contributor_creates_a_policy(api, vault, contributor):
    r = api(contributor).post(LIST, rep())
    assert r.status_code == 201, r.data
    assert r.data == {**rep(), "protected_items": 0}
    assert vault.policies.get(name="Nightly").timezone == "Europe/Berlin"
    assert AuditEvent.objects.filter(action="policy.create", actor=contributor).exists()


def test_it_fills_defaults(api, vault, contributor):
    r = api(contributor).post(
        LIST, {"name": "Min", "schedule": rep()["schedule"], "retention": rep()["retention"]}
    )
    assert r.status_code == 201, r.data
    assert (r.data["kind"], r.data["instant_restore_days"], r.data["timezone"]) == (
        "standard",
        2,
        "UTC",
    )


def test_operator_gets_403_creating_a_policy(api, vault, operator):
    assert api(operator).post(LIST, rep()).status_code == 403


def test_outsider_gets_404(api, vault, outsider):
    assert api(outsider).get(LIST).status_code == 404
    assert api(outsider).get(detail("DefaultPolicy")).status_code == 404
    assert api(outsider).post(LIST, rep()).status_code == 404


def test_it_answers_404_for_an_unknown_policy(api, vault, reader):
    assert api(reader).get(detail("Nope")).status_code == 404


@pytest.mark.parametrize(("days", "ok"), [(6, False), (7, True), (9999, True), (10000, False)])
def test_it_checks_both_edges_of_daily_retention(api, vault, contributor, days, ok):
    r = api(contributor).post(LIST, rep(retention={"daily": {"days": days}}))
    if ok:
        assert r.status_code == 201, r.data
    else:
        assert r.status_code == 400 and list(r.data) == ["retention.daily.days"]


@pytest.mark.parametrize(("days", "ok"), [(0, False), (1, True), (5, True), (6, False)])
def test_it_checks_both_edges_of_standard_instant_restore(api, vault, contributor, days, ok):
    r = api(contributor).post(LIST, rep(instant_restore_days=days))
    if ok:
        assert r.status_code == 201, r.data
    else:
        assert r.status_code == 400 and list(r.data) == ["instant_restore_days"]


def test_standard_weekly_needs_five_instant_restore_days(api, vault, contributor):
    client = api(contributor)
    r = client.post(LIST, rep(instant_restore_days=2, **WEEKLY))
    assert r.status_code == 400 and list(r.data) == ["instant_restore_days"]
    r = client.post(LIST, rep(instant_restore_days=5, **WEEKLY))
    assert r.status_code == 201, r.data


def test_it_refuses_hourly_on_standard(api, vault, contributor):
    hourly = {
        "frequency": "hourly",
        "interval_hours": 4,
        "window_start": "08:00",
        "window_hours": 12,
    }
    r = api(contributor).post(LIST, rep(schedule=hourly))
    assert r.status_code == 400 and "schedule.frequency" in r.data
    r = api(contributor).post(LIST, rep(kind="enhanced", schedule=hourly, instant_restore_days=7))
    assert r.status_code == 201, r.data


def test_it_refuses_weekdays_on_a_daily_schedule(api, vault, contributor):
    schedule = {"frequency": "daily", "time": "02:00", "weekdays": ["mon"]}
    r = api(contributor).post(LIST, rep(schedule=schedule))
    assert r.status_code == 400 and list(r.data) == ["schedule.weekdays"]


def test_it_names_unknown_and_mistyped_fields(api, vault, contributor):
    r = api(contributor).post(LIST, rep(colour="red", instant_restore_days="2"))
    assert r.status_code == 400
    assert set(r.data) == {"colour", "instant_restore_days"}


def test_it_refuses_a_duplicate_name(api, vault, contributor):
    r = api(contributor).post(LIST, rep(name="DefaultPolicy"))
    assert r.status_code == 400 and list(r.data) == ["name"]


def test_it_refuses_a_changed_read_only_extra(api, vault, contributor):
    r = api(contributor).post(LIST, rep(protected_items=3))
    assert r.status_code == 400 and r.data == {"protected_items": ["This field is read-only."]}


def test_it_accepts_a_get_put_back_unchanged(api, item, contributor):
    f.make_policy(
        item.vault,
        "Rich",
        kind="enhanced",
        instant_restore_days=7,
        retention={
            "daily": {"days": 30},
            "weekly": {"weeks": 12, "weekdays": ["sun"]},
            "monthly": {"months": 60, "weeks": ["first"], "weekdays": ["sun"]},
            "yearly": {"years": 10, "months": ["jan"], "days": [1, "last"]},
        },
    )
    client = api(contributor)
    for name in ("DefaultPolicy", "Rich"):
        before = client.get(detail(name)).data
        r = client.put(detail(name), before)
        assert r.status_code == 200, r.data
        assert r.data == before
        assert client.get(detail(name)).data == before


def test_put_replaces_the_whole_policy(api, vault, contributor):
    r = api(contributor).put(detail("DefaultPolicy"), {"name": "DefaultPolicy", **WEEKLY})
    assert r.status_code == 200, r.data
    assert r.data["schedule"] == WEEKLY["schedule"]
    assert r.data["instant_restore_days"] == 5


def test_put_with_missing_fields_names_them(api, vault, contributor):
    r = api(contributor).put(detail("DefaultPolicy"), {"name": "DefaultPolicy"})
    assert r.status_code == 400 and set(r.data) == {"schedule", "retention"}


def test_patch_replaces_the_schedule_whole(api, vault, contributor):
    client = api(contributor)
    f.make_policy(vault, "Weekly", instant_restore_days=5, **WEEKLY)
    # A schedule is never merged key by key: naming only the time drops frequency and weekdays.
    r = client.patch(detail("Weekly"), {"schedule": {"time": "03:00"}})
    assert r.status_code == 400 and "schedule.frequency" in r.data
    r = client.patch(
        detail("Weekly"),
        {
            "schedule": {"frequency": "daily", "time": "03:00"},
            "retention": {"daily": {"days": 14}},
            "instant_restore_days": 2,
        },
    )
    assert r.status_code == 200, r.data
    assert r.data["schedule"] == {"frequency": "daily", "time": "03:00"}
    assert r.data["retention"] == {"daily": {"days": 14}}
    assert r.data["name"] == "Weekly" and r.data["timezone"] == "UTC"


def test_patch_renames_a_policy(api, vault, contributor):
    r = api(contributor).patch(detail("DefaultPolicy"), {"name": "Daily"})
    assert r.status_code == 200, r.data
    assert api(contributor).get(detail("Daily")).status_code == 200


def test_patch_keeps_the_policy_when_invalid(api, vault, contributor):
    r = api(contributor).patch(detail("DefaultPolicy"), {"retention": {"daily": {"days": 3}}})
    assert r.status_code == 400 and list(r.data) == ["retention.daily.days"]
    assert vault.policies.get(name="DefaultPolicy").retention == {"daily": {"days": 30}}


def test_it_answers_400_to_a_non_object_body(api, vault, contributor):
    r = api(contributor).patch(detail("DefaultPolicy"), [1, 2])
    assert r.status_code == 400 and "non_field_errors" in r.data


def test_contributor_deletes_an_unused_policy(api, vault, contributor):
    f.make_policy(vault, "Spare")
    assert api(contributor).delete(detail("Spare")).status_code == 204
    assert not vault.policies.filter(name="Spare").exists()


def test_it_refuses_deleting_a_policy_in_use(api, item, contributor):
    r = api(contributor).delete(detail("DefaultPolicy"))
    assert r.status_code == 400
    assert "move them to another policy first" in r.data["detail"]


def test_it_keeps_the_policy_list_query_count_flat(api, vault, reader, assert_flat_queries):
    assert_flat_queries(
        api(reader), LIST, lambda n: [f.make_policy(vault) for _ in range(n)], budget=4
    )


def test_it_refuses_reducing_retention_in_an_immutable_vault(api, vault, contributor):
    vault.immutability = "unlocked"
    vault.save()
    client = api(contributor)
    r = client.patch(detail("DefaultPolicy"), {"retention": {"daily": {"days": 7}}})
    assert r.status_code == 409, r.data
    assert r.data["rule"] == "immutability" and "immutable" in r.data["detail"]
    r = client.patch(detail("DefaultPolicy"), {"retention": {"daily": {"days": 60}}})
    assert r.status_code == 200, r.data
