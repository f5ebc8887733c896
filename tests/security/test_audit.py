"""The audit log over REST: who reads it, filters, CSV export; append-only."""

import csv
import io

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.urls import reverse

from vaults import audit
from vaults.models import AuditEvent
from vaults.services.policies import create_policy
from vaults.services.vaults import update_vault

pytestmark = pytest.mark.django_db

URL = reverse("api-vault-audit-list", args=["prod"])


@pytest.fixture
def events(vault, owner, contributor):
    update_vault(vault, by=owner, soft_delete_days=30)
    update_vault(vault, by=contributor, soft_delete_days=40)
    create_policy(
        vault,
        {
            "name": "Nightly",
            "schedule": {"frequency": "daily", "time": "03:00"},
            "retention": {"daily": {"days": 7}},
        },
        by=contributor,
    )


@pytest.mark.parametrize(
    "persona, code",
    [
        ("admin", 200),
        ("owner", 200),
        ("contributor", 403),
        ("operator", 403),
        ("reader", 403),
        ("approver", 404),
        ("outsider", 404),
    ],
)
def test_owners_and_site_admins_read_a_vaults_log(api, personas, events, persona, code):
    assert api(personas[persona]).get(URL).status_code == code
    assert api(personas[persona]).get(URL, {"format": "csv"}).status_code == code


def test_the_log_shows_before_and_after(api, owner, events):
    r = api(owner).get(URL, {"action": "vault.update"})
    assert r.data["count"] == 2
    newest = r.data["results"][0]
    assert newest["actor"] == "contributor" and newest["vault"] == "prod"
    assert newest["before"]["soft_delete_days"] == 30 and newest["after"]["soft_delete_days"] == 40


def test_filters(api, owner, events):
    assert api(owner).get(URL, {"actor": "owner"}).data["count"] == 1
    assert api(owner).get(URL, {"action": "policy."}).data["count"] == 1
    assert api(owner).get(URL, {"object_type": "BackupPolicy"}).data["count"] == 1
    assert api(owner).get(URL, {"since": "2000-01-01"}).data["count"] == 3
    assert api(owner).get(URL, {"until": "2000-01-01"}).data["count"] == 0
    assert api(owner).get(URL, {"since": "2999-01-01T00:00:00Z"}).data["count"] == 0
    r = api(owner).get(URL, {"since": "yesterday"})
    assert r.status_code == 400 and list(r.data) == ["since"]
    page = api(owner).get(URL, {"page_size": 1})
    assert page.data["count"] == 3 and page.data["next"]


def test_csv_export(api, owner, vault, events):
    audit.record("note", actor=owner, vault=vault, after={"text": "=HYPERLINK(1)"})
    for response in (
        api(owner).get(URL, {"format": "csv", "action": "vault.update"}),
        api(owner).get(
            reverse("api-vault-audit-export", args=["prod"]), {"action": "vault.update"}
        ),
    ):
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
        assert rows[0][:3] == ["time", "actor", "action"]
        assert [r[1] for r in rows[1:]] == ["contributor", "owner"]
    whole = api(owner).get(URL, {"format": "csv", "action": "note"})
    text = b"".join(whole.streaming_content).decode()
    assert "=HYPERLINK" not in text.replace("'{", "").split("\n")[1][:1]  # no formula cells
    assert "HYPERLINK" in text


@pytest.mark.parametrize("persona, code", [("admin", 200), ("owner", 403), ("outsider", 403)])
def test_the_site_wide_log_is_for_site_admins(api, personas, events, persona, code):
    assert api(personas[persona]).get(reverse("api-audit-list")).status_code == code
    assert api(personas[persona]).get(reverse("api-audit-export")).status_code == code


def test_site_wide_log_filters_by_vault(api, admin_user, events):
    r = api(admin_user).get(reverse("api-audit-list"), {"vault": "prod", "action": "vault.update"})
    assert r.data["count"] == 2


def test_the_log_is_append_only(vault, owner, events):
    event = AuditEvent.objects.filter(vault=vault).first()
    event.action = "tampered"
    with pytest.raises(PermissionDenied):
        event.save()
    with pytest.raises(PermissionDenied):
        event.delete()
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.filter(vault=vault).update(action="tampered")
    with pytest.raises(PermissionDenied):
        AuditEvent.objects.filter(vault=vault).delete()
    assert not AuditEvent.objects.filter(action="tampered").exists()


def test_security_operations_are_audited(api, vault, owner, item, operator):
    from jobs import runner
    from jobs.models import Status
    from security.models import Alert
    from tests import factories as f

    job = f.make_job(vault, item, status=Status.IN_PROGRESS)
    runner.finish(job, Status.FAILED, code="x", message="boom")
    alert = Alert.objects.get()
    api(operator).post(reverse("api-alert-acknowledge", args=["prod", alert.pk]), {})
    e = AuditEvent.objects.get(action="alert.acknowledge")
    assert e.actor == operator and e.before == {"status": "active"}
    assert e.after["status"] == "acknowledged"


def test_every_csv_cell_is_escaped(api, admin_user):
    # A row from before addresses were checked (SQLite keeps any text in an IP column; the
    # inet column of PostgreSQL refuses it) and names that start with formula characters:
    # no column is safe by construction.
    formula = '=HYPERLINK("http://evil.example","x")'
    ip = formula if connection.vendor == "sqlite" else "192.0.2.1"
    AuditEvent.objects.create(
        actor_name="@admin",
        action="note",
        object_type="+Thing",
        object_id="-1",
        object_repr="\tname",
        source_ip=ip,
        after=-5,
    )
    response = api(admin_user).get(reverse("api-audit-export"), {"action": "note"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    cells = rows[1]
    assert [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")] == []
    assert cells[1:] == [
        "'@admin",
        "note",
        "",
        "'+Thing",
        "'-1",
        "'\tname",
        "'" + ip if ip == formula else ip,
        "",
        "'-5",
    ]
