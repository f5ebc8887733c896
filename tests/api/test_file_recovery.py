"""File-level recovery through the API: sessions, directory listings and downloads of a real
recovery point (ext4 images backed up in this process)."""

import io
import zipfile
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.urls import reverse
from django.utils import timezone

import engine
from security.models import Alert
from tests import factories as f
from tests.api.conftest import DATA_FILES, OS_FILES, needs_mkfs
from tests.damage import flip_chunk, flip_chunks_holding
from vaults.models import AuditEvent, FileRecoverySession


def sessions_url(rp):
    return reverse("api-file-recovery-session-list", args=["prod", "web-01", rp.pk])


def session_url(rp, session_id):
    return reverse("api-file-recovery-session-detail", args=["prod", "web-01", rp.pk, session_id])


def files_url(rp):
    return reverse("api-recovery-point-files", args=["prod", "web-01", rp.pk])


def download_url(rp):
    return reverse("api-recovery-point-file-download", args=["prod", "web-01", rp.pk])


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def open_session(rp, user, **fields) -> FileRecoverySession:
    fields.setdefault("expires_at", timezone.now() + timedelta(hours=12))
    return FileRecoverySession.objects.create(
        vault=rp.vault, recovery_point=rp, user=user, **fields
    )


# -- with a real recovery point -----------------------------------------------------------------


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_operator_opens_a_session_browses_and_ends_it(api, backed_up, operator):
    client = api(operator)
    r = client.post(sessions_url(backed_up))
    assert r.status_code == 201, r.data
    assert r.data["recovery_point"] == str(backed_up.pk) and r.data["is_open"] is True
    expires = timezone.datetime.fromisoformat(r.data["expires_at"])
    assert timedelta(hours=11) < expires - timezone.now() <= timedelta(hours=12)
    session_id = r.data["id"]
    assert AuditEvent.objects.filter(action="file_recovery.open", actor=operator).exists()

    r = client.get(files_url(backed_up), {"disk": -1})
    assert r.status_code == 200, r.data
    assert (r.data["disk"], r.data["partition"], r.data["path"]) == (-1, None, "/")
    assert r.data["partitions"] == []  # a whole-disk file system
    names = {e["name"]: e for e in r.data["entries"]}
    assert {"etc", "home", "srv"} <= set(names)
    assert names["etc"]["kind"] == "dir" and names["etc"]["path"] == "/etc"

    r = client.get(files_url(backed_up), {"disk": "-1", "partition": "", "path": "/home/ops"})
    assert r.status_code == 200, r.data
    entries = {e["name"]: e for e in r.data["entries"]}
    notes = entries["notes.txt"]
    assert notes["kind"] == "file" and notes["size"] == len(OS_FILES["home/ops/notes.txt"])
    assert notes["path"] == "/home/ops/notes.txt" and notes["mtime"] is not None
    assert notes["mode"] & 0o170000 == 0o100000

    r = client.get(sessions_url(backed_up))
    assert [s["id"] for s in r.data["results"]] == [session_id]

    assert client.delete(session_url(backed_up, session_id)).status_code == 204
    assert AuditEvent.objects.filter(action="file_recovery.end", actor=operator).exists()
    r = client.get(files_url(backed_up), {"disk": -1})
    assert r.status_code == 403 and "open one first" in r.data["detail"]
    assert client.get(sessions_url(backed_up)).data["results"][0]["is_open"] is False


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_operator_downloads_a_file_with_its_bytes(api, backed_up, operator):
    open_session(backed_up, operator)
    client = api(operator)
    r = client.get(download_url(backed_up), {"disk": -1, "path": "/home/ops/bin.dat"})
    assert r.status_code == 200
    assert r.streaming
    assert body(r) == OS_FILES["home/ops/bin.dat"]
    assert r["Content-Disposition"] == 'attachment; filename="bin.dat"'
    r = client.get(download_url(backed_up), {"disk": 0, "path": "/db/table.dat"})
    assert body(r) == DATA_FILES["db/table.dat"]
    event = AuditEvent.objects.get(action="file_recovery.download", after__path="/db/table.dat")
    assert event.actor == operator


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_it_names_a_non_ascii_file_per_rfc_5987(api, backed_up, operator):
    open_session(backed_up, operator)
    r = api(operator).get(download_url(backed_up), {"disk": -1, "path": "/srv/café menu.txt"})
    assert r.status_code == 200
    assert body(r) == b"espresso\n"
    assert f"filename*=utf-8''{quote('café menu.txt')}" in r["Content-Disposition"]


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_operator_downloads_a_folder_as_a_zip(api, backed_up, operator):
    open_session(backed_up, operator)
    r = api(operator).get(
        download_url(backed_up), {"disk": -1, "path": "/home"}, HTTP_ACCEPT="application/zip"
    )
    assert r.status_code == 200
    assert r["Content-Type"] == "application/zip"
    assert ".zip" in r["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(body(r)))
    contents = {i.filename: archive.read(i) for i in archive.infolist() if not i.is_dir()}
    by_name = {name.rsplit("/", 1)[-1]: data for name, data in contents.items()}
    assert by_name["notes.txt"] == OS_FILES["home/ops/notes.txt"]
    assert by_name["bin.dat"] == OS_FILES["home/ops/bin.dat"]
    assert all(name.startswith("home/") for name in contents), sorted(contents)


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_it_names_a_bad_path(api, backed_up, operator):
    open_session(backed_up, operator)
    client = api(operator)
    for url, path in (
        (files_url(backed_up), "/nope"),
        (files_url(backed_up), "/etc/hostname"),
        (download_url(backed_up), "/etc/nope"),
    ):
        r = client.get(url, {"disk": -1, "path": path})
        assert r.status_code == 400 and list(r.data) == ["path"], (url, path, r.data)
    r = client.get(download_url(backed_up), {"disk": -1})
    assert r.status_code == 400 and list(r.data) == ["path"]


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_it_names_a_partition_the_disk_does_not_have(api, backed_up, operator):
    open_session(backed_up, operator)
    r = api(operator).get(files_url(backed_up), {"disk": -1, "partition": 3})
    assert r.status_code == 400 and list(r.data) == ["partition"], r.data


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_it_cannot_open_a_session_when_the_key_is_unavailable(
    api, backed_up, operator, settings, tmp_path
):
    other = tmp_path / "other.key"
    other.write_bytes(b"\x01" * 32)
    settings.LIFEBOAT = {**settings.LIFEBOAT, "MASTER_KEY_FILE": other}
    r = api(operator).post(sessions_url(backed_up))
    assert r.status_code == 400
    assert r.data["detail"].startswith("The vault's encryption key is unavailable")
    assert not FileRecoverySession.objects.exists()


# -- sessions and refusals (catalog-only recovery point) ----------------------------------------


def test_listing_needs_an_open_session(api, rp, operator):
    client = api(operator)
    for url in (files_url(rp), download_url(rp)):
        r = client.get(url, {"disk": -1, "path": "/etc"})
        assert r.status_code == 403, url
        assert "No open file-recovery session" in r.data["detail"]


def test_another_users_session_does_not_count(api, rp, operator, contributor):
    open_session(rp, contributor)
    assert api(operator).get(files_url(rp), {"disk": -1}).status_code == 403


def test_an_expired_session_is_refused(api, rp, operator):
    open_session(rp, operator, expires_at=timezone.now() - timedelta(seconds=1))
    r = api(operator).get(files_url(rp), {"disk": -1})
    assert r.status_code == 403 and "expired" in r.data["detail"]
    r = api(operator).get(download_url(rp), {"disk": -1, "path": "/etc/hostname"})
    assert r.status_code == 403


def test_an_ended_session_is_refused(api, rp, operator):
    session = open_session(rp, operator)
    client = api(operator)
    assert client.delete(session_url(rp, session.pk)).status_code == 204
    assert client.get(files_url(rp), {"disk": -1}).status_code == 403
    # Ending it twice is no error.
    assert client.delete(session_url(rp, session.pk)).status_code == 204


def test_it_names_a_bad_disk(api, rp, operator):
    open_session(rp, operator)
    client = api(operator)
    for disk in ("7", "os", None):
        params = {"path": "/"} if disk is None else {"disk": disk}
        r = client.get(files_url(rp), params)
        assert r.status_code == 400 and list(r.data) == ["disk"], (disk, r.data)
    r = client.get(download_url(rp), {"disk": 9, "path": "/etc/hostname"})
    assert r.status_code == 400 and list(r.data) == ["disk"]


def test_it_cannot_open_a_session_on_an_unreadable_point(api, rp, operator):
    # A catalog row whose store does not hold the point: refused with a message, no session.
    r = api(operator).post(sessions_url(rp))
    assert r.status_code == 400 and "detail" in r.data
    assert not FileRecoverySession.objects.exists()


def test_it_refuses_a_soft_deleted_point(api, rp, operator):
    rp.soft_deleted_at = timezone.now()
    rp.save(update_fields=["soft_deleted_at"])
    r = api(operator).post(sessions_url(rp))
    assert r.status_code == 400 and "undelete" in r.data["detail"]


def test_it_lists_only_the_callers_sessions(api, rp, operator, contributor):
    mine = open_session(rp, operator)
    open_session(rp, contributor)
    r = api(operator).get(sessions_url(rp))
    assert r.status_code == 200
    assert [s["id"] for s in r.data["results"]] == [str(mine.pk)]


def test_one_cannot_end_another_users_session(api, rp, operator, contributor):
    theirs = open_session(rp, contributor)
    assert api(operator).delete(session_url(rp, theirs.pk)).status_code == 404
    theirs.refresh_from_db()
    assert theirs.ended_at is None


def test_reader_gets_403(api, rp, reader):
    open_session(rp, reader)
    client = api(reader)
    assert client.post(sessions_url(rp)).status_code == 403
    assert client.get(sessions_url(rp)).status_code == 403
    assert client.get(files_url(rp), {"disk": -1}).status_code == 403
    assert client.get(download_url(rp), {"disk": -1, "path": "/a"}).status_code == 403


def test_outsider_gets_404(api, rp, outsider):
    client = api(outsider)
    assert client.post(sessions_url(rp)).status_code == 404
    assert client.get(files_url(rp), {"disk": -1}).status_code == 404
    assert client.get(download_url(rp), {"disk": -1, "path": "/a"}).status_code == 404


def test_it_answers_404_for_a_point_of_another_item(api, rp, vault, host, operator):
    other = f.make_protected_item(vault, f.make_vm(host, name="db-01"))
    other_rp = f.make_rp(other)
    assert api(operator).post(sessions_url(other_rp)).status_code == 404


def test_it_keeps_the_session_list_query_count_flat(api, rp, operator, assert_flat_queries):
    assert_flat_queries(
        api(operator),
        sessions_url(rp),
        lambda n: [open_session(rp, operator) for _ in range(n)],
        budget=6,
    )


# -- damaged data -------------------------------------------------------------------------------


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_damaged_file_is_refused_with_409_before_any_byte(api, backed_up, operator, real_disks):
    open_session(backed_up, operator)
    table = DATA_FILES["db/table.dat"]
    flip_chunks_holding(backed_up, 0, real_disks[0], table[len(table) // 2 :][:4096])
    r = api(operator).get(download_url(backed_up), {"disk": 0, "path": "/db/table.dat"})
    assert r.status_code == 409, r
    assert "damaged" in r.json()["detail"] and "/db/table.dat" in r.json()["detail"]
    alert = Alert.objects.get(kind="corruption")
    assert alert.object_id == str(backed_up.pk) and alert.severity == "sev1"
    assert AuditEvent.objects.filter(action="file_recovery.download_failed").count() == 1


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_damaged_folder_streams_no_valid_zip(api, backed_up, operator, real_disks):
    open_session(backed_up, operator)
    table = DATA_FILES["db/table.dat"]
    flip_chunks_holding(backed_up, 0, real_disks[0], table[len(table) // 2 :][:4096])
    r = api(operator).get(download_url(backed_up), {"disk": 0, "path": "/"})
    assert r.status_code == 200 and r["Content-Type"] == "application/zip"
    received = bytearray()
    with pytest.raises(engine.EngineError):
        for piece in r.streaming_content:
            received += piece
    assert not zipfile.is_zipfile(io.BytesIO(bytes(received)))
    assert Alert.objects.filter(kind="corruption").count() == 1


@needs_mkfs
@pytest.mark.django_db(transaction=True)
def test_a_damaged_file_system_lists_as_409_not_500(api, backed_up, operator):
    open_session(backed_up, operator)
    flip_chunk(backed_up, -1, 0)  # the superblock's chunk
    r = api(operator).get(files_url(backed_up), {"disk": -1})
    assert r.status_code == 409
    assert "damaged" in r.json()["detail"]
    assert Alert.objects.get(kind="corruption").object_id == str(backed_up.pk)
