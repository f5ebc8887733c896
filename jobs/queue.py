"""The only module that hands work to django-q2.

django-q2 delivers a job id; the Job row stays the truth. Delivery happens after the
surrounding transaction commits, so a worker never looks for a row that is not there yet.

A message stays in the broker (the ORM's `OrmQ` table) until a worker has run it: a cluster
that takes one locks it for `Q_CLUSTER["retry"]` seconds, and when that cluster dies the lock
runs out and another cluster takes it again. Running a message twice is harmless (a job is
claimed once). A message can still be lost outright (the process sending it died between the
commit and the send, or no worker could read it); `with_message` lets the reaper find those.

Queues: each job goes to the queue `jobs.routing.queue_of` names, a host's (`host-<name>`,
served only by `manage.py worker --host <name>`) or the default one (`manage.py worker`). A
message on a host's queue waits there while that worker is offline, and runs when it is back.
"""

import os
import socket
from datetime import datetime

from django.db import transaction
from django.db.models import Min
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from jobs import routing, workers
from jobs.models import Job

FUNC = "jobs.runner.run_job"


def _name(job_id: int) -> str:
    return f"job-{job_id}"


def _send(job_ids: list[int]) -> None:
    """One message per job, each on its queue (`jobs.routing`); the queue is recorded on the
    job, and jobs sent to a host whose worker is offline say so at once.

    The queue is always named: django-q2 would otherwise use the sending process's own
    cluster, so a job created on a host's worker (a restore's follow-up, a GC after a failed
    backup) would stay on that host's queue whatever its routing.
    """
    queues = routing.queues_of(job_ids)
    by_queue: dict[str, list[int]] = {}
    for job_id in job_ids:
        by_queue.setdefault(queues.get(job_id, routing.DEFAULT_QUEUE), []).append(job_id)
    for name, ids in by_queue.items():
        Job.objects.filter(pk__in=ids).update(queue=name)
        for job_id in ids:
            async_task(FUNC, job_id, task_name=_name(job_id), cluster=name)
    workers.note_waiting(queues=[q for q in by_queue if q != routing.DEFAULT_QUEUE])


def deliver(job_id: int) -> None:
    transaction.on_commit(lambda: _send([job_id]))


def deliver_many(job_ids: list[int]) -> None:
    """Deliver a batch (the dispatcher's): one django-q2 message per job, after commit.

    The messages are sent inside one transaction: outside an atomic block the ORM broker
    calls `close_old_connections()` before every message, which with CONN_MAX_AGE=0 means a
    new database connection per message (about 10 ms each on PostgreSQL: 1,000 due backups
    took 18 s). In one transaction the batch is also delivered all or nothing.
    """

    def send() -> None:
        with transaction.atomic():
            _send(job_ids)

    transaction.on_commit(send)


def with_message(job_ids: list[int]) -> dict[int, str]:
    """Those of `job_ids` that have a message in the broker, waiting or held by a worker, on
    any queue: each with the queue it is on.

    Messages are signed pickles, so each is opened; one that cannot be read (signed with
    another SECRET_KEY) is no delivery: no worker will run it either.
    """
    wanted = {_name(job_id): job_id for job_id in job_ids}
    found = {}
    for message in OrmQ.objects.only("key", "payload").iterator():
        job_id = wanted.get(message.task.get("name"))
        if job_id is not None and message.task.get("func") == FUNC:
            found[job_id] = message.key
    return found


def reroute(job_ids: list[int]) -> list[int]:
    """Move the waiting messages of `job_ids` that sit on another queue than the one their
    routing names now (a host given a dedicated worker, or relieved of it, after they were
    sent), so no job waits for a worker that will never serve it; the jobs moved.

    A message a cluster has taken (locked) is left to it. The move deletes the message only
    as it was read (same lock), so a cluster taking it at that moment keeps it, and sends the
    new one in the same transaction.
    """
    routes = routing.queues_of(job_ids)
    wanted = {_name(job_id): job_id for job_id in job_ids}
    moved = []
    for message in OrmQ.objects.filter(lock__lte=timezone.now()).iterator():
        job_id = wanted.get(message.task.get("name"))
        if job_id is None or message.task.get("func") != FUNC:
            continue
        to = routes.get(job_id, message.key)
        if to == message.key:
            continue
        with transaction.atomic():
            if OrmQ.objects.filter(pk=message.pk, lock=message.lock).delete()[0]:
                async_task(FUNC, job_id, task_name=_name(job_id), cluster=to)
                Job.objects.filter(pk=job_id).update(queue=to, waiting_message="")
                moved.append(job_id)
    if moved:
        workers.note_waiting(queues={routes[job_id] for job_id in moved})
    return moved


def current_queue() -> str:
    """The queue this process serves (its cluster's name; the default queue outside one)."""
    return str(Conf.CLUSTER_NAME)


def identity() -> str:
    """How a job names the process that claimed it: "<queue> on <machine> pid <n>"."""
    return f"{current_queue()} on {socket.gethostname()} pid {os.getpid()}"


def oldest_waiting() -> dict[str, datetime]:
    """Per queue, since when its oldest waiting message has waited (health and metrics).

    A message waits from the moment it can be taken: django-q2 sends it with `lock` = now and
    a cluster that takes it moves `lock` into the future, so taken messages do not count (one
    whose taker died counts again from when its lock ran out)."""
    rows = (
        OrmQ.objects.filter(lock__lte=timezone.now())
        .values("key")
        .annotate(oldest=Min("lock"))
        .values_list("key", "oldest")
    )
    return {key: oldest for key, oldest in rows if oldest is not None}
