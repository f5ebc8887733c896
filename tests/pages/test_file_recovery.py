import io
import zipfile
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

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
