"""A response whose body fails after its headers went out resets the connection, under both
servers: `manage.py runserver` (`make dev`) and gunicorn (`make run`, production).

A streamed body (a file or a folder of a recovery point) can fail part-way, for instance on a
damaged chunk; the view's iterator then raises. Django's server logs that and carries on: with a
Content-Length it keeps the connection open and waits for the next request while the client
waits for the rest of the body, and without one it closes the connection as if the body were
complete. Here the connection is reset instead (TCP RST), so every client sees a failed
transfer, whatever the headers said.

gunicorn closes such a connection with a FIN ("graceful"): a client reading a body without a
Content-Length, or a proxy that speaks HTTP/1.0 to it (nginx does by default), would take
the cut body for a whole one. `ResetOnFailure` wraps the application under gunicorn and
resets the socket gunicorn hands it (`environ["gunicorn.socket"]`) before the error reaches
gunicorn, whose own close then finds the socket closed.
"""

import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from django.core.servers import basehttp

RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds: close() sends RST, not FIN


def is_reset(sock: socket.socket) -> bool:
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, len(RESET)) == RESET
    except OSError:  # already closed
        return False


def reset(sock: socket.socket) -> None:
    """Close `sock` at once with an RST (no FIN that could end a body as if it were whole)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        sock.close()
    except OSError:  # the client went first
        pass


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ResetOnFailure:
    """WSGI middleware: under gunicorn, a body that fails after its first chunk resets the
    connection. Before the first chunk nothing was sent and gunicorn answers 500 itself; file
    responses (`wsgi.file_wrapper`, sent with sendfile) pass through untouched."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body = self.app(environ, start_response)
        sock = environ.get("gunicorn.socket")
        wrapper = environ.get("wsgi.file_wrapper")
        if sock is None or (wrapper is not None and isinstance(body, wrapper)):
            return body
        return _Guarded(body, sock)


class _Guarded:
    """The body of one response, passed on chunk by chunk; `close` reaches the original."""

    def __init__(self, body: Iterable[bytes], sock: socket.socket) -> None:
        self.body, self.sock = body, sock

    def __iter__(self) -> Iterator[bytes]:
        started = False
        try:
            for chunk in self.body:
                started = True
                yield chunk
        except BaseException:
            if started:
                reset(self.sock)
            raise

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


class ServerHandler(basehttp.ServerHandler):
    request_handler: "RequestHandler"
    headers_sent: bool  # wsgiref's, set once the status line went out

    def handle_error(self) -> None:
        super().handle_error()
        if self.headers_sent:  # too late for an error page: the body is cut short
            self.request_handler.reset()


class RequestHandler(basehttp.WSGIRequestHandler):
    server: basehttp.WSGIServer

    @property
    def client_socket(self) -> socket.socket:
        # The client's socket (django-stubs types `connection` as the request).
        return cast(socket.socket, self.connection)

    def reset(self) -> None:
        """Abort the connection when it closes: no more requests on it, no FIN (a FIN would
        end a body without a Content-Length as if it were complete), and the close sends RST."""
        self.close_connection = True
        self.client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)

    def handle(self) -> None:
        # Django's, without the orderly shutdown of a reset connection.
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            self.handle_one_request()
        if not is_reset(self.client_socket):
            try:
                self.client_socket.shutdown(socket.SHUT_WR)
            except (AttributeError, OSError):
                pass

    def handle_one_request(self) -> None:
        # Django's, with the ServerHandler above (Django names its own class in this method).
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = ServerHandler(self.rfile, self.wfile, self.get_stderr(), self.get_environ())
        handler.request_handler = self
        app = self.server.get_app()
        assert app is not None, "runserver sets the application before it serves"
        handler.run(app)


class WSGIServer(basehttp.WSGIServer):
    def finish_request(self, request: Any, client_address: Any) -> None:
        RequestHandler(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        if is_reset(request):
            self.close_request(request)  # the RST, once the handler has let go of it
        else:
            super().shutdown_request(request)
