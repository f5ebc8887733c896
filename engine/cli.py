"""Command-line interface: create-key, init, backup, transfer, restore, verify, scrub, gc, ls,
delete, rewrap.

The key comes from --key-file (32 raw bytes, 64 hex digits or base64), or by default the
platform master key at $LIFEBOAT_MASTER_KEY_FILE, which `create-key` makes once (it is never
created implicitly: a lost key must come back from its backup, not be replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from types import FrameType
from typing import Any, TextIO

from . import (
    BackupRequest,
    Cancelled,
    CorruptionError,
    DiskSource,
    EngineError,
    Progress,
    RecoveryPoint,
    backup,
    create_platform_kek,
    delete_recovery_point,
    gc,
    init_store,
    kek_fingerprint,
    list_recovery_points,
    load_key_file,
    open_store,
    platform_kek,
    restore,
    rewrap_keys,
    scrub,
    transfer,
    verify,
)
from .backends import target_from_env
from .errors import StoreNotFound
from .keys import MASTER_KEY_ENV
from .stats import store_stats
from .store import Store, iso


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in units else ""
    return int(float(t[: len(t) - len(unit)]) * units[unit])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressBar:
    """Plain-text progress on stderr: a redrawn bar on a terminal, a line every 5 s otherwise."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = p.bytes_done >= p.bytes_total
        if not finished and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        frac = p.bytes_done / p.bytes_total if p.bytes_total else 1.0
        elapsed = max(now - self.start, 1e-6)
        if p.phase in ("verify", "scrub"):
            amount = f"{p.bytes_done}/{p.bytes_total} chunks"
            rate = f"{p.bytes_done / elapsed:.0f} chunks/s"
        else:
            amount = f"{human(p.bytes_done)}/{human(p.bytes_total)}"
            rate = f"{human(p.bytes_done / elapsed)}/s"
        bar = "#" * int(frac * 30)
        line = f"{p.phase:9} [{bar:<30}] {frac * 100:5.1f}% {amount} {rate}"
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


