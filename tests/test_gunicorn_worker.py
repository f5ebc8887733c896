"""`make run`'s gunicorn worker (portal/gunicorn_worker.py): a worker whose threads are all
busy leaves new connections to a worker with a free thread, so kept-alive connections spread
over the workers instead of queueing behind one."""

import http.client
import os
import threading
import time

import pytest

from tests.gunicorn import REPO, serving


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    """Two workers of one thread each, as `make run` configures them otherwise."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIFEBOAT_WEB_THREADS": "1"}
    with serving("tests.gunicorn_balance_app:application", env, log, workers=2) as port:
        yield port


def pid_of(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        return int(conn.getresponse().read())
    finally:
        conn.close()


def test_a_new_connection_goes_to_the_worker_with_a_free_thread(two_workers):
    # Both workers answer (each a connection of its own, one after the other).
    seen = {pid_of(two_workers, "/") for _ in range(20)}
    for _ in range(5):
        busy: list[int] = []
        slow = threading.Thread(
            target=lambda answers=busy: answers.append(pid_of(two_workers, "/slow"))
        )
        slow.start()
        time.sleep(0.3)  # the slow request holds its worker's only thread now
        started = time.monotonic()
        free = pid_of(two_workers, "/")
        waited = time.monotonic() - started
        slow.join()
        # A worker that took the new connection while busy would have queued it behind the
        # slow request: answered by the same process, after it.
        assert free != busy[0]
        assert waited < 0.5
        seen |= {free, busy[0]}
    assert len(seen) == 2


@pytest.fixture(scope="module")
def one_thread(tmp_path_factory):
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIFEBOAT_WEB_THREADS": "1"}
    with serving("tests.gunicorn_balance_app:application", env, log, workers=1) as port:
        yield port


def test_clients_of_a_worker_that_stays_busy_are_still_taken_in(one_thread):
    # Four clients each keep one connection and ask again at once: the one thread never
    # idles, yet every client is answered soon after it connects.
    started = time.monotonic()
    until = started + 3
    first_answers: list[float] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", one_thread, timeout=30)
        try:
            while time.monotonic() < until:
                conn.request("GET", "/busy")
                conn.getresponse().read()
                if len(first_answers) < 4 and not getattr(conn, "answered", False):
                    conn.answered = True  # type: ignore[attr-defined]
                    first_answers.append(time.monotonic() - started)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(first_answers) == 4
    assert max(first_answers) < 2
