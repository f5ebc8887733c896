"""Periodic work, declared in one place and upserted by `manage.py sync_schedules`."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Periodic:
    name: str
    func: str
    minutes: int


PERIODIC = [
    # Enqueues due backups; retries failed transfers and replications after their backoff.
    Periodic("lifeboat-dispatch", "jobs.tasks.dispatch", minutes=1),
    # Fails jobs whose worker stopped sending heartbeats; re-sends lost queue messages.
    Periodic("lifeboat-reap", "jobs.tasks.reap", minutes=1),
    # Manifests without a row whose job has finished, an early sweep of failed jobs' chunks,
    # leftover restore temp files and work folders.
    Periodic("lifeboat-reconcile", "jobs.tasks.reconcile", minutes=5),
    # Tiering, retention and garbage collection.
    Periodic("lifeboat-cleanup", "jobs.tasks.cleanup", minutes=60),
    # Restore drills of each vault's items on its drill schedule (`Vault.drill_every_days`).
    Periodic("lifeboat-drills", "jobs.tasks.drills", minutes=60),
    # Extends S3 Object Locks left shorter than retention needs (lost or failed jobs).
    Periodic("lifeboat-lock-sweep", "jobs.tasks.lock_sweep", minutes=60),
    # Space accounting of every vault (also refreshed after each job that changes a store).
    Periodic("lifeboat-accounting", "jobs.tasks.accounting", minutes=60),
    # Purges recycle-bin entries whose soft-delete days have passed.
    Periodic("lifeboat-purge", "jobs.tasks.purge", minutes=60),
    # Upcoming-purge alerts (2 days ahead), expired MUA approvals, old login failures.
    Periodic("lifeboat-security", "jobs.tasks.security_checks", minutes=60),
    # Today's usage row per vault and item (rewritten each run, so the day's last run stands):
    # the history behind the overview's storage trend and the usage report.
    Periodic("lifeboat-usage", "jobs.tasks.record_usage", minutes=15),
]
