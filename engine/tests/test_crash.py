"""SIGKILL backups and transfers (real `python -m engine` processes) at random moments.

After every kill: verify is clean, every committed RP restores byte-identically, nothing
half-written is visible, and the next run succeeds. GC runs in between with no grace.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from engine import (
    Store,
    StoreBusy,
    delete_recovery_point,
    gc,
    list_recovery_points,
    restore,
    verify,
)
from engine.tests.tools import REPO, engine_cmd, engine_env

BACKUP_TRIALS = 14
TRANSFER_TRIALS = 8
IMAGE = 16 << 20
SCATTERED_PAGES = 96


class Images:
    """A chain of disk generations; each changes 5 MiB, so every backup writes new chunks, and
    scatters single 4 KiB pages over the rest, so chunks are stored as deltas on the parent's
    (chains that GC, kills and deletes must keep whole). Only the newest image is kept on
    disk; older ones are remembered by their hash."""

    def __init__(self, tmp_path: Path, rnd: random.Random) -> None:
        self.dir = tmp_path
        self.rnd = rnd
        self.data = bytearray(rnd.randbytes(IMAGE))
        self.data[4 << 20 : 6 << 20] = bytes(2 << 20)
        self.hashes: list[str] = []
        self.path = tmp_path / "current.img"
        self._write()

    def _write(self) -> None:
        self.path.write_bytes(bytes(self.data))
        self.hashes.append(blake3.blake3(self.data).hexdigest())

    def next(self) -> int:
        for _ in range(5):
            off = self.rnd.randrange(0, IMAGE - (1 << 20))
            self.data[off : off + (1 << 20)] = self.rnd.randbytes(1 << 20)
        for _ in range(SCATTERED_PAGES):
            off = self.rnd.randrange(0, IMAGE // 4096) * 4096
            self.data[off : off + 4096] = self.rnd.randbytes(4096)
        self._write()
        return len(self.hashes) - 1


def _spawn(args: list[str], key_file: Path, store: Store) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        engine_cmd("-q", "--key-file", str(key_file), *args),
        cwd=REPO,
        env=engine_env(store),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _kill_after(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL proc after delay seconds; True if it was still running."""
    try:
        proc.wait(timeout=delay)
        killed = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = True
    assert proc.stdout is not None and proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    assert killed or proc.returncode == 0, err
    return killed


def _check_store(store: Store, images: Images, tmp_path: Path, checked: set[str]) -> int:
    """Verify everything; restore each RP not yet checked and compare it with its source."""
    rep = verify(store)
    assert rep.ok, rep.damage
    rps = list_recovery_points(store)
    assert sorted(r.rp_id for r in rps) == store.list_rp_ids()  # every manifest is whole
    for rp in rps:
        if rp.rp_id in checked:
            continue
        out = tmp_path / "check.img"
        restore(store, rp.rp_id, {0: out}, sync=False)
        assert blake3.blake3(out.read_bytes()).hexdigest() == images.hashes[int(rp.labels["gen"])]
        out.unlink()
        checked.add(rp.rp_id)
    leftovers = [p for p in tmp_path.iterdir() if "lifeboat-restore" in p.name]
    assert not leftovers
    return len(rps)


def _gc(store: Store) -> None:
    """GC with no grace. With this test's 3 s leases a sweep of many chunks on a loaded Azurite
    can outlast its lock: GC then stops with StoreBusy before deleting more (by design), and
    the next run finishes the sweep."""
    for attempt in range(3):
        try:
            gc(store, grace_seconds=0, wait_seconds=15)
            return
        except StoreBusy:
            if attempt == 2:
                raise


def test_sigkill_backups_and_transfers_at_random_moments(
    tmp_path: Path,
    key_file: Path,
    make_store: Callable[..., Store],
    store_kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A killed process's lease holds off GC until it expires: short leases keep this quick.
    monkeypatch.setenv("LIFEBOAT_LEASE_SECONDS", "3")
    rnd = random.Random(int(os.environ.get("LIFEBOAT_CRASH_SEED", "20250101")))
    images = Images(tmp_path, rnd)
    vault = make_store("vault", chunk_size=64 << 10)
    second = make_store("second", codec="zstd:3", keys_from=vault)
    # Object stores: fewer trials keep the suite's time; each still kills mid-request.
    backup_trials, transfer_trials = (
        (BACKUP_TRIALS, TRANSFER_TRIALS) if store_kind == "local" else (8, 4)
    )

    def spawn(args: list[str]) -> subprocess.Popen[bytes]:
        return _spawn(args, key_file, vault)

    def backup_args(g: int) -> list[str]:
        args = ["backup", vault.location, "--vm", "vm", "--disk", f"0={images.path}"]
        args += ["--label", f"gen={g}"]
        rps = list_recovery_points(vault)
        if rps and rnd.random() < 0.7:
            args += ["--parent", rps[-1].rp_id]
        return args

    # undisturbed runs tell how long a backup and a transfer take on this machine
    t0 = time.monotonic()
    assert not _kill_after(spawn(backup_args(0)), 120)
    duration = time.monotonic() - t0
    first = list_recovery_points(vault)[0].rp_id
    t0 = time.monotonic()
    assert not _kill_after(spawn(["transfer", vault.location, second.location, first]), 120)
    t_duration = time.monotonic() - t0
    checked: set[str] = set()
    checked2: set[str] = set()
    killed = 0
    for trial in range(backup_trials):
        g = images.next()
        killed += _kill_after(spawn(backup_args(g)), rnd.uniform(0.2, 0.9) * duration)
        _check_store(vault, images, tmp_path, checked)
        if trial % 4 == 3:
            # Deleting old RPs (retention) leaves the newer ones' deltas on their chunks.
            for old in list_recovery_points(vault)[:-3]:
                delete_recovery_point(vault, old.rp_id)
            # sweeps the orphans of killed runs and the deleted RPs' chunks, no base in use
            _gc(vault)
            _check_store(vault, images, tmp_path, checked)

    for _trial in range(transfer_trials):
        missing = [r.rp_id for r in list_recovery_points(vault) if not second.has_manifest(r.rp_id)]
        if not missing:
            break
        rp_id = rnd.choice(missing)
        args = ["transfer", vault.location, second.location, rp_id]
        killed += _kill_after(spawn(args), rnd.uniform(0.2, 0.9) * t_duration)
        _check_store(second, images, tmp_path, checked2)
    _gc(second)
    _check_store(second, images, tmp_path, checked2)

    # the next runs succeed
    assert not _kill_after(spawn(backup_args(images.next())), 120)
    last = list_recovery_points(vault)[-1].rp_id
    assert not _kill_after(spawn(["transfer", vault.location, second.location, last]), 120)
    n = _check_store(vault, images, tmp_path, checked)
    _check_store(second, images, tmp_path, checked2)
    assert n >= 2
    assert vault.delta_bases() and second.delta_bases(), "no delta was stored"
    print(f"killed {killed} runs")
    trials = backup_trials + transfer_trials
    assert killed >= trials // 2, f"only {killed} of {trials} runs were killed"
