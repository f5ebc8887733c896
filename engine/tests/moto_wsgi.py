"""moto's S3 service as a WSGI application, for gunicorn (`objservers.start_moto`).

`python -m moto.server` serves it with werkzeug's development server, which closes the
connection after every response: each request then pays a TCP connection and a new server
thread, which no S3 service asks of its clients. Under gunicorn (one process, threads) the
connections are kept alive as S3 keeps them. One more change: moto lists its own package
directory (180-odd stat calls) on every request, under a lock, to match the Host header
against its service names; they do not change while it runs, so they are read once.
"""

import moto.backends

_names = tuple(moto.backends.list_of_moto_modules())
moto.backends.list_of_moto_modules = lambda: _names  # type: ignore[assignment]

from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    create_backend_app,
)

app = DomainDispatcherApplication(create_backend_app)
