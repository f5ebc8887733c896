"""The recycle bin of a vault (readers+) and of the site (site admins): what is in it, who
deleted it, when, why and for how long; Undelete (contributors+); Purge now only when allowed."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests import factories as f
from vaults.models import Vault
from vaults.protection import stop_protection

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/recycle-bin/"


def binned(vault, host, name, by):
    item = f.make_protected_item(vault, f.make_vm(host, name=name))
    f.make_rp(item)
    return stop_protection(item, by=by, mode="delete_data")


def test_it_lists_deleted_items_with_who_when_and_days_left(
    login, reader, contributor, vault, host
):
    binned(vault, host, "gone-01", contributor)
    response = login(reader).get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    assert "gone-01" in body
    assert "Protection stopped with delete data" in body
    assert "<td>contributor</td>" in body
    assert '<td class="num">14</td>' in body
    assert "Undelete" not in body  # readers do not undelete
    assert "Purge now" not in body  # soft delete is enabled


def test_it_lists_recovery_points_cut_by_a_retention_reduction(login, reader, vault, item):
    now = timezone.now()
    f.make_rp(
        item,
        soft_deleted_at=now,
        soft_delete_reason="retention_reduced",
        purge_at=now + timedelta(days=14),
    )
    body = login(reader).get(URL).content.decode()
    assert "Retention reduced" in body
    assert "Recovery point of" in body


def test_contributor_undeletes_from_the_bin(login, contributor, vault, host):
    item = binned(vault, host, "gone-01", contributor)
    client = login(contributor)
    assert "Undelete" in client.get(URL).content.decode()
    response = client.post(reverse("item-undelete", args=["prod", "gone-01"]), {"next": URL})
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.state == "protection_stopped"
    assert 'class="bin-row"' not in client.get(URL).content.decode()


def test_operator_cannot_undelete(login, operator, contributor, vault, host):
    binned(vault, host, "gone-01", contributor)
    response = login(operator).post(reverse("item-undelete", args=["prod", "gone-01"]))
    assert response.status_code == 403


def test_purge_now_is_offered_only_when_soft_delete_is_disabled(login, contributor, vault, host):
    item = binned(vault, host, "gone-01", contributor)
    client = login(contributor)
    # Refused while soft delete is enabled, with the API's message.
    response = client.post(reverse("item-purge", args=["prod", "gone-01"]), follow=True)
    assert "Disable soft delete to purge it early" in response.content.decode()
    Vault.objects.filter(pk=vault.pk).update(soft_delete_state="disabled")
    assert "Purge now" in client.get(URL).content.decode()
    response = client.post(reverse("item-purge", args=["prod", "gone-01"]))
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.purge_at <= timezone.now()


def test_always_on_never_offers_purge(login, admin_user, contributor, vault, host):
    Vault.objects.filter(pk=vault.pk).update(soft_delete_state="always_on")
    binned(vault, host, "gone-01", contributor)
    body = login(admin_user).get(URL).content.decode()
    assert "Purge now" not in body
    assert "nobody can purge early" in body


def test_site_recycle_bin_lists_every_vault(login, admin_user, contributor, vault, host):
    other = f.make_vault("other", owner=admin_user)
    other.linked_hosts.add(host)
    binned(vault, host, "gone-01", contributor)
    binned(other, host, "gone-02", admin_user)
    body = login(admin_user).get(reverse("site-recycle-bin")).content.decode()
    assert "gone-01" in body and "gone-02" in body
    assert reverse("vault-recycle-bin", args=["other"]) in body


def test_site_recycle_bin_is_for_site_admins(login, owner, vault):
    assert login(owner).get(reverse("site-recycle-bin")).status_code == 403


def test_it_keeps_its_query_budget(assert_query_budget, contributor, vault, host):
    made = []

    def make_rows(n):
        for _ in range(n):
            made.append(binned(vault, host, f"gone-{len(made):02d}", contributor))

    assert_query_budget(contributor, URL, make_rows, 7, marker='class="bin-row"')