class CancelFlag:
    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def install(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.set = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def _kek(args: argparse.Namespace) -> bytes:
    if args.key_file:
        return load_key_file(args.key_file)
    return platform_kek()


def _pairs(values: list[str], what: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for v in values:
        lun, sep, path = v.partition("=")
        if not sep or not lun.strip().isdigit():
            raise SystemExit(f"{what} must look like LUN=PATH, got {v!r}")
        out[int(lun)] = path
    return out


def _rp_json(rp: RecoveryPoint) -> dict[str, Any]:
    d = asdict(rp)
    for k, v in list(d.items()):
        if isinstance(v, datetime):
            d[k] = iso(v)
    d["size"] = rp.size
    return d


def _emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    if args.json:
        print(json.dumps(obj, indent=2, default=str))
    else:
        print(text)


def cmd_create_key(args: argparse.Namespace) -> int:
    path = args.path or args.key_file or os.environ.get(MASTER_KEY_ENV)
    try:
        kek = create_platform_kek(path)
    except FileExistsError:
        print(f"error: {path} exists; an existing key is never replaced", file=sys.stderr)
        return 3
    fingerprint = kek_fingerprint(kek)
    _emit(
        args,
        {"path": path, "fingerprint": fingerprint},
        f"created {path}, fingerprint {fingerprint}",
    )
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    kek = _kek(args)
    store = init_store(
        args.store,
        kek,
        codec=args.codec,
        chunk_size=parse_size(args.chunk_size),
        keys_from=open_store(args.keys_from, kek, target=target_from_env(args.keys_from))
        if args.keys_from
        else None,
        target=target_from_env(args.store),
    )
    _emit(
        args,
        store.settings,
        f"initialised store {store.location} ({store.codec}, {human(store.chunk_size)} chunks)",
    )
    return 0


def _open(args: argparse.Namespace, path: str | None = None) -> Store:
    where = path or args.store
    return open_store(where, _kek(args), target=target_from_env(where))


def cmd_backup(args: argparse.Namespace, bar: ProgressBar, cancel: CancelFlag) -> int:
    store = _open(args)
    hints: dict[int, list[tuple[int, int]]] = {}
    for lun, path in _pairs(args.changed_extents or [], "--changed-extents").items():
        with open(path) as f:
            hints[lun] = [(int(o), int(n)) for o, n in json.load(f)]
    disks = [
        DiskSource(lun, path, hints.get(lun)) for lun, path in _pairs(args.disk, "--disk").items()
    ]
    labels = {}
    for item in args.label or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--label must look like KEY=VALUE, got {item!r}")
        labels[k] = v
    req = BackupRequest(
        store=store,
        disks=disks,
        vm_name=args.vm,
        parent=args.parent,
        consistency=args.consistency,
        tags=list(args.tag or []),
        retain_until=datetime.fromisoformat(args.retain_until.replace("Z", "+00:00"))
        if args.retain_until
        else None,
        labels=labels,
        rp_id=args.rp_id,
    )
    res = backup(req, progress=bar, cancel=cancel, threads=args.threads)
    bar.done()
    obj = {
        "rp_id": res.rp_id,
        "parent": res.parent,
        "duration": res.duration,
        "disks": [d.to_json() for d in res.disks],
    }
    text = (
        f"{res.rp_id}\n"
        f"read {human(res.bytes_read)}, changed {human(res.bytes_changed)}, "
        f"stored {human(res.bytes_stored)} in {res.chunks_new} new chunks "
        f"({res.chunks_new - res.chunks_delta} whole, {res.chunks_delta} as deltas saving "
        f"{human(res.bytes_saved)}), {res.duration:.2f}s"
    )
    if args.json:
        print(json.dumps(obj, indent=2))
    else:
        print(res.rp_id)
        print(text.split("\n", 1)[1], file=sys.stderr)
    return 0


def cmd_transfer(args: argparse.Namespace, bar: ProgressBar, cancel: CancelFlag) -> int:
    kek = _kek(args)
    src = open_store(args.src, kek, target=target_from_env(args.src))
    dst = open_store(args.dst, kek, target=target_from_env(args.dst))
    res = transfer(src, dst, args.rp_id, progress=bar, cancel=cancel, threads=args.threads)
    bar.done()
    _emit(
        args,
        asdict(res),
        f"transferred {res.rp_id}: {res.chunks_copied} chunks ({human(res.bytes_copied)}) copied "
        f"({res.chunks_delta} as deltas), {res.chunks_present} already present, "
        f"{res.duration:.2f}s",
    )
    return 0


def cmd_restore(args: argparse.Namespace, bar: ProgressBar, cancel: CancelFlag) -> int:
    store = _open(args)
    targets = _pairs(args.disk, "--disk")
    res = restore(
        store,
        args.rp_id,
        targets,
        progress=bar,
        cancel=cancel,
        sync=not args.no_sync,
        threads=args.threads,
    )
    bar.done()
    _emit(
        args,
        asdict(res),
        f"restored {res.rp_id}: {human(res.bytes_written)} written, {res.duration:.2f}s",
    )
    return 0


def _report(args: argparse.Namespace, rep: Any) -> int:
    obj = {
        "ok": rep.ok,
        "keyed": rep.keyed,
        "rps_checked": rep.rps_checked,
        "chunks_checked": rep.chunks_checked,
        "damage": [asdict(d) for d in rep.damage],
    }
    lines = [str(d) for d in rep.damage]
    lines.append(
        f"{'verify' if rep.keyed else 'scrub'}: {len(rep.rps_checked)} recovery points, "
        f"{rep.chunks_checked} chunks, {'OK' if rep.ok else f'{len(rep.damage)} problems'}"
    )
    _emit(args, obj, "\n".join(lines))
    return 0 if rep.ok else 1


def cmd_verify(args: argparse.Namespace, bar: ProgressBar, cancel: CancelFlag) -> int:
    if args.keyless:
        rep = scrub(_keyless(args), progress=bar, cancel=cancel, threads=args.threads)
    else:
        rep = verify(_open(args), args.rp_ids or None, bar, cancel, threads=args.threads)
    bar.done()
    return _report(args, rep)


def _keyless(args: argparse.Namespace) -> Store:
    return Store.open(args.store, None, target=target_from_env(args.store))


def cmd_scrub(args: argparse.Namespace, bar: ProgressBar, cancel: CancelFlag) -> int:
    rep = scrub(_keyless(args), progress=bar, cancel=cancel, threads=args.threads)
    bar.done()
    return _report(args, rep)


def cmd_gc(args: argparse.Namespace) -> int:
    res = gc(_open(args), args.grace, wait_seconds=args.wait, dry_run=args.dry_run)
    _emit(
        args,
        asdict(res),
        f"gc: {res.chunks_live} live chunks, swept {res.chunks_swept} ({human(res.bytes_swept)}), "
        f"{res.chunks_in_grace} kept by the grace window",
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    st = store_stats(args.store)
    if not st.exists:
        raise StoreNotFound(f"no store at {args.store}")
    obj = asdict(st) | {"dedup_ratio": st.dedup_ratio, "compression_ratio": st.compression_ratio}
    _emit(
        args,
        obj,
        f"{st.recovery_points} recovery points, {st.chunks} chunk files "
        f"({human(st.stored_bytes)} stored)\n"
        f"referenced: {st.unique_chunks} chunks, {human(st.unique_bytes)} unique, "
        f"{human(st.referenced_bytes)} in all\n"
        f"stored whole: {st.unique_chunks - st.missing_chunks - st.delta_chunks}, "
        f"as deltas: {st.delta_chunks} (saving {human(st.delta_saved_bytes)}), "
        f"bases kept for deltas: {st.base_chunks} ({human(st.base_bytes)})\n"
        f"garbage: {st.garbage_chunks} chunks ({human(st.garbage_bytes)}), "
        f"missing: {st.missing_chunks}",
    )
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    rps = list_recovery_points(_open(args))
    if args.json:
        print(json.dumps([_rp_json(rp) for rp in rps], indent=2))
        return 0
    print(f"{'RP':36}  {'VM':16} {'CREATED':20} {'SIZE':>10} {'DISKS':5} PARENT / TAGS / LABELS")
    for rp in rps:
        extra = " ".join(
            [rp.parent or "-"]
            + [f"#{t}" for t in rp.tags]
            + [f"{k}={v}" for k, v in rp.labels.items()]
        )
        created = rp.created.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{rp.rp_id:36}  {rp.vm_name[:16]:16} {created:20} {human(rp.size):>10} {len(rp.disks):5} {extra}"
        )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = _open(args)
    for rp_id in args.rp_ids:
        delete_recovery_point(store, rp_id)
        print(f"deleted {rp_id}")
    return 0


def cmd_rewrap(args: argparse.Namespace) -> int:
    rewrap_keys(
        args.store,
        _kek(args),
        load_key_file(args.new_key_file),
        target=target_from_env(args.store),
    )
    print(f"re-wrapped keys of {args.store}")
    return 0


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options every command takes; suppressed defaults on the sub-command level, so they work
    before or after the sub-command."""
    c = argparse.ArgumentParser(
        add_help=False, argument_default=argparse.SUPPRESS if suppress else None
    )
    c.add_argument("--key-file", help="KEK file (default: $LIFEBOAT_MASTER_KEY_FILE)")
    c.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    c.add_argument("--threads", type=int, help="worker threads (default: cores)")
    return c


AddCommand = Callable[[str, str], argparse.ArgumentParser]


def build_parser() -> argparse.ArgumentParser:
    common = _common_options(suppress=True)
    p = argparse.ArgumentParser(
        prog="python -m engine",
        description=__doc__,
        parents=[_common_options(suppress=False)],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, parents=[common])

    _add_setup_commands(add)
    _add_recovery_point_commands(add)
    _add_maintenance_commands(add)
    return p


def _add_setup_commands(add: AddCommand) -> None:
    s = add("create-key", "create a new key file (32 random bytes, mode 0600)")
    s.add_argument("path", nargs="?", help="default: --key-file or $LIFEBOAT_MASTER_KEY_FILE")

    s = add("init", "create a store")
    s.add_argument("store")
    s.add_argument("--codec", default="zstd:1", help="none or zstd:<level> (default zstd:1)")
    s.add_argument("--chunk-size", default="1M", help="power of two, e.g. 256K, 1M (default 1M)")
    s.add_argument("--keys-from", help="vault store whose keys this (snapshot-tier) store shares")


def _add_recovery_point_commands(add: AddCommand) -> None:
    s = add("backup", "back up disks into a new recovery point")
    s.add_argument("store")
    s.add_argument("--vm", required=True, help="VM name")
    s.add_argument("--disk", action="append", required=True, metavar="LUN=PATH")
    s.add_argument("--parent", help="parent recovery point id (incremental)")
    s.add_argument(
        "--changed-extents",
        action="append",
        metavar="LUN=JSONFILE",
        help="JSON list of [offset, length] written since the parent",
    )
    s.add_argument("--consistency", default="crash")
    s.add_argument("--tag", action="append")
    s.add_argument("--label", action="append", metavar="KEY=VALUE")
    s.add_argument("--retain-until", help="ISO 8601 time")
    s.add_argument("--rp-id", help="preset recovery point UUID")

    s = add("transfer", "copy a recovery point to another store")
    s.add_argument("src")
    s.add_argument("dst")
    s.add_argument("rp_id")

    s = add("restore", "restore disks of a recovery point to files")
    s.add_argument("store")
    s.add_argument("rp_id")
    s.add_argument("--disk", action="append", required=True, metavar="LUN=PATH")
    s.add_argument("--no-sync", action="store_true", help="skip the final fsync")


def _add_maintenance_commands(add: AddCommand) -> None:
    s = add("verify", "verify recovery points (keyed) or scrub (--keyless)")
    s.add_argument("store")
    s.add_argument("rp_ids", nargs="*")
    s.add_argument("--keyless", action="store_true", help="outer checksums only, no key needed")

    s = add("scrub", "keyless check of every file in the store")
    s.add_argument("store")

    s = add("gc", "sweep chunks no recovery point references")
    s.add_argument("store")
    s.add_argument("--grace", type=float, default=86400.0, help="seconds (default 86400)")
    s.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the lock")
    s.add_argument("--dry-run", action="store_true")

    s = add("stats", "chunks stored whole and as deltas, bytes saved, garbage (local store)")
    s.add_argument("store")

    s = add("ls", "list recovery points from the store alone")
    s.add_argument("store")

    s = add("delete", "delete recovery points")
    s.add_argument("store")
    s.add_argument("rp_ids", nargs="+")

    s = add("rewrap", "re-wrap the store keys under a new KEK")
    s.add_argument("store")
    s.add_argument("--new-key-file", required=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bar = ProgressBar(sys.stderr, enabled=not args.quiet)
    cancel = CancelFlag()
    cancel.install()
    try:
        if args.cmd == "create-key":
            return cmd_create_key(args)
        if args.cmd == "init":
            return cmd_init(args)
        if args.cmd == "backup":
            return cmd_backup(args, bar, cancel)
        if args.cmd == "transfer":
            return cmd_transfer(args, bar, cancel)
        if args.cmd == "restore":
            return cmd_restore(args, bar, cancel)
        if args.cmd == "verify":
            return cmd_verify(args, bar, cancel)
        if args.cmd == "scrub":
            return cmd_scrub(args, bar, cancel)
        if args.cmd == "gc":
            return cmd_gc(args)
        if args.cmd == "stats":
            return cmd_stats(args)
        if args.cmd == "ls":
            return cmd_ls(args)
        if args.cmd == "delete":
            return cmd_delete(args)
        if args.cmd == "rewrap":
            return cmd_rewrap(args)
    except Cancelled as e:
        bar.done()
        print(f"cancelled: {e}", file=sys.stderr)
        return 130
    except CorruptionError as e:
        bar.done()
        print(f"error: {e}", file=sys.stderr)
        for d in e.details:
            print(f"  {d}", file=sys.stderr)
        return 1
    except EngineError as e:
        bar.done()
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return 2
