"""A WSGI application for the web-server tests, importable by a gunicorn process:
/whole answers BODY; /cut fails after part of it (with a Content-Length), /cut-unsized the
same without one."""

from portal.server import ResetOnFailure

BODY = b"x" * 5000


def app(environ, start_response):
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


# As portal/wsgi.py wraps Django's application.
application = ResetOnFailure(app)
