from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from tests import factories as f

LIST = reverse("api-recovery-point-list", args=["prod", "web-01"])


def detail(rp_id, vm_name="web-01"):
    return reverse("api-recovery-point-detail", args=["prod", vm_name, rp_id])


def test_reader_lists_recovery_points_newest_first(api, item, reader):
    old = f.make_rp(item, time=timezone.now() - timedelta(days=1))
    new = f.make_rp(item, in_vault_tier=True)
    r = api(reader).get(LIST)
    assert r.status_code == 200
    assert [p["id"] for p in r.data["results"]] == [str(new.pk), str(old.pk)]
    assert r.data["results"][0]["type"] == "snapshot_and_vault"
    assert r.data["results"][1]["type"] == "snapshot"


def test_it_leaves_soft_deleted_points_out(api, item, reader):
    f.make_rp(item, soft_deleted_at=timezone.now())
    kept = f.make_rp(item)
    r = api(reader).get(LIST)
    assert [p["id"] for p in r.data["results"]] == [str(kept.pk)]


def test_it_shows_one_recovery_point(api, rp, reader):
    r = api(reader).get(detail(rp.pk))
    assert r.status_code == 200
    assert {
        "id",
        "time",
        "type",
        "consistency",
        "expires_at",
        "tags",
        "disks",
        "retain_until",
        "included_luns",
        "excluded_luns",
        "size_bytes",
    } <= set(r.data)
    assert r.data["consistency"] == "crash" and r.data["tags"] == ["daily"]


def test_it_answers_404_for_a_point_of_another_item(api, rp, vault, host, reader):
    other = f.make_protected_item(vault, f.make_vm(host, name="db-01"))
    assert api(reader).get(detail(rp.pk, "db-01")).status_code == 404
    assert api(reader).get(detail(f.make_rp(other).pk)).status_code == 404


def test_outsider_gets_404(api, rp, outsider):
    assert api(outsider).get(LIST).status_code == 404
    assert api(outsider).get(detail(rp.pk)).status_code == 404


def test_it_keeps_the_recovery_point_list_query_count_flat(api, item, reader, assert_flat_queries):
    assert_flat_queries(api(reader), LIST, lambda n: [f.make_rp(item) for _ in range(n)], budget=5)


def test_it_shows_the_tiers_and_whether_a_transfer_is_due(api, item, reader):
    rp = f.make_rp(item, in_snapshot_tier=True, in_vault_tier=False, transfer_due=True)
    d = api(reader).get(detail(rp.pk)).data
    assert d["tiers"] == {"snapshot": True, "vault": False}
    assert d["type"] == "snapshot" and d["transfer_due"] is True
    rp.in_snapshot_tier, rp.in_vault_tier, rp.transfer_due = False, True, False
    rp.save()
    d = api(reader).get(detail(rp.pk)).data
    assert d["tiers"] == {"snapshot": False, "vault": True}
    assert d["type"] == "vault" and d["transfer_due"] is False
