"""Both servers over real sockets: `manage.py runserver` (portal/server.py, `make dev`) and
gunicorn with `make run`'s settings (portal/gunicorn_conf.py) serving an application wrapped
as portal/wsgi.py wraps Django's. A body that fails after the headers went out ends in a reset
connection, never in a response that looks whole (and never in a kept-alive connection that
leaves the client waiting). Whole responses keep HTTP/1.1 keep-alive on the development
server; gunicorn closes the connection after each whole response, so that a waiting request
goes to whichever worker is free (portal/gunicorn_conf.py)."""

import http.client
import os
import socket
import socketserver
import threading

import pytest
from django.core.servers.basehttp import WSGIRequestHandler

from portal import server, wsgi
from portal.management.commands.runserver import Command
from tests.gunicorn import REPO, serving
from tests.web_server_app import BODY, app


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory):
    """gunicorn as `make run` starts it (one worker is enough here), serving tests/web_server_app."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with serving("tests.web_server_app:application", env, log) as port:
        yield port


@pytest.fixture(params=["runserver", "gunicorn"])
def any_port(request):
    return request.getfixturevalue("port" if request.param == "runserver" else "gunicorn_port")


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


def test_the_application_of_every_server_resets_failed_bodies():
    assert isinstance(wsgi.application, server.ResetOnFailure)


@pytest.mark.parametrize("path", ["/cut", "/cut-unsized"])
def test_a_body_that_fails_part_way_resets_the_connection(any_port, path):
    conn = http.client.HTTPConnection("127.0.0.1", any_port, timeout=10)
    response = get(conn, path)
    assert response.status == 200
    # Not a clean end (the unsized body would look complete) and not a wait for the rest.
    with pytest.raises(ConnectionResetError):
        response.read()


def test_an_http10_client_such_as_a_proxy_sees_the_reset_too(gunicorn_port):
    """nginx speaks HTTP/1.0 to its upstream by default: without a Content-Length (and no
    chunked encoding in HTTP/1.0) only the reset tells it the body is not whole."""
    with socket.create_connection(("127.0.0.1", gunicorn_port), timeout=10) as sock:
        sock.sendall(b"GET /cut-unsized HTTP/1.0\r\nHost: x\r\n\r\n")
        received = b""
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.") and b" 200 " in received.split(b"\r\n")[0]


def test_whole_responses_keep_the_connection_on_the_development_server(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert get(conn, "/whole").read() == BODY
    first = conn.sock
    assert get(conn, "/whole").read() == BODY
    assert conn.sock is first  # the same connection served both


def test_gunicorn_closes_after_a_whole_response(gunicorn_port):
    conn = http.client.HTTPConnection("127.0.0.1", gunicorn_port, timeout=10)
    response = get(conn, "/whole")
    assert response.getheader("Connection") == "close"
    assert response.read() == BODY  # whole, as its length says
    assert conn.sock is None  # http.client saw the close
    assert get(conn, "/whole").read() == BODY  # the next request on a new connection
