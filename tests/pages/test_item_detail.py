from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, Operation, Status
from tests import factories as f
from vaults.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/vaults/prod/items/web-01/"
BACKUP = "/vaults/prod/items/web-01/backup/"
REPAIR = "/vaults/prod/items/web-01/repair-extension/"
HTMX = {"HTTP_HX_REQUEST": "true"}


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
        "Weekly",
    ):
        assert text in html
    # Codes never reach the screen: the tags are in plain words.
    assert ">weekly<" not in html and ">on_demand<" not in html


def test_recovery_points_are_listed_newest_first_with_their_tier(login, reader, item):
    now = timezone.now()
    snap = f.make_rp(item, time=now)
    both = f.make_rp(item, time=now - timedelta(hours=1), in_vault_tier=True)
    vault_only = f.make_rp(
        item,
        time=now - timedelta(days=3),
        in_snapshot_tier=False,
        in_vault_tier=True,
        tags=["on_demand"],
        # A day picked as "retain until" expires at the next midnight of the policy's zone.
        retain_until=(now + timedelta(days=21)).replace(hour=0, minute=0, second=0, microsecond=0),
    )
    response = login(reader).get(URL)
    assert [rp.pk for rp in response.context["rps"]] == [snap.pk, both.pk, vault_only.pk]
    html = response.content.decode()
    assert html.index(f'id="rp-{snap.pk}"') < html.index(f'id="rp-{vault_only.pk}"')
    # Shown as the day it is kept through, the day the picker chose.
    assert "retain until " + (now + timedelta(days=20)).strftime("%Y-%m-%d") in html
    assert "On demand" in html


def test_it_hides_soft_deleted_recovery_points(login, reader, item):
    f.make_rp(item, soft_deleted_at=timezone.now(), time=timezone.now() - timedelta(days=3))
    response = login(reader).get(URL)
    assert list(response.context["rps"]) == []


def test_unknown_vm_is_404(login, reader, item):
    assert login(reader).get("/vaults/prod/items/nope/").status_code == 404


def test_outsider_gets_404(login, outsider, item):
    assert login(outsider).get(URL).status_code == 404


def test_reader_is_offered_neither_backup_restore_nor_files(login, reader, rp):
    html = login(reader).get(URL).content.decode()
    assert BACKUP not in html
    assert "/restore/" not in html and "/files/" not in html


def test_operator_is_offered_backup_restore_and_files(login, operator, rp):
    html = login(operator).get(URL).content.decode()
    assert BACKUP in html
    assert reverse("rp-restore", args=["prod", "web-01", rp.pk]) in html
    assert reverse("rp-files", args=["prod", "web-01", rp.pk]) in html


def test_it_lists_the_items_recent_jobs(login, reader, vault, item):
    f.make_job(vault, item, status=Status.FAILED, error_code="freeze_failed")
    f.make_job(vault, item, operation=Operation.RESTORE)
    jobs = login(reader).get(URL).context["jobs"]
    assert [j.operation for j in jobs] == ["restore", "backup"]


# -- live section ------------------------------------------------------------------------------


def test_page_polls_while_a_job_of_the_item_runs(login, reader, vault, item):
    running = f.make_job(vault, item, status=Status.IN_PROGRESS, bytes_total=100, bytes_done=40)
    html = login(reader).get(URL).content.decode()
    assert 'hx-trigger="every 2s"' in html
    assert 'id="running-job"' in html and 'aria-valuenow="40"' in html
    fragment = login(reader).get(URL, **HTMX)
    assert fragment.status_code == 200
    assert fragment.content.decode().lstrip().startswith('<div id="item-live"')
    # A poll carries the summary out of band, and never the recovery points.
    assert 'id="item-summary" hx-swap-oob="true"' in fragment.content.decode()
    assert "rp-row" not in fragment.content.decode()
    running.status = Status.COMPLETED
    running.save()
    # Finished: htmx is told to stop polling, and the recovery points to fetch themselves.
    f.make_rp(item)
    done = login(reader).get(URL, **HTMX)
    assert done.status_code == 286 and done["HX-Trigger"] == "rps-changed"
    html = done.content.decode()
    assert "every 2s" not in html
    rps = login(reader).get("/vaults/prod/items/web-01/rps/", **HTMX).content.decode()
    assert rps.lstrip().startswith('<section id="rp-browser"') and "rp-row" in rps


def test_page_does_not_poll_without_a_running_job(login, reader, job):
    assert "every 2s" not in login(reader).get(URL).content.decode()


# -- backup now --------------------------------------------------------------------------------


def test_operator_backs_up_now_and_lands_on_the_job(login, operator, item):
    response = login(operator).post(BACKUP, {"retain_until": ""})
    job = Job.objects.get(operation=Operation.BACKUP)
    assert response.status_code == 302
    assert response["Location"] == reverse("job-detail", args=["prod", job.pk])
    assert job.created_by == operator and job.params["on_demand"] is True
    # Default: kept 30 days.
    expiry = timezone.datetime.fromisoformat(job.params["retain_until"])
    assert timedelta(days=29, hours=23) <= expiry - timezone.now() <= timedelta(days=31)
    assert AuditEvent.objects.filter(action="backup.now").count() == 1


