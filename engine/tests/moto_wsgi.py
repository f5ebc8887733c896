"""moto's S3 service as a WSGI application, for gunicorn (`objservers.start_moto`).

`python -m moto.server` serves it with werkzeug's development server, which closes the
connection after every response: each request then pays a TCP connection and a new server
thread, which no S3 service asks of its clients. Under gunicorn (one process, threads) the
connections are kept alive as S3 keeps them. One more change: moto lists its own package
directory (180-odd stat calls) on every request, under a lock, to match the Host header
against its service names; they do not change while it runs, so they are read once.

And one gap closed: when a client's connection drops in the middle of a request body, moto
stored the part that had arrived as the whole object (seen as a chunk with a bad outer
checksum after an outage mid-backup, which the next backup then deduplicated against). S3
refuses such a request (IncompleteBody) and never stores a part of it; so does this server.
"""

import io

import moto.backends

_names = tuple(moto.backends.list_of_moto_modules())
moto.backends.list_of_moto_modules = lambda: _names  # type: ignore[assignment]

from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    create_backend_app,
)

_moto = DomainDispatcherApplication(create_backend_app)

_INCOMPLETE = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>IncompleteBody</Code>'
    b"<Message>You did not provide the number of bytes specified by the Content-Length "
    b"HTTP header</Message></Error>"
)


def app(environ, start_response):  # type: ignore[no-untyped-def]
    """moto, given only requests whose body arrived whole."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > 0 and "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", ""):
        stream, parts, got = environ["wsgi.input"], [], 0
        while got < length:
            part = stream.read(length - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        if got < length:
            start_response(
                "400 Bad Request",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(_INCOMPLETE)))],
            )
            return [_INCOMPLETE]
        environ["wsgi.input"] = io.BytesIO(b"".join(parts))
    return _moto(environ, start_response)
