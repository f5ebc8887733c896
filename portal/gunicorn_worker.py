"""gunicorn's threaded worker (`gthread`), taking a new connection only while it has a free
thread.

A `gthread` worker accepts every connection it can and queues its requests for its threads; a
kept-alive connection then stays with the worker that accepted it. Under load the workers that
happen to be awake when clients connect take most of the connections (32 clients measured 19,
9, 4 and 0 over four workers, and once all 32 on one), and that worker's requests wait in its
queue, on its one core, while the others idle: the slowest requests came from there.

Here a worker stops accepting while all its threads are taken, so a new connection waits in
the listening socket for a worker with room, and the connections spread over the workers by
their free threads. Requests on a connection a worker already holds are served as before.
"""

from concurrent.futures import Future
from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class BalancedThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn has no type hints
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_threads = 0  # requests handed to the thread pool and not finished yet

    def enqueue_req(self, conn: Any) -> None:
        self.in_threads += 1
        if self.in_threads >= self.cfg.threads:
            super().set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        self.in_threads -= 1
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled: bool) -> None:
        # The run loop asks to accept whenever the connection limit allows; only with a free
        # thread. It asks again on its next turn, after a request finished.
        super().set_accept_enabled(enabled and self.in_threads < self.cfg.threads)
