"""`manage.py worker`: django-q2's cluster (`manage.py qcluster`), restarted when it dies and
stopped in bounded time.

Restart: a cluster that exits (killed, out of memory, a crash) is started again, after a pause
that grows while it keeps dying at once. Whatever the dead cluster left behind in its process
group (django-q2's sentinel and workers outlive a killed main process) is killed first, so two
clusters never run side by side.

Stop (SIGINT, SIGTERM, SIGHUP): django-q2 stops gracefully on SIGTERM by waiting for its workers, and
they finish the running task and every task the cluster had already taken first; with tasks
that run for hours that stop can take hours. So the cluster gets SIGTERM, `--grace` seconds,
then its whole process group is killed. A job killed that way is failed by the reaper
(`worker_lost`); messages the cluster had taken but not run are taken again by the next cluster
once their lock runs out (`Q_CLUSTER["retry"]`, see jobs.queue).

`--host NAME` serves that host's queue only (jobs.routing: a host with `dedicated_worker`); run
it on the host itself. Without it the worker serves the default queue and runs the periodic
tasks. Either way a heartbeat thread keeps the worker's `Worker` row while its cluster runs
(jobs.workers), so pages show whether a host's worker is online.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inventory.models import Host
from jobs import routing
from jobs.workers import Heartbeat

# Restart pauses: 1 s, doubling while the cluster keeps dying within STABLE seconds.
FIRST_PAUSE, MAX_PAUSE, STABLE = 1.0, 30.0, 60.0
TICK = 0.1
# prctl(2): the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the cluster's process before it starts: when this supervisor dies, even by
    SIGKILL (which it cannot catch to stop the cluster), the kernel sends the cluster SIGTERM,
    so no cluster outlives its supervisor and runs jobs nobody watches."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Command(BaseCommand):
    help = "Run the django-q2 cluster; restart it when it dies; stop it within --grace seconds."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--grace",
            type=float,
            default=10.0,
            help="seconds a stopping cluster may take before it is killed (default 10)",
        )
        parser.add_argument(
            "--host",
            default=None,
            help="serve only the jobs of this host (one with a dedicated worker); run it there",
        )

    def handle(self, *args: Any, grace: float, host: str | None, **options: Any) -> None:
        self.stopping = False
        self.cluster: subprocess.Popen | None = None
        served = None
        if host is not None:
            served = Host.objects.filter(name=host).first()
            if served is None:
                known = ", ".join(Host.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"No host is named {host!r} (hosts: {known}).")
            if not served.dedicated_worker:
                self.say(
                    f"host {host} has no dedicated worker: its jobs go to the default worker "
                    "until it is given one"
                )
        self.queue = routing.host_queue(host) if host is not None else routing.DEFAULT_QUEUE

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        # SIGHUP too: a closed terminal must not leave the cluster (in its own session) behind.
        stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        old = {s: signal.signal(s, on_signal) for s in stops}
        heartbeat = Heartbeat(self.queue, served, alive=self.cluster_runs)
        heartbeat.start()
        try:
            self.supervise(grace)
        finally:
            heartbeat.stop()
            for s, h in old.items():
                signal.signal(s, h)

    def cluster_runs(self) -> bool:
        return self.cluster is not None and self.cluster.poll() is None

    def say(self, message: str) -> None:
        self.stderr.write(f"worker: {message}")

    def supervise(self, grace: float) -> None:
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"]
        env = dict(os.environ)
        # django-q2 serves the queue named by Q_CLUSTER_NAME (the default one without it).
        env.pop("Q_CLUSTER_NAME", None)
        if self.queue != routing.DEFAULT_QUEUE:
            env["Q_CLUSTER_NAME"] = self.queue
        pause = FIRST_PAUSE
        while not self.stopping:
            started = time.monotonic()
            # Its own session: a terminal's Ctrl-C reaches this process only, which then stops
            # the cluster as a whole; and the group can be killed without killing us.
            cluster = self.cluster = subprocess.Popen(
                argv, env=env, start_new_session=True, preexec_fn=_die_with_parent
            )
            self.say(f"cluster of queue {self.queue} started (pid {cluster.pid})")
            while cluster.poll() is None and not self.stopping:
                time.sleep(TICK)
            if self.stopping:
                self.stop(cluster, grace)
                return
            kill_group(cluster.pid)
            pause = (
                FIRST_PAUSE if time.monotonic() - started > STABLE else min(pause * 2, MAX_PAUSE)
            )
            self.say(f"cluster exited with code {cluster.returncode}; restarting in {pause:.0f} s")
            deadline = time.monotonic() + pause
            while not self.stopping and time.monotonic() < deadline:
                time.sleep(TICK)

    def stop(self, cluster: subprocess.Popen, grace: float) -> None:
        self.say(f"stopping the cluster (at most {grace:g} s)")
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.say("the cluster did not stop in time: killing it")
        kill_group(cluster.pid)
        cluster.wait()
        self.say("stopped")


def kill_group(pgid: int, wait: float = 5.0) -> None:
    """SIGKILL every process left in the cluster's process group, and wait (a little) until
    the group is gone."""
    deadline = time.monotonic() + wait
    try:
        os.killpg(pgid, signal.SIGKILL)
        while time.monotonic() < deadline:
            time.sleep(TICK)
            os.killpg(pgid, 0)
    except ProcessLookupError:
        pass
