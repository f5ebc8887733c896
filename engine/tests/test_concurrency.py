"""Two backups into one store at once, sharing chunks, while GC keeps trying to sweep."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine import (
    BackupRequest,
    Cancelled,
    DiskSource,
    Store,
    StoreBusy,
    StoreExists,
    backup,
    delete_recovery_point,
    gc,
    init_store,
    list_recovery_points,
    open_store,
    restore,
    verify,
)
from engine.tests.tools import REPO, engine_cmd, engine_env, same_bytes


def test_two_backups_and_gc_at_once(
    tmp_path: Path, key_file: Path, make_store: Callable[..., Store]
) -> None:
    """Two backup processes and a GC racing on one store: on a local disk the flock keeps them
    apart, on S3 and Azure the lease protocol (lease first / gc.lock first)."""
    store = make_store("vault", chunk_size=64 << 10)
    shared = os.urandom(12 << 20)
    a_img, b_img = tmp_path / "a.img", tmp_path / "b.img"
    a_img.write_bytes(shared + os.urandom(4 << 20))
    b_img.write_bytes(os.urandom(4 << 20) + shared)
    # old orphans from an earlier cancelled backup of the same data: GC may sweep them at any
    # moment, while the backups may want to reuse them
    calls = [0]

    def cancel() -> bool:
        calls[0] += 1
        return calls[0] > 150

    try:
        backup(BackupRequest(store, [DiskSource(0, str(a_img))], vm_name="x"), cancel=cancel)
    except Cancelled:
        pass
    if store.path is not None:
        old = time.time() - 3600
        for p in store.iter_chunk_files():
            os.utime(p, (old, old))
    else:
        time.sleep(1.1)  # object mtimes have whole seconds: let the orphans age past grace 0

    stop = threading.Event()
    sweeps: list[int] = []
    busy = [0]

    def gc_loop() -> None:
        while not stop.is_set():
            try:
                sweeps.append(gc(store, grace_seconds=0, wait_seconds=0.02).chunks_swept)
            except StoreBusy:
                busy[0] += 1
            time.sleep(0.005)

    t = threading.Thread(target=gc_loop)
    t.start()
    try:
        procs = [
            subprocess.Popen(
                engine_cmd(
                    "-q",
                    "--key-file",
                    str(key_file),
                    "backup",
                    store.location,
                    "--vm",
                    name,
                    "--disk",
                    f"0={img}",
                ),
                cwd=REPO,
                env=engine_env(store),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for name, img in (("a", a_img), ("b", b_img))
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
    finally:
        stop.set()
        t.join()
    assert sweeps, "gc never ran"
    assert busy[0] > 0, "gc never met an in-flight backup"

    final = gc(store, grace_seconds=0, wait_seconds=10)
    assert final.chunks_swept == 0 or final.chunks_live > 0
    assert verify(store).ok
    rps = {rp.vm_name: rp.rp_id for rp in list_recovery_points(store)}
    assert set(rps) == {"a", "b"}
    for name, img in (("a", a_img), ("b", b_img)):
        out = tmp_path / f"out-{name}.img"
        restore(store, rps[name], {0: out})
        assert same_bytes(img, out)
    # the shared 12 MiB is stored once
    assert final.chunks_live == (12 + 4 + 4) * 16


def _create_at_once(path: Path, kek: bytes, writers: int) -> list[str]:
    """`writers` threads each create the store at `path` (or open it, when another did), a
    couple of milliseconds apart; the vault key id each handle holds."""
    start = threading.Barrier(writers)
    held: list[str] = []

    def create(i: int) -> None:
        start.wait()
        time.sleep(i * 0.002)
        try:
            store = init_store(path, kek)
        except StoreExists:
            store = open_store(path, kek)
        held.append(store.require_keys().vault_key_id)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return held


def test_inits_of_one_new_store_at_once_all_hold_its_keys(tmp_path: Path, kek: bytes) -> None:
    """Several jobs back up into a vault's new store at once, each creating it if missing: every
    handle they get must hold the keys the store keeps, or what it writes cannot be read back.
    The inits start a few milliseconds apart, so one can write its keys after another opened."""
    for r in range(40):
        path = tmp_path / f"vault-{r}"
        held = _create_at_once(path, kek, 4)
        kept = open_store(path, kek).require_keys().vault_key_id
        assert held == [kept] * 4, f"round {r}"


def test_incrementals_with_deltas_while_old_rps_go_and_gc_sweeps(
    tmp_path: Path, key_file: Path, make_store: Callable[..., Store]
) -> None:
    """Retention and GC racing a backup whose chunks are deltas: RP1's chunks are the bases of
    RP2's deltas, RP3 (a process running meanwhile) builds deltas on RP2's. RP1 is deleted and
    GC sweeps in a loop; every base a live delta needs stays, on every kind of store."""
    store = make_store("vault", chunk_size=64 << 10)
    rnd = random.Random(11)
    data = bytearray(rnd.randbytes(8 << 20))
    img = tmp_path / "db.img"

    def scatter() -> bytes:
        for _ in range(200):
            off = rnd.randrange(len(data) // 4096) * 4096
            data[off : off + 4096] = rnd.randbytes(4096)
        img.write_bytes(bytes(data))
        return bytes(data)

    img.write_bytes(bytes(data))
    rp1 = backup(BackupRequest(store, [DiskSource(0, str(img))], vm_name="db")).rp_id
    second = scatter()
    rp2 = backup(BackupRequest(store, [DiskSource(0, str(img))], vm_name="db", parent=rp1))
    assert rp2.chunks_delta > 50
    third = scatter()

    stop = threading.Event()
    sweeps: list[int] = []

    def gc_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(StoreBusy):
                sweeps.append(gc(store, grace_seconds=0, wait_seconds=0.02).chunks_swept)
            time.sleep(0.005)

    t = threading.Thread(target=gc_loop)
    t.start()
    try:
        args = ["-q", "--key-file", str(key_file), "backup", store.location, "--vm", "db"]
        args += ["--disk", f"0={img}", "--parent", rp2.rp_id]
        proc = subprocess.Popen(
            engine_cmd(*args),
            cwd=REPO,
            env=engine_env(store),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.2)
        delete_recovery_point(store, rp1)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        time.sleep(0.3)  # a sweep after the backup, with RP1 gone
    finally:
        stop.set()
        t.join()
    assert sweeps and max(sweeps) > 0, "gc never swept RP1's chunks"
    gc(store, grace_seconds=0, wait_seconds=10)
    assert verify(store).ok
    rp3 = out.decode().strip()
    for rp, want in ((rp2.rp_id, second), (rp3, third)):
        restored = tmp_path / f"{rp}.img"
        restore(store, rp, {0: restored})
        assert restored.read_bytes() == want
    assert store.delta_bases()
