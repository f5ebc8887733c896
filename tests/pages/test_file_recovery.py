import http.client
import io
import zipfile
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from django.utils import timezone

import engine
from security.models import Alert
from tests.damage import flip_chunk, flip_chunks_holding
from vaults.models import AuditEvent, FileRecoverySession

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def urls(rp):
    args = ["prod", rp.protected_item.vm.name, rp.pk]
    return {
        name: reverse(f"rp-{name}", args=args)
        for name in ("files", "files-session", "files-session-end", "files-download")
    }


def body(response) -> bytes:
    return b"".join(response.streaming_content)


# -- access and sessions (no store needed) -----------------------------------------------------


def test_without_a_session_only_the_open_button_is_shown(login, operator, rp):
    response = login(operator).get(urls(rp)["files"])
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="open-session"' in html
    assert 'id="disk-picker"' not in html and 'id="end-session"' not in html


def test_reader_gets_403(login, reader, rp):
    u = urls(rp)
    client = login(reader)
    assert client.get(u["files"]).status_code == 403
    assert client.post(u["files-session"]).status_code == 403
    assert client.get(u["files-download"], {"disk": -1, "path": "/etc/hostname"}).status_code == 403
    assert not FileRecoverySession.objects.exists()


def test_outsider_gets_404(login, outsider, rp):
    u = urls(rp)
    assert login(outsider).get(u["files"]).status_code == 404
    assert login(outsider).post(u["files-session"]).status_code == 404


def test_session_actions_are_post_only(login, operator, rp):
    u = urls(rp)
    assert login(operator).get(u["files-session"]).status_code == 405
    assert login(operator).get(u["files-session-end"]).status_code == 405


def test_download_without_a_session_is_refused(login, operator, rp):
    response = login(operator).get(urls(rp)["files-download"], {"disk": -1, "path": "/x"})
    assert response.status_code == 403
    assert "No open file-recovery session" in response.content.decode()


