"""The server of `manage.py runserver` (portal/server.py) over real sockets: a body that fails
after the headers went out ends in a reset connection, never in a response that looks whole
(and never in a kept-alive connection that leaves the client waiting); whole responses keep
HTTP/1.1 keep-alive."""

import http.client
import socketserver
import threading

import pytest
from django.core.servers.basehttp import WSGIRequestHandler

from portal import server
from portal.management.commands.runserver import Command

BODY = b"x" * 5000


def app(environ, start_response):
    """/whole answers BODY; /cut fails after part of it, with or without a Content-Length."""
    path = environ["PATH_INFO"]
    headers = [("Content-Type", "application/octet-stream")]
    if path != "/cut-unsized":
        headers.append(("Content-Length", str(len(BODY))))
    start_response("200 OK", headers)

    def body():
        yield BODY[:1000]
        if path.startswith("/cut"):
            raise OSError("the disk failed part-way")
        yield BODY[1000:]

    return body()


@pytest.fixture
def port():
    # As `runserver` builds it: its server class, threaded.
    cls = type(
        "Server", (socketserver.ThreadingMixIn, Command.server_cls), {"daemon_threads": True}
    )
    httpd = cls(("127.0.0.1", 0), WSGIRequestHandler)
    httpd.set_app(app)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def get(conn: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
    conn.request("GET", path)
    return conn.getresponse()


def test_runserver_uses_this_server():
    assert Command.server_cls is server.WSGIServer


@pytest.mark.parametrize("path", ["/cut", "/cut-unsized"])
def test_a_body_that_fails_part_way_resets_the_connection(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    response = get(conn, path)
    assert response.status == 200
    # Not a clean end (the unsized body would look complete) and not a wait for the rest.
    with pytest.raises(ConnectionResetError):
        response.read()


def test_whole_responses_keep_the_connection(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert get(conn, "/whole").read() == BODY
    first = conn.sock
    assert get(conn, "/whole").read() == BODY
    assert conn.sock is first  # the same connection served both
