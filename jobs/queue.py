"""The only module that hands work to django-q2.

django-q2 delivers a job id; the Job row stays the truth. Delivery happens after the
surrounding transaction commits, so a worker never looks for a row that is not there yet.

A message stays in the broker (the ORM's `OrmQ` table) until a worker has run it: a cluster
that takes one locks it for `Q_CLUSTER["retry"]` seconds, and when that cluster dies the lock
runs out and another cluster takes it again. Running a message twice is harmless (a job is
claimed once). A message can still be lost outright (the process sending it died between the
commit and the send, or no worker could read it); `with_message` lets the reaper find those.
"""

from django.db import transaction
from django_q.models import OrmQ
from django_q.tasks import async_task

FUNC = "jobs.runner.run_job"


def _name(job_id: int) -> str:
    return f"job-{job_id}"


def deliver(job_id: int) -> None:
    transaction.on_commit(lambda: async_task(FUNC, job_id, task_name=_name(job_id)))


def deliver_many(job_ids: list[int]) -> None:
    """Deliver a batch (the dispatcher's): one django-q2 message per job, after commit.

    The messages are sent inside one transaction: outside an atomic block the ORM broker
    calls `close_old_connections()` before every message, which with CONN_MAX_AGE=0 means a
    new database connection per message (about 10 ms each on PostgreSQL: 1,000 due backups
    took 18 s). In one transaction the batch is also delivered all or nothing.
    """

    def send() -> None:
        with transaction.atomic():
            for job_id in job_ids:
                async_task(FUNC, job_id, task_name=_name(job_id))

    transaction.on_commit(send)


def with_message(job_ids: list[int]) -> set[int]:
    """Those of `job_ids` that have a message in the broker, waiting or held by a worker.

    Messages are signed pickles, so each is opened; one that cannot be read (signed with
    another SECRET_KEY) is no delivery: no worker will run it either.
    """
    wanted = {_name(job_id): job_id for job_id in job_ids}
    found = set()
    for message in OrmQ.objects.only("payload").iterator():
        job_id = wanted.get(message.task.get("name"))
        if job_id is not None and message.task.get("func") == FUNC:
            found.add(job_id)
    return found