def test_an_expired_session_is_refused_with_a_clear_message(login, operator, vault, rp):
    FileRecoverySession.objects.create(
        vault=vault,
        recovery_point=rp,
        user=operator,
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    client = login(operator)
    page = client.get(urls(rp)["files"]).content.decode()
    assert 'id="session-expired"' in page and "expired" in page
    assert 'id="disk-picker"' not in page
    response = client.get(urls(rp)["files-download"], {"disk": -1, "path": "/etc/hostname"})
    assert response.status_code == 403
    assert "expired" in response.content.decode()


def test_a_session_of_another_user_does_not_count(login, operator, contributor, vault, rp):
    FileRecoverySession.objects.create(
        vault=vault,
        recovery_point=rp,
        user=contributor,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    assert 'id="open-session"' in login(operator).get(urls(rp)["files"]).content.decode()


# -- a real recovery point ---------------------------------------------------------------------


@pytest.fixture
def opened(login, operator, real_rp):
    rp, files, _ = real_rp
    client = login(operator)
    response = client.post(urls(rp)["files-session"])
    assert response.status_code == 302
    assert response["Location"] == urls(rp)["files"]
    return client, rp, files


@pytest.mark.django_db(transaction=True)
def test_operator_opens_browses_and_ends_a_session(opened, operator):
    client, rp, _ = opened
    u = urls(rp)
    page = client.get(u["files"]).content.decode()
    assert 'id="end-session"' in page and "Session open until" in page
    assert AuditEvent.objects.filter(action="file_recovery.open").count() == 1

    root = client.get(u["files"], {"disk": "-1"})
    names = [e["name"] for e in root.context["browse"]["entries"]]
    assert "data" in names and "etc" in names
    # Directories first, each a plain link that htmx also follows.
    html = root.content.decode()
    assert 'href="?disk=-1&amp;path=%2Fdata"' in html
    assert 'hx-get="?disk=-1&amp;path=%2Fdata"' in html

    sub = client.get(u["files"], {"disk": "-1", "path": "/data/sub"}, **HTMX)
    fragment = sub.content.decode()
    assert fragment.lstrip().startswith('<div id="listing">')
    assert "report.txt" in fragment and "deeper/" in fragment
    sub = client.get(u["files"], {"disk": "-1", "path": "/data/sub"})
    crumbs = [label for label, _ in sub.context["browse"]["crumbs"]]
    assert crumbs == ["/", "data", "sub"]
    entry = next(e for e in sub.context["browse"]["entries"] if e["name"] == "report.txt")
    assert entry["entry"].kind == "file" and entry["entry"].size == len(real_report())

    ended = client.post(u["files-session-end"])
    assert ended.status_code == 302
    assert 'id="open-session"' in client.get(u["files"]).content.decode()
    assert AuditEvent.objects.filter(action="file_recovery.end").count() == 1


def real_report() -> bytes:
    from tests.pages.conftest import real_files

    return real_files()["/data/sub/report.txt"]


@pytest.mark.django_db(transaction=True)
def test_download_gives_the_files_bytes(opened):
    client, rp, files = opened
    response = client.get(
        urls(rp)["files-download"], {"disk": "-1", "path": "/data/sub/deeper/blob.bin"}
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"] == 'attachment; filename="blob.bin"'
    assert body(response) == files["/data/sub/deeper/blob.bin"]
    assert AuditEvent.objects.filter(action="file_recovery.download").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_non_ascii_name_is_sent_with_rfc_5987(opened):
    client, rp, files = opened
    path = "/data/ünïcode näme.txt"
    response = client.get(urls(rp)["files-download"], {"disk": "-1", "path": path})
    disposition = response["Content-Disposition"]
    assert disposition == "attachment; filename*=utf-8''%C3%BCn%C3%AFcode%20n%C3%A4me.txt"
    assert body(response) == files[path]


@pytest.mark.django_db(transaction=True)
def test_a_folder_downloads_as_a_zip(opened):
    client, rp, files = opened
    response = client.get(urls(rp)["files-download"], {"disk": "-1", "path": "/data/sub"})
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="sub.zip"'
    archive = zipfile.ZipFile(io.BytesIO(body(response)))
    contents = {n: archive.read(n) for n in archive.namelist() if not n.endswith("/")}
    by_tail = {name.split("sub/", 1)[-1]: data for name, data in contents.items()}
    assert by_tail == {
        "report.txt": files["/data/sub/report.txt"],
        "deeper/blob.bin": files["/data/sub/deeper/blob.bin"],
    }


@pytest.mark.django_db(transaction=True)
def test_a_missing_path_and_a_bad_disk_are_shown_not_crashed(opened):
    client, rp, _ = opened
    u = urls(rp)
    missing = client.get(u["files"], {"disk": "-1", "path": "/nope"})
    assert missing.status_code == 400
    assert missing.context["browse"]["error"]
    bad_disk = client.get(u["files"], {"disk": "7"})
    assert (
        bad_disk.status_code == 400
        and "not in this recovery point" in bad_disk.context["browse"]["error"]
    )
    download = client.get(u["files-download"], {"disk": "-1", "path": "/nope"})
    assert download.status_code == 400
    assert not AuditEvent.objects.filter(action="file_recovery.download").exists()


# -- damaged data: never served as a success ---------------------------------------------------

BLOB, REPORT = "/data/sub/deeper/blob.bin", "/data/sub/report.txt"


def collect_until_failure(response) -> bytes:
    """The bytes a client would have received before the stream failed (it must fail)."""
    received = bytearray()
    with pytest.raises(engine.EngineError):
        for piece in response.streaming_content:
            received += piece
    return bytes(received)


@pytest.fixture
def damaged_blob(opened, real_rp):
    """`opened`, with one byte flipped in the stored chunk that holds the end of blob.bin
    (its first MiB, which a download reads first, stays intact)."""
    client, rp, files = opened
    flip_chunks_holding(rp, -1, real_rp[2], files[BLOB][-1024:-512])
    return client, rp, files


@pytest.mark.django_db(transaction=True)
def test_damage_in_the_middle_of_a_file_aborts_its_download(damaged_blob, caplog):
    client, rp, files = damaged_blob
    response = client.get(urls(rp)["files-download"], {"disk": "-1", "path": BLOB})
    assert response.status_code == 200
    # The client knows how much to expect, so a cut-short body can never pass as the file.
    assert int(response["Content-Length"]) == len(files[BLOB])
    received = collect_until_failure(response)
    assert 0 < len(received) < len(files[BLOB])
    assert received == files[BLOB][: len(received)]

    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(str(rp.pk) in m and BLOB in m and "OS disk" in m for m in logged), logged
    failed = AuditEvent.objects.get(action="file_recovery.download_failed")
    assert failed.object_id == str(rp.pk) and failed.after["path"] == BLOB
    assert "damaged" in failed.after["error"]
    alert = Alert.objects.get(kind="corruption")
    assert (alert.severity, alert.object_type, alert.object_id) == (
        "sev1",
        "RecoveryPoint",
        str(rp.pk),
    )
    assert BLOB in alert.message

    # Another attempt fails the same way and counts on the same alert: one per recovery point.
    collect_until_failure(client.get(urls(rp)["files-download"], {"disk": "-1", "path": BLOB}))
    alert = Alert.objects.get(kind="corruption")
    assert alert.occurrences == 2

    page = client.get(urls(rp)["files"]).content.decode()
    assert 'id="damage-notice"' in page and BLOB in page


@pytest.mark.django_db(transaction=True)
def test_a_damaged_folder_download_is_never_a_valid_zip(damaged_blob):
    client, rp, files = damaged_blob
    response = client.get(urls(rp)["files-download"], {"disk": "-1", "path": "/data/sub"})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    received = collect_until_failure(response)
    assert received  # the archive had started
    assert not zipfile.is_zipfile(io.BytesIO(received))
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(received))
    assert Alert.objects.filter(kind="corruption", object_id=str(rp.pk)).count() == 1
    failed = AuditEvent.objects.get(action="file_recovery.download_failed")
    assert failed.after["path"] == "/data/sub"


@pytest.mark.django_db(transaction=True)
def test_damage_at_the_start_of_a_file_is_refused_before_any_byte(opened, real_rp):
    client, rp, files = opened
    flip_chunks_holding(rp, -1, real_rp[2], files[REPORT][:512])
    response = client.get(urls(rp)["files-download"], {"disk": "-1", "path": REPORT})
    assert response.status_code == 409
    assert not response.streaming
    error = response.context["browse"]["error"]
    assert "damaged" in error and REPORT in error
    assert 'id="damage-notice"' in response.content.decode()
    assert Alert.objects.filter(kind="corruption", object_id=str(rp.pk)).count() == 1
    assert AuditEvent.objects.filter(action="file_recovery.download_failed").count() == 1
    assert not AuditEvent.objects.filter(action="file_recovery.download").exists()


@pytest.mark.django_db(transaction=True)
def test_over_http_the_client_sees_a_failed_transfer_never_a_whole_one(damaged_blob, runserver):
    client, rp, files = damaged_blob
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    def get(path):
        conn = http.client.HTTPConnection("localhost", runserver.port, timeout=30)
        url = urls(rp)["files-download"] + "?" + urlencode({"disk": -1, "path": path})
        conn.request("GET", url, headers={"Cookie": cookie})
        return conn.getresponse()

    response = get(BLOB)
    assert response.status == 200
    assert int(response.getheader("Content-Length")) == len(files[BLOB])
    # The connection is reset part-way: whatever arrived is less than the Content-Length.
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        response.read()
    folder = get("/data/sub")
    assert folder.status == 200 and folder.getheader("Content-Length") is None
    with pytest.raises(ConnectionResetError):
        folder.read()


@pytest.mark.django_db(transaction=True)
def test_a_damaged_file_system_is_shown_not_crashed(opened):
    client, rp, _ = opened
    flip_chunk(rp, -1, 0)  # the superblock's chunk
    response = client.get(urls(rp)["files"], {"disk": "-1"})
    assert response.status_code == 409
    assert "damaged" in response.context["browse"]["error"]
    assert 'id="damage-notice"' in response.content.decode()
    htmx = client.get(urls(rp)["files"], {"disk": "-1"}, **HTMX)
    assert htmx.status_code == 200 and "damaged" in htmx.content.decode()  # htmx swaps it in
    assert Alert.objects.get(kind="corruption").occurrences == 2
