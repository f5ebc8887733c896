"""A lab VM's workload: keep writing ring records into its disk images until SIGTERM.

    python -m inventory.lab.writer IMAGE [IMAGE ...] --pid-file RUN/VM.pid [--rate 200]

For every image it finds the physical extents of ``/lab/ring.dat`` once (``debugfs``), resumes
after the highest intact sequence number already in the ring, then writes ``--rate`` records per
second per image with ``pwrite`` at the slots' physical offsets -- never through the file system,
so the ext4 metadata never changes.  ``fsync`` once a second.  If an image file is replaced (a
restore over the original, say) it maps the new file and goes on.

SIGSTOP pauses it (the lab's freeze command), SIGCONT resumes it (thaw); after a pause it does
not try to catch up.  SIGTERM or SIGINT: finish the current record, fsync, remove the pid file
(if it still names this process) and exit 0.

Pure Python: no Django, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from inventory.lab.ring import (
    RECORD_SIZE,
    RING_PATH,
    RingError,
    check_bytes,
    encode,
    read_ring,
    ring_extents,
    slot_offsets,
)

DEFAULT_RATE = 200.0  # records per second per image
FSYNC_EVERY = 1.0  # seconds
TICK = 0.005  # seconds between bursts
MARKER = "inventory.lab.writer"  # how other processes recognise a writer in /proc/PID/cmdline


class Ring:
    """One image's ring: an open descriptor, the slot offsets and the next sequence number."""

    def __init__(self, image: Path, file_in_fs: str = RING_PATH) -> None:
        self.image = image
        self.file_in_fs = file_in_fs
        self.fd = -1
        self.ino = -1
        self.offsets: list[int] = []
        self.next_seq = 0
        self.written = 0
        self.open()

    def open(self) -> None:
        extents = ring_extents(self.image, self.file_in_fs)
        fd = os.open(self.image, os.O_RDWR)
        try:
            with open(fd, "rb", closefd=False) as f:
                report = check_bytes(read_ring(f, extents))
        except BaseException:
            os.close(fd)
            raise
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd
        self.ino = os.fstat(fd).st_ino
        self.offsets = slot_offsets(extents)
        self.next_seq = 0 if report.highest_seq is None else report.highest_seq + 1

    def replaced(self) -> bool:
        try:
            return os.stat(self.image).st_ino != self.ino
        except FileNotFoundError:
            return False  # gone for now; keep writing into the old file until it is back

    def write_next(self) -> None:
        n = len(self.offsets)
        seq = self.next_seq
        record = encode(seq, n, time.time_ns())
        os.pwrite(self.fd, record, self.offsets[seq % n])
        self.next_seq = seq + 1
        self.written += 1

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self.fd)
                self.fd = -1


def write_pid_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def running_writer(path: Path) -> int | None:
    """Pid of another live writer named by ``path``, if any."""
    try:
        pid = int(path.read_text().strip())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and MARKER.encode() in cmd else None


def remove_pid_file(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def run(images: list[Path], *, pid_file: Path | None, rate: float) -> int:
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if pid_file is not None and (other := running_writer(pid_file)) is not None:
        print(f"writer: already running as pid {other} ({pid_file})", file=sys.stderr)
        return 3
    try:
        rings = [Ring(p) for p in images]
    except (OSError, RingError) as exc:
        print(f"writer: {exc}", file=sys.stderr)
        return 2
    if pid_file is not None:
        write_pid_file(pid_file)
    for r in rings:
        print(
            f"writer {os.getpid()}: {r.image} ring {len(r.offsets)} slots of {RECORD_SIZE} B, "
            f"resuming at seq {r.next_seq}",
            flush=True,
        )
    try:
        base = time.monotonic()
        done = 0
        last_sync = base
        while not stop:
            now = time.monotonic()
            due = int((now - base) * rate) - done
            if due > max(1.0, rate * 0.1):  # paused (SIGSTOP) or starved: do not catch up
                base = now - done / rate
                due = 1
            for _ in range(due):
                if stop:
                    break
                for r in rings:
                    r.write_next()
                done += 1
            if now - last_sync >= FSYNC_EVERY:
                last_sync = now
                for r in rings:
                    r.sync()
                    if r.replaced():
                        try:
                            r.open()
                            print(f"writer: {r.image} was replaced; remapped", flush=True)
                        except (OSError, RingError) as exc:
                            print(f"writer: {r.image} replaced, not remapped: {exc}", flush=True)
            time.sleep(TICK)
    finally:
        for r in rings:
            r.close()
        if pid_file is not None:
            remove_pid_file(pid_file)
    total = sum(r.written for r in rings)
    print(f"writer {os.getpid()}: stopped after {total} records", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inventory.lab.writer", description=__doc__)
    parser.add_argument("images", nargs="+", type=Path, help="ext4 disk images with a ring")
    parser.add_argument("--pid-file", type=Path, help="write this process's pid here")
    parser.add_argument(
        "--rate", type=float, default=DEFAULT_RATE, help="records per second per image"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    return run(args.images, pid_file=args.pid_file, rate=args.rate)


if __name__ == "__main__":
    sys.exit(main())
