"""The audit log pages: a vault's (owners and site admins) and the site's (site admins), with
filters, pagination and the API's CSV export."""

import pytest
from django.urls import reverse

from tests import factories as f
from vaults import audit
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/audit/"


def record(vault, actor, action="vault.update", n=0):
    audit.record(action, actor=actor, vault=vault, obj=vault, after={"n": n})


def test_owner_sees_the_vaults_events(login, owner, vault):
    record(vault, owner, "vault.update")
    body = login(owner).get(URL).content.decode()
    assert 'title="vault.update">Vault changed</td>' in body
    assert 'id="audit-export"' in body
    assert reverse("api-vault-audit-export", kwargs={"vault_name": "prod"}) in body


def test_contributor_gets_403(login, contributor, vault):
    assert login(contributor).get(URL).status_code == 403


def test_filters_by_action_actor_type_and_dates(login, owner, contributor, vault):
    record(vault, owner, "vault.update")
    record(vault, contributor, "policy.update")
    client = login(owner)
    rows = lambda q: client.get(URL + q).content.decode().count('class="audit-row"')  # noqa: E731
    total = AuditEvent.objects.filter(vault=vault).count()
    assert rows("") == total
    assert rows("?action=policy.update") == 1
    assert (
        rows("?action=vault.")
        == AuditEvent.objects.filter(vault=vault, action__startswith="vault.").count()
    )
    assert rows("?actor=contributor") == 1
    assert (
        rows("?object_type=Vault")
        == AuditEvent.objects.filter(vault=vault, object_type="Vault").count()
    )
    assert rows("?since=2999-01-01") == 0
    assert rows("?until=2999-01-01") == total
    body = client.get(URL + "?since=nonsense").content.decode()
    assert "Give an ISO date" in body


def test_export_link_carries_the_filters_and_answers_csv(login, owner, vault):
    record(vault, owner, "policy.update")
    client = login(owner)
    response = client.get(URL + "?action=policy.update")
    export = response.context["export_url"]
    assert export.endswith("?action=policy.update")
    csv = b"".join(client.get(export).streaming_content).decode()
    assert csv.splitlines()[0].startswith("time,actor,action")
    assert len(csv.splitlines()) == 2


def test_it_paginates(login, owner, vault):
    for i in range(60):
        record(vault, owner, n=i)
    client = login(owner)
    assert client.get(URL).content.decode().count('class="audit-row"') == 50
    assert "page=2" in client.get(URL).content.decode()
    assert client.get(URL + "?page=2").content.decode().count('class="audit-row"') >= 10


def test_site_audit_for_site_admins(login, admin_user, owner, vault):
    other = f.make_vault("other", owner=admin_user)
    record(other, admin_user, "vault.update")
    client = login(admin_user)
    body = client.get(reverse("site-audit") + "?vault=other").content.decode()
    assert "<td>other</td>" in body and "<td>prod</td>" not in body
    assert login(owner).get(reverse("site-audit")).status_code == 403


def test_it_keeps_its_query_budget(assert_query_budget, owner, vault):
    def make_rows(n):
        for i in range(n):
            record(vault, owner, n=i)

    assert_query_budget(owner, URL, make_rows, 7, marker='class="audit-row"')
