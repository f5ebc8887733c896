"""The only module that hands work to django-q2.

django-q2 delivers a job id; the Job row stays the truth. Delivery happens after the
surrounding transaction commits, so a worker never looks for a row that is not there yet.
"""

from django.db import transaction
from django_q.tasks import async_task


def deliver(job_id: int) -> None:
    transaction.on_commit(
        lambda: async_task("jobs.runner.run_job", job_id, task_name=f"job-{job_id}")
    )


def deliver_many(job_ids: list[int]) -> None:
    """Deliver a batch (the dispatcher's): one django-q2 message per job, after commit."""

    def send() -> None:
        for job_id in job_ids:
            async_task("jobs.runner.run_job", job_id, task_name=f"job-{job_id}")

    transaction.on_commit(send)
