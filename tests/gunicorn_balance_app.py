"""A WSGI application for tests/test_gunicorn_worker.py, importable by a gunicorn process:
every answer is the serving process's id; /slow takes a second first, /busy 20 ms."""

import os
import time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(1)
    elif environ["PATH_INFO"] == "/busy":
        time.sleep(0.02)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
