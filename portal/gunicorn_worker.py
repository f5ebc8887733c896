"""gunicorn's threaded worker (`gthread`), taking a new connection only while it has a free
thread.

A `gthread` worker accepts every connection it can and queues its requests for its threads; a
kept-alive connection then stays with the worker that accepted it. Under load the workers that
happen to be awake when clients connect take most of the connections (32 clients measured 19,
9, 4 and 0 over four workers, and once all 32 on one), and that worker's requests wait in its
queue, on its one core, while the others idle: the slowest requests came from there.

Here a worker stops accepting while all its threads are taken, so a new connection waits in
the listening socket for a worker with room, and the connections spread over the workers by
their free threads (32 clients: 9, 8, 8, 7). Requests on a connection a worker already holds
are served as before. When every worker stays busy (more clients than threads, each sending
again at once), a busy worker still takes one waiting connection every `BUSY_ACCEPT_EVERY`
seconds: a new client waits its turn, never for a lull that may not come.
"""

import time
from concurrent.futures import Future
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

BUSY_ACCEPT_EVERY = 0.1  # seconds


class BalancedThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn has no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_threads = 0  # requests handed to the thread pool and not finished yet
        self.busy_since = 0.0  # when accepting last stopped for want of a thread

    def enqueue_req(self, conn: Any) -> None:
        self.in_threads += 1
        if self.in_threads >= self.cfg.threads and self._accepting:
            super().set_accept_enabled(False)
            self.busy_since = time.monotonic()
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        self.in_threads -= 1
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled: bool) -> None:
        # The run loop asks to accept on each turn (each finished request, or every second)
        # whenever the connection limit allows: yes with a free thread, else now and then.
        if enabled and self.in_threads >= self.cfg.threads:
            enabled = time.monotonic() - self.busy_since >= BUSY_ACCEPT_EVERY
        super().set_accept_enabled(enabled)
