from django.urls import reverse

from tests import factories as f
from vaults.models import AuditEvent, GuardApprover


def url(*args):
    name = "api-vault-approver-list" if not args else "api-vault-approver-detail"
    return reverse(name, args=["prod", *args])


def test_admin_lists_guard_approvers(api, vault, admin_user):
    r = api(admin_user).get(url())
    assert r.status_code == 200
    assert [g["user"] for g in r.data["results"]] == ["approver"]
    assert r.data["results"][0]["assigned_by"] == "admin"


def test_owner_gets_403(api, vault, owner):
    assert api(owner).get(url()).status_code == 403
    assert api(owner).post(url(), {"user": "reader"}).status_code == 403


def test_outsider_and_approver_get_404(api, vault, outsider, approver):
    assert api(outsider).get(url()).status_code == 404
    assert api(approver).get(url()).status_code == 404


def test_admin_assigns_and_removes_a_guard_approver(api, vault, admin_user, outsider):
    client = api(admin_user)
    r = client.post(url(), {"user": "outsider"})
    assert r.status_code == 201, r.data
    ga = GuardApprover.objects.get(vault=vault, user=outsider)
    assert ga.assigned_by == admin_user
    assert client.post(url(), {"user": "outsider"}).status_code == 400
    assert client.delete(url(ga.pk)).status_code == 204
    assert not GuardApprover.objects.filter(pk=ga.pk).exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"guard_approver.create", "guard_approver.delete"} <= actions


def test_it_keeps_the_guard_approver_list_query_count_flat(
    api, vault, admin_user, assert_flat_queries
):
    def make(n):
        for _ in range(n):
            GuardApprover.objects.create(vault=vault, user=f.make_user(), assigned_by=admin_user)

    assert_flat_queries(api(admin_user), url(), make, budget=3)
