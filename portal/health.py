"""Is Lifeboat healthy: the checks behind `/healthz` (load balancers) and the site
administrators' health page and API.

Four checks, each ok or failed, each with its findings for the detailed views:

- `database`: a query answers.
- `stores`: every vault's store and secondary copy is reachable (one request on object
  storage), with its free space on local file systems. A location with no store yet is fine
  until recovery points live there.
- `queue`: no message has waited on a queue longer than `HEALTH_QUEUE_AGE_SECONDS`.
- `workers`: a worker serves the default queue, and every host with a dedicated worker has
  its worker online (heartbeats of `jobs.workers`).

`/healthz` answers 503 when a *serving* check fails (database, stores): a load balancer then
takes this web server out. A worker that is down or a queue that is stuck does not make the
web server unfit to serve; they fail in the body, the metrics and the alert rules
(docs/deploy.md).

Stores are probed in parallel and given `HEALTH_STORE_TIMEOUT_SECONDS` in all: an object store
that does not answer in time fails, it never holds up the answer.
"""

import concurrent.futures
from dataclasses import dataclass, field
from datetime import datetime

from django.db import DatabaseError, connection
from django.utils import timezone

from inventory.models import Host
from jobs import queue, routing, workers
from jobs.models import Worker
from portal.options import option
from vaults import stores
from vaults.models import RecoveryPoint, Replication, StorageTarget, Vault

SERVING = ("database", "stores")


@dataclass(frozen=True)
class Finding:
    """One thing a check looked at: a store, a worker, a queue."""

    what: str
    ok: bool
    text: str
    free_bytes: int | None = None
    seconds: float | None = None  # an age: a message's wait, a heartbeat's


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    findings: list[Finding] = field(default_factory=list)

    @property
    def serving(self) -> bool:
        return self.name in SERVING


@dataclass(frozen=True)
class Health:
    checks: list[Check]
    at: datetime

    @property
    def serving_ok(self) -> bool:
        return all(c.ok for c in self.checks if c.serving)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _database() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as e:
        return Check("database", False, [Finding(connection.vendor, False, str(e).strip())])
    return Check("database", True, [Finding(connection.vendor, True, "answers")])


def _places() -> list[tuple[str, str, StorageTarget | None, bool]]:
    """(label, location, target, holds data) of every vault store and secondary copy."""
    with_rps = set(RecoveryPoint.objects.values_list("vault_id", flat=True).distinct())
    places = []
    vaults = Vault.objects.select_related("storage_target", "secondary_target").order_by("name")
    for vault in vaults:
        holds = vault.pk in with_rps
        places.append(
            (f"{vault.name}: vault store", vault.vault_location, vault.storage_target, holds)
        )
        if vault.secondary_location:
            places.append(
                (
                    f"{vault.name}: secondary copy",
                    vault.secondary_location,
                    vault.secondary_target,
                    # The secondary holds data once a recovery point was replicated; until
                    # then a missing store there is the replicate job's to create.
                    holds
                    and vault.recovery_points.filter(replication=Replication.REPLICATED).exists(),
                )
            )
    return places


def _stores() -> Check:
    places = _places()
    if not places:
        return Check("stores", True, [])
    timeout = option("HEALTH_STORE_TIMEOUT_SECONDS", 5)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(places)))
    try:
        futures = [
            pool.submit(stores.reach, location, target, holds_data=holds)
            for _, location, target, holds in places
        ]
        concurrent.futures.wait(futures, timeout=timeout)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a hung probe is left behind
    findings = []
    for (label, location, _, _), future in zip(places, futures, strict=True):
        if not future.done():
            findings.append(Finding(label, False, f"{location}: no answer within {timeout:g} s"))
            continue
        r = future.result()
        findings.append(Finding(label, r.ok, f"{location}: {r.text}", free_bytes=r.free_bytes))
    return Check("stores", all(f.ok for f in findings), findings)


def _queue(now: datetime) -> Check:
    limit = option("HEALTH_QUEUE_AGE_SECONDS", 600)
    findings = []
    for name, since in sorted(queue.oldest_waiting().items()):
        age = max(0.0, (now - since).total_seconds())
        ok = age <= limit
        text = f"oldest message waiting {age:.0f} s" + ("" if ok else f" (over {limit:g} s)")
        findings.append(Finding(name, ok, text, seconds=age))
    if not findings:
        findings.append(Finding(routing.DEFAULT_QUEUE, True, "no message waiting", seconds=0.0))
    return Check("queue", all(f.ok for f in findings), findings)


def _workers(now: datetime) -> Check:
    findings = []
    default_online = False
    for listed in workers.listed(now):
        row: Worker = listed.row
        age = max(0.0, (now - row.seen_at).total_seconds())
        state = "online" if listed.online else "offline"
        label = f"{row.queue} on {row.hostname} pid {row.pid}"
        findings.append(
            Finding(label, True, f"{state}, last heartbeat {age:.0f} s ago", seconds=age)
        )
        default_online |= listed.online and row.queue == routing.DEFAULT_QUEUE
    # Offline processes are listed for information; what fails is a queue nobody serves.
    findings.insert(
        0,
        Finding(
            f"queue {routing.DEFAULT_QUEUE}",
            default_online,
            "served" if default_online else "no worker online: run `manage.py worker`",
        ),
    )
    hosts = list(Host.objects.filter(dedicated_worker=True).order_by("name"))
    found = workers.statuses(hosts, now)
    findings[1:1] = [
        Finding(f"host worker {h.name}", found[h.pk].online, found[h.pk].describe(now))
        for h in hosts
    ]
    return Check("workers", all(f.ok for f in findings), findings)


def check() -> Health:
    """Run every check now. When the database fails the others cannot look (they read it)."""
    now = timezone.now()
    database = _database()
    if not database.ok:
        unknown = [Finding("database", False, "not checked: the database does not answer")]
        others = [Check(name, False, unknown) for name in ("stores", "queue", "workers")]
        return Health([database, *others], now)
    checks = [database, _stores()]
    for run in (_queue, _workers):
        try:
            checks.append(run(now))
        except DatabaseError as e:
            checks.append(Check(run.__name__[1:], False, [Finding("database", False, str(e))]))
    return Health(checks, now)
