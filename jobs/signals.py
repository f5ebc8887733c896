"""Signals of the job runner, for apps that react to jobs without the runner knowing them."""

from django.dispatch import Signal

# Sent once a job has reached a final status, whoever finished it (its worker, or the reaper
# for a job whose worker was lost or whose message never arrived): sender=Job, job=<the Job>.
# A receiver that raises is logged and never fails the job.
job_finished = Signal()
