"""A damaged file's download through gunicorn as `make run` serves it (portal/gunicorn_conf.py,
portal.wsgi): the client sees a failed transfer, never a whole one, with or without a
Content-Length. The same as `tests/pages/test_file_recovery.py` checks under `runserver`."""

import http.client
from urllib.parse import urlencode

import pytest

from tests.backups.conftest import lifeboat_env, shared_db  # noqa: F401  (fixtures)
from tests.gunicorn import serving
from tests.pages.test_file_recovery import (
    BLOB,
    damaged_blob,  # noqa: F401  (fixture)
    opened,  # noqa: F401  (fixture)
    urls,
)


@pytest.fixture
def gunicorn(request, tmp_path):
    """gunicorn over this test's database and stores (`shared_db`: a file, for SQLite), set
    up before any row of the test is written."""
    request.getfixturevalue("shared_db")
    log = tmp_path / "gunicorn.log"
    with serving("portal.wsgi", lifeboat_env({}), log) as port:
        yield port, log


@pytest.mark.django_db(transaction=True)
def test_through_gunicorn_a_damaged_download_never_looks_whole(gunicorn, request):
    port, log = gunicorn
    client, rp, files = request.getfixturevalue("damaged_blob")
    cookie = f"sessionid={client.cookies['sessionid'].value}"

    def get(path):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        url = urls(rp)["files-download"] + "?" + urlencode({"disk": -1, "path": path})
        conn.request("GET", url, headers={"Cookie": cookie})
        return conn.getresponse()

    response = get(BLOB)
    assert response.status == 200, log.read_text()[-2000:]
    assert int(response.getheader("Content-Length")) == len(files[BLOB])
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        response.read()
    # A folder's zip has no Content-Length: only the reset tells the client it is not whole.
    folder = get("/data/sub")
    assert folder.status == 200 and folder.getheader("Content-Length") is None
    with pytest.raises(ConnectionResetError):
        folder.read()
