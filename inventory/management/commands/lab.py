"""Drive the demo lab: its writers, power switches, churn and ring checks.

    manage.py lab writers [--rate N]     foreground supervisor: keeps one writer per running
                                         lab VM, stops them all on SIGINT/SIGTERM
    manage.py lab start VM               power on: power_state=running and start the writer
    manage.py lab stop VM                power off: stop the writer, power_state=stopped
    manage.py lab churn [VM ...] [--mib N]   write N MiB (default 1) of new files into each
                                         disk of the VM(s) (all lab VMs by default) with
                                         debugfs, the writer paused meanwhile
    manage.py lab attack VM [--share F]  simulate ransomware in a lab VM: F (default all) of
                                         its files overwritten with random bytes, renamed
                                         *.locked (the ransomware signal flags the next backup)
    manage.py lab status                 VMs, power, writers and ring health
    manage.py lab check IMAGE|VM ...     check the ring of images (e.g. restored disks)
    manage.py lab kvm                    the KVM lab: libvirt domains kvm-web-01 (a real
                                         guest with the QEMU guest agent) and kvm-db-01, and
                                         the host kvm-lab (run by `make lab-kvm`)

The VM's ``power_state`` row is the truth; ``run/VM.power`` mirrors it for the probe script.
``lab start`` while ``lab writers`` runs leaves the spawning to the supervisor (it notices
within a second); without a supervisor it starts a detached writer, which ``lab stop`` (or a
later ``lab writers`` on exit) stops.  start, stop and churn wait while a backup has the VM
frozen, so they never break a snapshot's point in time.
"""

from __future__ import annotations

import os
import signal
import time
from argparse import ArgumentParser
from pathlib import Path
from types import FrameType
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from engine.errors import EngineError
from inventory import demo, services
from inventory.lab import images, kvm, layout
from inventory.lab.attack import attack_image
from inventory.lab.control import Lab, LabBusy, proc_state, terminate
from inventory.lab.ring import RingError, check_ring, ring_extents
from inventory.models import VirtualMachine
from vaults.models import Vault

POLL = 1.0
RESTART_BACKOFF = 5.0


def ring_disks(vm: VirtualMachine) -> list[Path]:
    """The VM's disk images that hold a lab ring."""
    out = []
    for d in vm.disks.all():
        path = Path(d.path)
        try:
            if path.is_file():
                ring_extents(path)
                out.append(path)
        except RingError:
            pass
    return out


