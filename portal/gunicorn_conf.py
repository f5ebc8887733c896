"""gunicorn's settings for `make run` and production: `gunicorn -c python:portal.gunicorn_conf
portal.wsgi`. Each can be changed from the environment (the systemd unit's `Environment=`).

Threaded workers (`gthread`): a page spends much of its time in Python, so processes give the
two cores their parallelism, and a second thread per process keeps a slow request (a download,
a store that answers slowly) from holding up the process; the main thread keeps the worker's
heartbeat while a long download streams. Each worker takes a connection only while it has a
free thread, and closes it after the response: waiting requests then queue once, in the
listening socket, and go to whichever worker is free first. Kept-alive connections instead
stay with the worker that accepted them, which queued behind its busy threads while others
idled: at 32 clients p99 was 560-960 ms against 270-370 ms this way, for about 10% fewer
requests per second (`bench/web_load.py`, bench/README.md "Web load"). Behind a reverse
proxy the client's own connection is kept alive by the proxy.

Logs go to standard output and error, one line per event (the journal under systemd): the
access log as `key=value` pairs, Django's own lines as set by `LIFEBOAT_LOG_FORMAT`.
"""

import os

bind = [os.environ.get("LIFEBOAT_BIND", "127.0.0.1:8000")]
workers = int(os.environ.get("LIFEBOAT_WEB_WORKERS", "8"))
worker_class = "gthread"
threads = int(os.environ.get("LIFEBOAT_WEB_THREADS", "2"))
# A worker accepts no more connections than it has threads (module doc).
worker_connections = threads
# A download of a large file may stream for a long time; a worker stuck this long is restarted.
timeout = int(os.environ.get("LIFEBOAT_WEB_TIMEOUT", "300"))
# Ctrl-C and `systemctl stop`: requests in flight get this long, then the workers are killed.
graceful_timeout = 10
# Every response closes its connection, so a free worker takes the next one (module doc).
keepalive = 0
# Recycle workers now and then, so a slow leak never grows unbounded.
max_requests = 5000
max_requests_jitter = 500
# Each worker thread keeps its database connection (checked before reuse): a connection per
# request cost about a third of the throughput on SQLite (processes taking turns at the write
# lock to checkpoint and drop the WAL whenever the last connection closed), and a connect per
# request on PostgreSQL. Set before the application loads, so it reaches the settings.
os.environ.setdefault("LIFEBOAT_CONN_MAX_AGE", "600")
# The application loads once in the master (fast worker starts, shared memory). The master
# opens no database connection, so none is shared across the fork.
preload_app = True
# gunicorn leaves REMOTE_ADDR alone; behind a reverse proxy Django decides which proxies'
# X-Forwarded-For it believes (LIFEBOAT_TRUSTED_PROXIES, portal.client_address) and reads
# X-Forwarded-Proto itself (SECURE_PROXY_SSL_HEADER). gunicorn's own scheme rewriting keeps
# its default: only a proxy on this machine.

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
access_log_format = (
    'event=request remote=%(h)s method=%(m)s path="%(U)s" query="%(q)s" status=%(s)s '
    'bytes=%(B)s duration_ms=%(M)s agent="%(a)s"'
)
# No control socket: one more listening file per instance, shared by every instance of a user
# by default, and nothing here uses it (systemd and Ctrl-C send signals).
control_socket_disable = True


def pre_fork(server: object, worker: object) -> None:
    """No database connection crosses a fork: should loading the application have opened one
    in the master, it is closed before each worker is made."""
    from django.db import connections

    connections.close_all()
