from datetime import timedelta

import pytest
from django.utils import timezone

from tests import factories as f

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/items/web-01/"


def test_reader_sees_state_policy_and_recovery_points(login, reader, item):
    f.make_rp(item, consistency="application", tags=["daily", "weekly"], in_vault_tier=True)
    f.make_rp(item, consistency="crash", in_snapshot_tier=False, in_vault_tier=True)
    response = login(reader).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        "Protected",
        "DefaultPolicy",
        "Snapshot and vault",
        "Vault",
        "Application-consistent",
        "Crash-consistent",
        "weekly",
    ):
        assert text in html


def test_it_hides_soft_deleted_recovery_points(login, reader, item):
    f.make_rp(item, soft_deleted_at=timezone.now(), time=timezone.now() - timedelta(days=3))
    response = login(reader).get(URL)
    assert list(response.context["rps"]) == []


def test_unknown_vm_is_404(login, reader, item):
    assert login(reader).get("/vaults/prod/items/nope/").status_code == 404


def test_outsider_gets_404(login, outsider, item):
    assert login(outsider).get(URL).status_code == 404


def test_it_keeps_its_query_budget(assert_query_budget, reader, item):
    def make_rows(n):
        now = timezone.now()
        for i in range(n):
            f.make_rp(item, time=now - timedelta(hours=i + 1))

    assert_query_budget(reader, URL, make_rows, 7, marker="Crash-consistent")
