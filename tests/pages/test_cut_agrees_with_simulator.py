"""A policy change's confirmation (page and API dry run) and the simulator list the same
recovery points expiring earlier, on a vault whose RPs are in every state that matters; and
saving bins exactly those the list says expire at once."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from inventory.models import VirtualMachine
from policies.retention import retention_decision
from tests import factories as f
from tests.pages.test_policy_form import data
from vaults.models import BinReason, ItemState, RecoveryPoint, RetentionMode

pytestmark = pytest.mark.django_db

EDIT = reverse("policy-edit", args=["prod", "DefaultPolicy"])
SIMULATE = reverse("policy-simulate", args=["prod"])
API = "/api/v1/vaults/prod/policies/DefaultPolicy/"
API_SIMULATE = reverse("api-policy-simulate", args=["prod"])
# DefaultPolicy keeps dailies 30 days and snapshots 2; the change keeps 10 and 1.
SHORTER = {"daily_days": "10", "instant_restore_days": "1"}


def _scheduled(item, slot, *, vault_tier=True, transfer_due=False, **fields):
    """An RP as a backup of `slot` leaves it: tags and expiry from the item's policy."""
    decision = retention_decision(
        item.policy.representation(), slot, is_daily_last=vault_tier or transfer_due
    )
    fields.setdefault("expires_at", decision.expires_at)
    return f.make_rp(
        item,
        time=slot + timedelta(minutes=3),
        slot=slot,
        tags=list(decision.tags),
        in_vault_tier=vault_tier,
        transfer_due=transfer_due,
        snapshot_expires_at=decision.snapshot_expires_at,
        **fields,
    )


@pytest.fixture
def history(vault, item, host):
    """{"cut": RPs the change expires earlier, "at_once": those of them already past their new
    expiry, "kept": RPs it must leave alone}."""
    now = timezone.now()

    def ago(days: float):
        return now - timedelta(days=days, hours=1)

    # Twelve daily vault-tier RPs: those of 10 days or more ago expire at once under 10 days.
    daily = {d: _scheduled(item, ago(d)) for d in range(1, 13)}
    # A snapshot-only one (its day's vault RP is another): 2 days -> 1, not yet past.
    snapshot = _scheduled(item, now - timedelta(hours=12), vault_tier=False)
    # Not transferred yet, but bound for the vault tier: its day's representative.
    due = _scheduled(item, ago(13), vault_tier=False, transfer_due=True)
    # No stored expiry: any date is earlier.
    undated = _scheduled(item, ago(14), expires_at=None)
    kept = [
        # On demand: kept until its own date.
        f.make_rp(
            item,
            time=ago(5.5),
            tags=["on_demand"],
            retain_until=now + timedelta(days=25),
            expires_at=now + timedelta(days=25),
        ),
        # In the recycle bin already: not listed.
        _scheduled(item, ago(20), soft_deleted_at=now, soft_delete_reason=BinReason.ITEM_DELETED),
        # The latest: always kept.
        _scheduled(item, now - timedelta(minutes=30)),
    ]
    # A second VM on the same policy, and a stopped one kept forever.
    other = f.make_protected_item(vault, f.make_vm(host, "web2"))
    others = {d: _scheduled(other, ago(d)) for d in (2, 11)}
    kept.append(_scheduled(other, now - timedelta(hours=1)))
    forever = f.make_protected_item(
        vault,
        f.make_vm(host, "old3"),
        state=ItemState.PROTECTION_STOPPED,
        retention_mode=RetentionMode.RETAIN_FOREVER,
    )
    kept += [_scheduled(forever, ago(d)) for d in (3, 12, 4)]
    assert VirtualMachine.objects.filter(protections__policy=item.policy).count() == 3
    cut = [*daily.values(), snapshot, due, undated, *others.values()]
    at_once = [daily[10], daily[11], daily[12], due, undated, others[11]]
    return {"cut": cut, "at_once": at_once, "kept": kept}


def _rows(html: str, row_class: str) -> list[str]:
    return re.findall(rf'<tr class="{row_class}" data-rp="([0-9a-f-]+)"', html)


def test_confirmation_and_simulator_list_the_same_points(login, api, contributor, history):
    client = login(contributor)
    # The page's confirmation.
    page = client.post(EDIT, data(name="DefaultPolicy", **SHORTER))
    assert page.status_code == 200
    confirmation = page.context["cut"]["expiring"]
    # The simulator, as the confirmation's button asks it (no script: its own page).
    form = {**data(name="DefaultPolicy", **SHORTER), "editing": "DefaultPolicy", "months": "1"}
    simulated = client.post(SIMULATE, form)
    assert simulated.status_code == 200 and "<html" in simulated.content.decode()
    assert simulated.context["sim"].earlier == confirmation
    # What each shows: the same rows, in the same order.
    ids = [c.rp_id for c in confirmation]
    assert _rows(page.content.decode(), "cut-row") == ids
    assert _rows(simulated.content.decode(), "earlier-row") == ids
    fragment = client.post(SIMULATE, form, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and _rows(fragment, "earlier-row") == ids
    # Exactly the points the rules cut, nothing they keep.
    assert set(ids) == {str(rp.pk) for rp in history["cut"]}
    assert not set(ids) & {str(rp.pk) for rp in history["kept"]}
    at_once = {c.rp_id for c in confirmation if c.expires_now}
    assert at_once == {str(rp.pk) for rp in history["at_once"]}
    # The API: the dry run and the simulation agree with the page, date for date.
    body = api(contributor).get(API).json()
    body.pop("protected_items")
    body["retention"]["daily"]["days"] = 10
    body["instant_restore_days"] = 1
    dry = api(contributor).put(API + "?dry_run=true", body, format="json").json()
    sim = api(contributor).post(
        API_SIMULATE, {"name": "DefaultPolicy", "policy": body}, format="json"
    )
    assert sim.status_code == 200, sim.data
    from_dry = [
        (e["recovery_point"], e["new_expires_at"], e["expires_now"]) for e in dry["expiring"]
    ]
    from_sim = [
        (
            e["recovery_point"],
            e["expires_at_after_change"].isoformat().replace("+00:00", "Z"),
            e["expires_now"],
        )
        for e in sim.data["earlier_expiries"]
    ]
    assert [r[0] for r in from_dry] == ids
    assert from_sim == from_dry
    # Saved: exactly the points the list said expire at once go to the recycle bin.
    saved = client.post(
        EDIT, {**data(name="DefaultPolicy", **SHORTER), "confirm_cut": page.context["cut"]["token"]}
    )
    assert saved.status_code == 302
    reduced = RecoveryPoint.objects.filter(soft_delete_reason=BinReason.RETENTION_REDUCED)
    binned = {str(pk) for pk in reduced.values_list("pk", flat=True)}
    assert binned == at_once


def test_the_confirmation_offers_the_simulator(login, contributor, history):
    page = login(contributor).post(EDIT, data(name="DefaultPolicy", **SHORTER))
    html = page.content.decode()
    button = html[html.index('id="retention-cut-simulate"') :].split(">")[0]
    assert f'formaction="{SIMULATE}"' in button and f'hx-post="{SIMULATE}"' in button
    assert 'name="editing" value="DefaultPolicy"' in button