def test_backup_now_keeps_the_chosen_date(login, operator, item):
    day = (timezone.now() + timedelta(days=90)).date()
    login(operator).post(BACKUP, {"retain_until": day.isoformat()})
    job = Job.objects.get()
    assert timezone.datetime.fromisoformat(job.params["retain_until"]).date() > day


def test_backup_now_form_defaults_to_thirty_days(login, operator, item):
    html = login(operator).get(URL).content.decode()
    default = (timezone.localdate() + timedelta(days=30)).isoformat()
    assert f'value="{default}"' in html
    assert login(operator).get(BACKUP).status_code == 200


def test_past_retain_until_shows_a_field_error_and_starts_nothing(login, operator, item):
    response = login(operator).post(BACKUP, {"retain_until": "2001-01-01"})
    assert response.status_code == 400
    assert response.context["form"].errors["retain_until"]
    assert not Job.objects.exists()


def test_a_second_backup_is_refused_while_one_runs(login, operator, vault, item):
    f.make_job(vault, item, status=Status.IN_PROGRESS)
    response = login(operator).post(BACKUP, {})
    assert response.status_code == 400
    assert "already in progress" in response.content.decode()
    assert Job.objects.count() == 1


def test_htmx_backup_now_swaps_the_live_section_in(login, operator, item):
    response = login(operator).post(BACKUP, {}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="item-live"')
    assert 'hx-trigger="every 2s"' in html and 'id="running-job"' in html
    # While the backup runs the form is not offered again.
    assert 'id="backup-now"' not in html


def test_reader_may_not_back_up(login, reader, item):
    assert login(reader).post(BACKUP, {}).status_code == 403
    assert not Job.objects.exists()


def test_outsider_backup_is_404(login, outsider, item):
    assert login(outsider).post(BACKUP, {}).status_code == 404


# -- backup extension --------------------------------------------------------------------------


def _failed(vm):
    vm.extension_state = "failed"
    vm.extension_code = "pre_script_not_found"
    vm.extension_message = "/opt/pre.sh does not exist"
    vm.save()


def test_failed_extension_is_shown_with_repair(login, operator, vm, item):
    _failed(vm)
    html = login(operator).get(URL).content.decode()
    assert "Pre-script not found" in html and "/opt/pre.sh does not exist" in html
    assert REPAIR in html and "hx-confirm" in html


def test_operator_repairs_the_extension(login, operator, vm, item):
    _failed(vm)
    response = login(operator).post(REPAIR)
    assert response.status_code == 302
    vm.refresh_from_db()
    assert (vm.extension_state, vm.extension_code, vm.extension_message) == (
        "not_installed",
        "",
        "",
    )
    event = AuditEvent.objects.get(action="vm.extension_repair")
    assert event.before["extension_code"] == "pre_script_not_found"
    assert event.vault_name == "prod"


def test_reader_may_not_repair(login, reader, vm, item):
    _failed(vm)
    assert "Repair" not in login(reader).get(URL).content.decode()
    assert login(reader).post(REPAIR).status_code == 403
    vm.refresh_from_db()
    assert vm.extension_state == "failed"


def test_repair_is_post_only(login, operator, item):
    assert login(operator).get(REPAIR).status_code == 405


# -- query budget ------------------------------------------------------------------------------


def test_it_keeps_its_query_budget(assert_query_budget, reader, vault, item):
    def make_rows(n):
        now = timezone.now()
        for i in range(n):
            f.make_rp(
                item,
                time=now - timedelta(hours=i + 1),
                in_vault_tier=i % 2 == 0,
                in_snapshot_tier=i % 3 != 0,
            )
            f.make_job(vault, item, created_by=reader)
        f.make_job(vault, item, status=Status.IN_PROGRESS)

    # The page shows one page of recovery points (20), whatever the item holds; one query
    # more gives the last verified date over all of them.
    assert_query_budget(reader, URL, make_rows, 13, marker=None)
    from django.test import Client

    client = Client()
    client.force_login(reader)
    html = client.get(URL).content.decode()
    assert html.count('class="rp-row"') == 20 and "Page 1 of 3" in html


def test_backup_now_comes_before_stop_protection_in_reading_order(login, contributor, item):
    html = login(contributor).get(URL).content.decode()
    assert html.index('id="backup-now"') < html.index('id="stop-form"')
    assert html.index('href="#main"') < html.index('id="site-nav"')


def test_the_retain_until_day_picked_is_the_day_shown(login, operator, item):
    """The picker and the recovery point agree: the day is kept through in the policy's zone."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    item.policy.timezone = "Asia/Tokyo"
    item.policy.save()
    day = (timezone.now() + timedelta(days=40)).date()
    client = login(operator)
    client.post(BACKUP, {"retain_until": day.isoformat()})
    expiry = datetime.fromisoformat(Job.objects.get().params["retain_until"])
    local = expiry.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (local.date(), local.hour, local.minute) == (day + timedelta(days=1), 0, 0)
    f.make_rp(item, tags=["on_demand"], retain_until=expiry, expires_at=expiry)
    html = client.get(URL).content.decode()
    assert f"retain until {day.isoformat()}" in html
