"""The recycle-bin lists: envelope, fields, and queries that do not grow with the rows."""

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests import factories as f
from tests.lifecycle.conftest import client
from vaults.models import BinReason, ItemState


def fill(vault, host, n: int, by) -> None:
    """n soft-deleted items with one RP each, and n RPs cut early from a live item."""
    now = timezone.now()
    live = f.make_protected_item(vault, f.make_vm(host))
    for _ in range(n):
        item = f.make_protected_item(
            vault,
            f.make_vm(host),
            state=ItemState.SOFT_DELETED,
            deleted_at=now,
            deleted_by=by,
            purge_at=now + timedelta(days=14),
        )
        f.make_rp(item, soft_deleted_at=now, purge_at=item.purge_at)
        f.make_rp(
            live,
            soft_deleted_at=now,
            soft_deleted_by=by,
            soft_delete_reason=BinReason.RETENTION_REDUCED,
            purge_at=now + timedelta(days=3, hours=1),
        )


def test_recycle_bin_lists_have_flat_queries(vault, host, admin_user, reader):
    urls = [
        (reader, reverse("api-vault-recycle-bin", args=[vault.name])),
        (admin_user, reverse("api-recycle-bin")),
    ]
    counts = {url: [] for _, url in urls}
    for n in (3, 25):
        fill(vault, host, n, admin_user)
        for user, url in urls:
            with CaptureQueriesContext(connection) as ctx:
                r = client(user).get(url, {"page_size": 100})
            assert r.status_code == 200, r.data
            counts[url].append(len(ctx.captured_queries))
    for url, (small, large) in counts.items():
        assert small == large <= 6, (url, counts)
    r = client(reader).get(urls[0][1], {"page_size": 100})
    assert r.data["count"] == 56
    first = r.data["results"][0]  # soonest purge first: an RP cut early
    assert first["kind"] == "recovery_point" and first["reason"] == "retention_reduced"
    assert (first["deleted_by"], first["days_left"]) == ("admin", 4)
    last = r.data["results"][-1]
    assert (last["kind"], last["recovery_points"], last["days_left"]) == ("item", 1, 14)
    assert set(first) == {
        "kind",
        "vault",
        "vm_name",
        "recovery_point",
        "recovery_point_time",
        "recovery_points",
        "reason",
        "deleted_by",
        "deleted_at",
        "purge_at",
        "days_left",
    }
