"""Worker heartbeats, whether a host's worker is online, and jobs waiting for it.

Every `manage.py worker` process keeps a `Worker` row: a `Heartbeat` thread writes `seen_at`
every HEARTBEAT_SECONDS while its cluster runs (a cluster that died and is being restarted
does not count). A worker is online while it was seen within `WORKER_ONLINE_WITHIN` and has
not stopped; one stopped on request is offline at once.

A job on a host's queue whose worker is offline stays queued (its message waits on that queue
and runs when the worker is back) and says why in `Job.waiting_message`: written when it is
delivered and by the reaper's pass (`note_waiting`), cleared when the worker comes back and
when the job is claimed.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Max
from django.utils import timezone
from django.utils.timesince import timesince

from inventory.models import Host
from jobs import routing
from jobs.models import WORKER_ONLINE_WITHIN, Job, Status, Worker

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True)
class WorkerStatus:
    """A dedicated host's worker as pages and the API show it."""

    online: bool
    last_seen: datetime | None

    def describe(self, now: datetime | None = None) -> str:
        if self.online:
            return "online"
        if self.last_seen is None:
            return "offline (never started)"
        return f"offline (last seen {timesince(self.last_seen, now or timezone.now())} ago)"


def statuses(hosts: Iterable[Host], now: datetime | None = None) -> dict[int, WorkerStatus]:
    """The worker status of each host with a dedicated worker (by host id), in one query."""
    now = now or timezone.now()
    dedicated = {host.pk: host for host in hosts if host.dedicated_worker}
    if not dedicated:
        return {}
    queues = {routing.host_queue(host.name): pk for pk, host in dedicated.items()}
    seen: dict[int, datetime] = {}
    online: set[int] = set()
    for row in Worker.objects.filter(queue__in=queues):
        pk = queues[row.queue]
        seen[pk] = max(seen.get(pk, row.seen_at), row.seen_at)
        if row.is_online(now):
            online.add(pk)
    return {pk: WorkerStatus(pk in online, seen.get(pk)) for pk in dedicated}


@dataclass(frozen=True)
class Listed:
    """A worker process as the hosts page lists it."""

    row: Worker
    online: bool


def listed(now: datetime | None = None) -> list[Listed]:
    """Every known worker process, the default queue's first, with whether it is online."""
    now = now or timezone.now()
    rows = Worker.objects.select_related("host").order_by("host__name", "hostname", "pid")
    return [Listed(row, row.is_online(now)) for row in rows]


def status_of(host: Host, now: datetime | None = None) -> WorkerStatus | None:
    """`statuses` of one host; None when it has no dedicated worker."""
    return statuses([host], now).get(host.pk)


def waiting_message(host_name: str, last_seen: datetime | None, now: datetime) -> str:
    if last_seen is None:
        since = f"never started: run `manage.py worker --host {host_name}` on that host"
    else:
        since = f"offline since {timezone.localtime(last_seen):%Y-%m-%d %H:%M:%S %Z}"
    return f"Waiting for the worker on host {host_name} ({since})."


def note_waiting(now: datetime | None = None, queues: Iterable[str] | None = None) -> int:
    """Write why queued jobs on host queues have not started (their worker is offline), and
    clear it where the worker is back. Only `queues` when given; jobs whose message changed."""
    now = now or timezone.now()
    queued = Job.objects.filter(status=Status.QUEUED).exclude(queue__in=["", routing.DEFAULT_QUEUE])
    if queues is not None:
        queued = queued.filter(queue__in=list(queues))
    names = set(queued.values_list("queue", flat=True).distinct())
    if not names:
        return 0
    workers = Worker.objects.filter(queue__in=names)
    online = set(workers.online(now).values_list("queue", flat=True))
    last_seen = dict(
        workers.values("queue").annotate(last=Max("seen_at")).values_list("queue", "last")
    )
    changed = 0
    for name in names:
        jobs = queued.filter(queue=name)
        if name in online:
            changed += jobs.exclude(waiting_message="").update(waiting_message="")
            continue
        host_name = routing.host_name_of(name) or name
        message = waiting_message(host_name, last_seen.get(name), now)
        changed += jobs.exclude(waiting_message=message).update(waiting_message=message)
    return changed


def process_exists(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: it exists
    return True


def gone_rows(rows: Iterable[Worker], now: datetime, own_pid: int) -> list[int]:
    """The ids of `rows` (this machine's) whose process is gone: stopped on request, not seen
    within WORKER_ONLINE_WITHIN (dead, or its pid reused since), no such process, or this
    process's own pid (a row it has not written yet is a predecessor's that had the same pid,
    as a container's main process has at every start)."""
    return [
        row.pk
        for row in rows
        if row.stopped_at is not None
        or row.seen_at < now - WORKER_ONLINE_WITHIN
        or row.pid == own_pid
        or not process_exists(row.pid)
    ]


class Heartbeat(threading.Thread):
    """Keeps this process's `Worker` row: a beat every HEARTBEAT_SECONDS while `alive()`.

    The row is this process's (machine, pid). When it starts, the rows of its queue on this
    machine whose process is gone (`gone_rows`) are dropped; another worker of the queue on
    this machine keeps its row. The first beat while alive clears the waiting message of the
    queue's jobs (they will run now). A beat that finds its row deleted (another worker
    judged it gone while this cluster was down) writes a new one.
    """

    def __init__(
        self,
        queue: str,
        host: Host | None,
        alive: Callable[[], bool],
        every: float = HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__(daemon=True, name=f"worker-heartbeat-{queue}")
        self.queue, self.host, self.alive, self.every = queue, host, alive, every
        self.halt = threading.Event()
        self.row: Worker | None = None

    def run(self) -> None:
        try:
            hostname, now = socket.gethostname(), timezone.now()
            mine = Worker.objects.filter(queue=self.queue, hostname=hostname)
            gone = gone_rows(mine, now, os.getpid())
            if gone:
                Worker.objects.filter(pk__in=gone).delete()
            self.row = self._new_row(hostname, now)
            was_alive = False
            while True:
                if self.alive():
                    now = timezone.now()
                    if not Worker.objects.filter(pk=self.row.pk).update(seen_at=now):
                        self.row = self._new_row(hostname, now)
                    if not was_alive:
                        note_waiting(queues=[self.queue])
                    was_alive = True
                else:
                    was_alive = False
                if self.halt.wait(self.every):
                    break
        except Exception:
            # A worker without a heartbeat still runs jobs; pages just show it offline.
            log.exception("the heartbeat of worker %s stopped", self.queue)
        finally:
            connection.close()

    def _new_row(self, hostname: str, now: datetime) -> Worker:
        return Worker.objects.create(
            queue=self.queue,
            host=self.host,
            hostname=hostname,
            pid=os.getpid(),
            started_at=now,
            seen_at=now,
        )

    def stop(self) -> None:
        """Stop beating and mark the row stopped (offline at once)."""
        self.halt.set()
        self.join(timeout=5)
        if self.row is not None:
            try:
                Worker.objects.filter(pk=self.row.pk).update(stopped_at=timezone.now())
            finally:
                connection.close()