class Command(BaseCommand):
    help = "Run the demo lab: writers, start/stop, churn, status and ring checks."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        w = sub.add_parser("writers", help="keep a writer running for every running lab VM")
        w.add_argument("--rate", type=float, default=None, help="records/s per disk (200)")
        s = sub.add_parser("start", help="power a lab VM on (and start its writer)")
        s.add_argument("vm")
        s.add_argument("--rate", type=float, default=None)
        t = sub.add_parser("stop", help="power a lab VM off (and stop its writer)")
        t.add_argument("vm")
        a = sub.add_parser(
            "attack", help="simulate ransomware: overwrite a VM's files with random bytes, renamed"
        )
        a.add_argument("vm")
        a.add_argument("--share", type=float, default=1.0, help="share of its files (0-1]")
        c = sub.add_parser("churn", help="write new files into the VMs' disk images")
        c.add_argument("vms", nargs="*", metavar="VM")
        c.add_argument("--mib", type=float, default=1.0, help="MiB per disk (default 1)")
        sub.add_parser("status", help="VMs, power, writers and ring health")
        k = sub.add_parser("check", help="check the ring in disk images (paths or VM names)")
        k.add_argument("targets", nargs="+", metavar="IMAGE|VM")
        sub.add_parser("kvm", help="make and start the KVM lab's libvirt domains and its host")

    def handle(self, *args: Any, **options: Any) -> None:
        self.lab = demo.lab()
        action = options["action"]
        try:
            if action == "writers":
                return self.do_writers(options["rate"])
            if action == "start":
                return self.do_start(options["vm"], options["rate"])
            if action == "stop":
                return self.do_stop(options["vm"])
            if action == "attack":
                return self.do_attack(options["vm"], options["share"])
            if action == "churn":
                return self.do_churn(options["vms"], options["mib"])
            if action == "status":
                return self.do_status()
            if action == "check":
                return self.do_check(options["targets"])
            if action == "kvm":
                return self.do_kvm()
        except (LabBusy, RingError, images.LabToolMissing, kvm.KvmLabError) as exc:
            raise CommandError(str(exc)) from exc
        raise CommandError(f"unknown action {action}")

    def say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    # -- helpers ------------------------------------------------------------------------------

    def vm(self, name: str) -> VirtualMachine:
        try:
            return VirtualMachine.objects.get(name=name)
        except VirtualMachine.DoesNotExist:
            raise CommandError(
                f"no VM named {name!r}; lab VMs: {', '.join(layout.LAB_VM_NAMES)}"
            ) from None

    def lab_vms(self) -> list[VirtualMachine]:
        return list(VirtualMachine.objects.filter(name__in=layout.LAB_VM_NAMES).order_by("name"))

    def set_power(self, vm: VirtualMachine, state: str) -> None:
        VirtualMachine.objects.filter(pk=vm.pk).update(power_state=state)
        vm.power_state = state
        self.lab.set_power(vm.name, state)

    # -- start / stop -------------------------------------------------------------------------

    def do_start(self, name: str, rate: float | None) -> None:
        vm = self.vm(name)
        with self.lab.locked(vm.name):
            self.set_power(vm, "running")
            pid = self.lab.writer_pid(vm.name)
            disks = ring_disks(vm)
            if pid is not None:
                self.say(f"{vm.name}: running; writer {pid} was already running")
                return
            if not disks:
                self.say(f"{vm.name}: running (no disk holds a lab ring, so no writer)")
                return
            supervisor = self.lab.supervisor_pid()
            if supervisor is None:
                proc = self.lab.spawn_writer(vm.name, disks, rate=rate, detach=True)
        if supervisor is not None:
            deadline = time.monotonic() + 5 * POLL
            while time.monotonic() < deadline and self.lab.writer_pid(vm.name) is None:
                time.sleep(0.05)
            pid = self.lab.writer_pid(vm.name)
            how = f"writer {pid}" if pid else "writer not up yet"
            self.say(f"{vm.name}: running; {how} (managed by lab writers, pid {supervisor})")
            return
        pid = self.lab.wait_for_writer(vm.name, proc)
        self.say(
            f"{vm.name}: running; started detached writer {pid} on {len(disks)} disk(s) "
            f"(log {self.lab.writer_log(vm.name)}; `lab stop {vm.name}` stops it)"
        )

    def do_stop(self, name: str) -> None:
        vm = self.vm(name)
        with self.lab.locked(vm.name):
            self.set_power(vm, "stopped")
            pid = self.lab.stop_writer(vm.name)
        what = f"writer {pid} stopped" if pid else "no writer was running"
        self.say(f"{vm.name}: stopped; {what}")

    # -- churn ----------------------------------------------------------------------------------

    def do_churn(self, names: list[str], mib: float) -> None:
        if mib <= 0 or mib > 64:
            raise CommandError("--mib must be more than 0 and at most 64")
        vms = [self.vm(n) for n in names] if names else self.lab_vms()
        if not vms:
            raise CommandError("no lab VMs; run manage.py bootstrap first")
        for vm in vms:
            disks = list(vm.disks.all())
            with self.lab.paused(vm.name) as pid:
                paused = f"writer {pid} paused" if pid else "no writer running"
                self.say(f"{vm.name} ({paused}):")
                for d in disks:
                    try:
                        r = images.churn_image(Path(d.path), mib)
                    except RuntimeError as exc:
                        self.say(f"  LUN {d.lun:>2} {d.path}: FAILED: {exc}")
                        continue
                    self.say(
                        f"  LUN {d.lun:>2} {Path(d.path).name}: wrote {len(r.written)} file(s), "
                        f"{r.bytes_written / (1 << 20):.2f} MiB: {', '.join(r.written)}"
                    )
                    if r.removed:
                        self.say(f"           removed to make room: {', '.join(r.removed)}")
            if pid:
                self.say(f"  writer {pid} resumed")

    def do_attack(self, name: str, share: float) -> None:
        if not 0 < share <= 1:
            raise CommandError("--share must be more than 0 and at most 1")
        vm = self.vm(name)
        with self.lab.paused(vm.name) as pid:
            for d in vm.disks.all():
                try:
                    r = attack_image(Path(d.path), share)
                except (RuntimeError, EngineError) as exc:
                    self.say(f"  LUN {d.lun:>2} {d.path}: FAILED: {exc}")
                    continue
                self.say(
                    f"  LUN {d.lun:>2} {Path(d.path).name}: {len(r.encrypted)} file(s) "
                    f"overwritten with random bytes and renamed *.locked, "
                    f"{r.bytes_written / (1 << 20):.2f} MiB"
                )
        if pid:
            self.say(f"  writer {pid} resumed")

    # -- status / check ---------------------------------------------------------------------------

    def do_status(self) -> None:
        vms = self.lab_vms()
        if not vms:
            self.say("No lab VMs yet; run manage.py bootstrap.")
            return
        sup = self.lab.supervisor_pid()
        self.say(
            f"Lab under {self.lab.root}; lab writers: {f'pid {sup}' if sup else 'not running'}"
        )
        for vm in vms:
            pid = self.lab.writer_pid(vm.name)
            if pid is None:
                writer = "no writer"
            else:
                writer = (
                    f"writer {pid} ({'paused' if proc_state(pid) in ('T', 't') else 'writing'})"
                )
            frozen = ", FROZEN by a backup" if self.lab.frozen(vm.name) else ""
            self.say(
                f"{vm.name:<12} power {vm.power_state:<8} switch {self.lab.power(vm.name) or '-':<8}"
                f" {writer}{frozen}"
            )
            for d in vm.disks.all():
                self.say(f"  LUN {d.lun:>2} {Path(d.path).name:<24} {self._ring(vm.name, d.path)}")

    def _ring(self, vm: str, path: str) -> str:
        if not Path(path).is_file():
            return "image missing"
        try:
            with self.lab.paused(vm, wait=2):
                return check_ring(path).summary()
        except LabBusy:
            return check_ring(path).summary() + " (read live: VM is frozen or busy)"
        except RingError as exc:
            return f"no ring ({exc})"

    def do_check(self, targets: list[str]) -> None:
        bad = 0
        for target in targets:
            paths = (
                [Path(target)]
                if os.sep in target or target.endswith(".img") or Path(target).exists()
                else [Path(d.path) for d in self.vm(target).disks.all()]
            )
            for path in paths:
                try:
                    report = check_ring(path)
                except (RingError, OSError) as exc:
                    self.say(f"{path}: no ring ({exc})")
                    bad += 1
                    continue
                self.say(f"{path}: {report.summary()}")
                for p in report.problems:
                    self.say(f"    {p}")
                bad += 0 if report.ok else 1
        if bad:
            raise CommandError(f"{bad} image(s) failed the ring check")

    # -- the KVM lab ----------------------------------------------------------------------------

    def do_kvm(self) -> None:
        paths = kvm.ensure_kvm_lab(self.say)
        host, created = kvm.register_kvm_lab_host(paths)
        self.say(f"KVM lab: host {host.name} {'registered' if created else 'already registered'}")
        admin = (
            get_user_model()
            .objects.filter(is_superuser=True, is_active=True)
            .order_by("pk")
            .first()
        )
        if admin is None:
            self.say(
                f"KVM lab: discover {host.name}'s VMs from its page (no site administrator yet)"
            )
            return
        try:
            services.discover_host(host, by=admin)
        except ValidationError as exc:
            # The lab itself is ready; discovery can be retried from the host's page.
            self.say(f"KVM lab: discovery of {host.name} failed: {'; '.join(exc.messages)}")
            return
        # Linked to the demo vault, so its VMs can be protected there at once.
        vault = Vault.objects.filter(name=layout.VAULT).first()
        if vault is not None:
            vault.linked_hosts.add(host)
            self.say(f"KVM lab: host {host.name} linked to vault {vault.name}")
        names = ", ".join(host.vms.values_list("name", flat=True)) or "none"
        self.say(f"KVM lab: discovered {host.name}'s VMs: {names}")

    # -- writers supervisor ---------------------------------------------------------------------

    def do_writers(self, rate: float | None) -> None:
        lab: Lab = self.lab
        other = lab.supervisor_pid()
        if other is not None and other != os.getpid():
            raise CommandError(f"lab writers already runs as pid {other}")
        lab.make_dirs()
        lab.supervisor_pid_file.write_text(f"{os.getpid()}\n")
        stopping = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        children: dict[str, object] = {}
        last_exit: dict[str, float] = {}
        self.say(f"lab writers: supervising the demo lab under {lab.root} (pid {os.getpid()})")
        try:
            while not stopping:
                self._supervise(rate, children, last_exit)
                deadline = time.monotonic() + POLL
                while not stopping and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for vm in layout.LAB_VM_NAMES:
                pid = lab.writer_pid(vm)
                if pid is not None:
                    terminate(pid)
                    self.say(f"lab writers: {vm}: writer {pid} stopped")
            for proc in children.values():
                proc.poll()  # type: ignore[attr-defined]
            try:
                if lab.supervisor_pid_file.read_text().strip() == str(os.getpid()):
                    lab.supervisor_pid_file.unlink()
            except FileNotFoundError:
                pass
            self.say("lab writers: stopped")

    def _supervise(
        self, rate: float | None, children: dict[str, Any], last_exit: dict[str, float]
    ) -> None:
        lab: Lab = self.lab
        for name, proc in list(children.items()):
            code = proc.poll()
            if code is not None:
                del children[name]
                last_exit[name] = time.monotonic()
                if code != 0:
                    self.say(f"lab writers: {name}: writer {proc.pid} exited with {code}")
        for vm in self.lab_vms():
            pid = lab.writer_pid(vm.name)
            want = vm.power_state == "running"
            if lab.power(vm.name) != ("running" if want else "stopped"):
                lab.set_power(vm.name, "running" if want else "stopped")
            if want and pid is None:
                if time.monotonic() - last_exit.get(vm.name, -RESTART_BACKOFF) < RESTART_BACKOFF:
                    continue
                try:
                    with lab.locked(vm.name, wait=0):
                        vm.refresh_from_db(fields=["power_state"])
                        if vm.power_state != "running" or lab.writer_pid(vm.name) is not None:
                            continue
                        disks = ring_disks(vm)
                        if not disks:
                            continue
                        proc = lab.spawn_writer(vm.name, disks, rate=rate, detach=False)
                        children[vm.name] = proc
                        pid = lab.wait_for_writer(vm.name, proc)
                except LabBusy:
                    continue
                except RuntimeError as exc:
                    last_exit[vm.name] = time.monotonic()
                    self.say(f"lab writers: {vm.name}: {exc}")
                    continue
                self.say(f"lab writers: {vm.name}: writer {pid} started on {len(disks)} disk(s)")
            elif not want and pid is not None:
                try:
                    with lab.locked(vm.name, wait=0):
                        vm.refresh_from_db(fields=["power_state"])
                        if vm.power_state == "running":
                            continue
                        lab.stop_writer(vm.name)
                except LabBusy:
                    continue
                children.pop(vm.name, None)
                self.say(f"lab writers: {vm.name}: powered off, writer {pid} stopped")
