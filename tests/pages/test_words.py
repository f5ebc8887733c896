"""One mapping of codes to plain words (`portal.words`) and one unit system (IEC), used by
every template through the `words` and `iec` filters."""

import pytest

from jobs.models import Operation, Status
from portal.templatetags.lifeboat import iec, kept_through
from portal.words import words
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("code", "text"),
    [
        ("completed_with_warnings", "Completed with warnings"),
        ("frozen_read", "Read while frozen"),
        ("live_read", "Read live (not point-in-time)"),
        ("policy.update", "Policy changed"),
        ("protection.stop", "Protection stopped"),
        ("on_demand", "On demand"),
        ("sun", "Sunday"),
        ("freeze_failed", "Freeze failed"),
        ("snapshot", "Snapshot tier"),
        ("some_new_code", "Some new code"),
        ("widget.frobnicate", "Widget frobnicate"),
        ("", ""),
        (None, ""),
    ],
)
def test_codes_become_plain_words(code, text):
    assert words(code) == text


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1536, "1.5 KiB"),
        (18 << 20, "18.0 MiB"),
        (3 << 30, "3.0 GiB"),
        (None, "—"),
    ],
)
def test_bytes_are_in_iec_units(n, text):
    assert iec(n) == text


def test_a_retain_until_at_local_midnight_is_kept_through_the_day_before():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    midnight = datetime(2026, 12, 11, 0, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert kept_through(midnight, "Europe/Berlin").astimezone(ZoneInfo("Europe/Berlin")).day == 10
    noon = datetime(2026, 12, 11, 12, 0, tzinfo=ZoneInfo("UTC"))
    assert kept_through(noon, "UTC") == noon


def test_no_code_reaches_the_job_pages(login, reader, vault, item):
    f.make_job(
        vault,
        item,
        status=Status.COMPLETED_WITH_WARNINGS,
        warnings=[{"code": "freeze_failed", "message": "fsfreeze: no"}],
    )
    f.make_job(
        vault,
        item,
        operation=Operation.GARBAGE_COLLECT,
        status=Status.FAILED,
        error_code="worker_lost",
    )
    client = login(reader)
    html = client.get("/vaults/prod/jobs/").content.decode()
    for code in ("completed_with_warnings", "garbage_collect"):
        assert f">{code}<" not in html
    job = vault.jobs.get(operation=Operation.BACKUP)
    html = client.get(f"/vaults/prod/jobs/{job.pk}/").content.decode()
    assert "Freeze failed" in html and ">freeze_failed<" not in html
