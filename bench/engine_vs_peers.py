#!/usr/bin/env python3
"""Lifeboat's engine versus restic and borg on one ext4 image (see bench/README.md).

One image (default 4 GiB, about 60% full of real files from /usr), then a churn writing about
2% of the image as new files with debugfs. For each tool: full backup, incremental after the
churn, full restore; bytes stored, bytes added by the incremental, peak RSS. Floors: reading
the image's data extents, single-threaded BLAKE3 over them, and cp --sparse=always as the
restore floor. Each figure is the median of --runs runs, page cache warm.

    .venv/bin/python bench/engine_vs_peers.py [--size 4G] [--runs 3] [--readme]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    REPO,
    Run,
    churn,
    data_extents,
    dir_bytes,
    human,
    make_image,
    parse_size,
    timed,
    tool,
)

PY = sys.executable
PASSWORD = "lifeboat-bench"


def ensure_peers() -> None:
    missing = [
        pkg for cmd, pkg in (("restic", "restic"), ("borg", "borgbackup")) if not shutil.which(cmd)
    ]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["RESTIC_PASSWORD"] = PASSWORD
    e["BORG_PASSPHRASE"] = PASSWORD
    e["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
    e["BORG_RELOCATED_REPO_ACCESS_IS_OK"] = "yes"
    e["PYTHONPATH"] = str(REPO)
    e.pop("DJANGO_SETTINGS_MODULE", None)
    return e


def cp_sparse(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "--sparse=always", "--reflink=never", str(src), str(dst)], check=True)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def floors(image: Path) -> dict[str, float]:
    """Read floor and single-threaded BLAKE3 floor over the data extents (warm cache)."""
    import blake3

    ext = data_extents(image)
    fd = os.open(image, os.O_RDONLY)
    buf = bytearray(1 << 20)
    mv = memoryview(buf)
    try:
        t0 = time.monotonic()
        for s, e in ext:
            off = s
            while off < e:
                n = os.preadv(fd, [mv[: min(1 << 20, e - off)]], off)
                off += n
        read_s = time.monotonic() - t0
        t0 = time.monotonic()
        h = blake3.blake3()
        for s, e in ext:
            off = s
            while off < e:
                n = os.preadv(fd, [mv[: min(1 << 20, e - off)]], off)
                blake3.blake3(mv[:n])  # per 1 MiB block, as a chunker would
                off += n
        b3_s = time.monotonic() - t0
        del h
    finally:
        os.close(fd)
    return {"read": read_s, "blake3": b3_s, "data_bytes": float(sum(e - s for s, e in ext))}


class Tool:
    name = ""

    def __init__(self, work: Path) -> None:
        self.repo = work / f"repo-{self.name}"
        self.work = work

    def reset(self) -> None:
        if self.repo.exists():
            shutil.rmtree(self.repo)

    def init(self) -> None: ...
    def full(self, disk: Path) -> Run: ...
    def incremental(self, disk: Path) -> Run: ...
    def restore(self, out_dir: Path, sync: bool) -> tuple[Run, Path]: ...


class Lifeboat(Tool):
    name = "lifeboat"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.key = work / "lifeboat.key"
        self.key.write_bytes(os.urandom(32))
        self.rps: list[str] = []

    def cmd(self, *args: str) -> list[str]:
        return [PY, "-m", "engine", "-q", "--key-file", str(self.key), *args]

    def init(self) -> None:
        timed(self.cmd("init", str(self.repo)), env=env())
        self.rps = []

    def full(self, disk: Path) -> Run:
        r = timed(
            self.cmd("backup", str(self.repo), "--vm", "bench", "--disk", f"0={disk}"), env=env()
        )
        self.rps.append(r.stdout.strip())
        return r

    def incremental(self, disk: Path) -> Run:
        r = timed(
            self.cmd(
                "backup",
                str(self.repo),
                "--vm",
                "bench",
                "--disk",
                f"0={disk}",
                "--parent",
                self.rps[-1],
            ),
            env=env(),
        )
        self.rps.append(r.stdout.strip())
        return r

    def restore(self, out_dir: Path, sync: bool) -> tuple[Run, Path]:
        out = out_dir / "disk.img"
        args = ["restore", str(self.repo), self.rps[-1], "--disk", f"0={out}"]
        if not sync:
            args.append("--no-sync")
        return timed(self.cmd(*args), env=env()), out


class Restic(Tool):
    name = "restic"

    def init(self) -> None:
        timed(
            [tool("restic"), "-r", str(self.repo), "init", "--repository-version", "2"], env=env()
        )

    def backup(self, disk: Path) -> Run:
        return timed(
            [tool("restic"), "-r", str(self.repo), "backup", "--quiet", disk.name],
            env=env(),
            cwd=disk.parent,
        )

    full = incremental = backup

    def restore(self, out_dir: Path, sync: bool) -> tuple[Run, Path]:
        r = timed(
            [tool("restic"), "-r", str(self.repo), "restore", "latest", "--target", str(out_dir)],
            env=env(),
        )
        out = out_dir / "disk.img"
        if sync:
            t0 = time.monotonic()
            fsync_path(out)
            r.seconds += time.monotonic() - t0
        return r, out


class Borg(Tool):
    name = "borg"
    n = 0

    def init(self) -> None:
        timed([tool("borg"), "init", "-e", "repokey", str(self.repo)], env=env())
        self.n = 0

    def backup(self, disk: Path) -> Run:
        self.n += 1
        return timed(
            [
                tool("borg"),
                "create",
                "--compression",
                "zstd,1",
                f"{self.repo}::a{self.n}",
                disk.name,
            ],
            env=env(),
            cwd=disk.parent,
        )

    full = incremental = backup

    def restore(self, out_dir: Path, sync: bool) -> tuple[Run, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        r = timed(
            [tool("borg"), "extract", "--sparse", f"{self.repo}::a{self.n}"], env=env(), cwd=out_dir
        )
        out = out_dir / "disk.img"
        if sync:
            t0 = time.monotonic()
            fsync_path(out)
            r.seconds += time.monotonic() - t0
        return r, out


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)]).returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="4G", help="image size (default 4G)")
    ap.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    ap.add_argument("--fill", type=float, default=0.6)
    ap.add_argument("--churn", type=float, default=0.02)
    ap.add_argument("--work", default=str(REPO / "bench" / "work"))
    ap.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    ap.add_argument("--json", help="also write raw figures to this file")
    args = ap.parse_args()
    size = parse_size(args.size)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ensure_peers()

    base = work / "base.img"
    churned = work / "churned.img"
    print(f"building {human(size)} ext4 image, {args.fill:.0%} of /usr files ...", file=sys.stderr)
    staged = make_image(base, size, args.fill, work / "staging")
    shutil.rmtree(work / "staging")
    cp_sparse(base, churned)
    churn_bytes = churn(churned, int(size * args.churn), work / "churn-files")
    os.sync()
    fl = [floors(churned) for _ in range(args.runs)]
    data_bytes = fl[0]["data_bytes"]

    src_dir = work / "src"
    src_dir.mkdir(exist_ok=True)
    disk = src_dir / "disk.img"
    tools: list[Tool] = [Lifeboat(work), Restic(work), Borg(work)]
    res: dict[str, dict[str, list[float]]] = {t.name: {} for t in tools}
    cp_times: dict[str, list[float]] = {"cp": [], "cp+sync": []}

    def add(t: str, k: str, v: float) -> None:
        res[t].setdefault(k, []).append(v)

    for run in range(args.runs):
        for t in tools:
            print(f"run {run + 1}/{args.runs}: {t.name}", file=sys.stderr)
            t.reset()
            t.init()
            disk.unlink(missing_ok=True)
            cp_sparse(base, disk)
            os.sync()  # every timed step starts with no dirty data in flight
            r = t.full(disk)
            add(t.name, "full", r.seconds)
            add(t.name, "rss", r.maxrss)
            size_full = dir_bytes(t.repo)
            disk.unlink()
            cp_sparse(churned, disk)
            os.sync()
            r = t.incremental(disk)
            add(t.name, "inc", r.seconds)
            add(t.name, "rss", r.maxrss)
            size_inc = dir_bytes(t.repo)
            add(t.name, "stored", size_inc)
            add(t.name, "added", size_inc - size_full)
            for sync in (False, True):
                out_dir = work / f"out-{t.name}"
                shutil.rmtree(out_dir, ignore_errors=True)
                out_dir.mkdir()
                os.sync()
                r, out = t.restore(out_dir, sync)
                add(t.name, "restore_sync" if sync else "restore", r.seconds)
                add(t.name, "rss", r.maxrss)
                add(t.name, "identical", float(same(churned, out)))
                shutil.rmtree(out_dir)
        for sync in (False, True):
            out = work / "cp-out.img"
            out.unlink(missing_ok=True)
            os.sync()
            t0 = time.monotonic()
            cp_sparse(churned, out)
            if sync:
                fsync_path(out)
            cp_times["cp+sync" if sync else "cp"].append(time.monotonic() - t0)
            out.unlink()
    for t in tools:
        t.reset()
    disk.unlink(missing_ok=True)

    med = {t: {k: statistics.median(v) for k, v in d.items()} for t, d in res.items()}
    for t in res:
        med[t]["rss"] = max(res[t]["rss"])
        med[t]["identical"] = min(res[t]["identical"])
    fr = statistics.median(f["read"] for f in fl)
    fb = statistics.median(f["blake3"] for f in fl)
    cp = statistics.median(cp_times["cp"])
    cps = statistics.median(cp_times["cp+sync"])

    lines = []
    lines.append(
        f"Image {human(size)} ext4, {human(data_bytes)} data extents ({human(staged)} of /usr files), "
        f"churn {human(churn_bytes)} of new files; median of {args.runs}; {os.cpu_count()} cores."
    )
    lines.append("")
    lines.append(
        "| | full backup | incremental | restore (no sync / sync) | stored | added by incr. | peak RSS | identical |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|:---:|")
    for t in ("lifeboat", "restic", "borg"):
        m = med[t]
        lines.append(
            f"| {t} | {m['full']:.2f} s | {m['inc']:.2f} s | {m['restore']:.2f} s / {m['restore_sync']:.2f} s "
            f"| {human(m['stored'])} | {human(m['added'])} | {human(m['rss'])} | {'yes' if m['identical'] else 'NO'} |"
        )
    lines.append(f"| floor: read data extents | {fr:.2f} s | {fr:.2f} s | | | | | |")
    lines.append(f"| floor: BLAKE3 1 thread | {fb:.2f} s | {fb:.2f} s | | | | | |")
    lines.append(f"| floor: cp --sparse=always | | | {cp:.2f} s / {cps:.2f} s | | | | |")
    lines.append("")
    L, R, B = med["lifeboat"], med["restic"], med["borg"]
    checks = [
        ("incremental <= 1.3 x BLAKE3 floor", L["inc"] <= 1.3 * fb, f"{L['inc'] / fb:.2f} x"),
        (
            "incremental >= 8 x faster than restic and borg",
            R["inc"] >= 8 * L["inc"] and B["inc"] >= 8 * L["inc"],
            f"restic {R['inc'] / L['inc']:.1f} x, borg {B['inc'] / L['inc']:.1f} x",
        ),
        (
            "bytes added by incremental <= 1.5 x churned",
            L["added"] <= 1.5 * churn_bytes,
            f"{L['added'] / churn_bytes:.2f} x",
        ),
        (
            "full >= 2.5 x faster than the faster peer",
            min(R["full"], B["full"]) >= 2.5 * L["full"],
            f"{min(R['full'], B['full']) / L['full']:.2f} x",
        ),
        (
            "vault size <= 1.15 x the smaller peer's",
            L["stored"] <= 1.15 * min(R["stored"], B["stored"]),
            f"{L['stored'] / min(R['stored'], B['stored']):.3f} x",
        ),
        (
            "restore >= 4 x faster than restic",
            R["restore"] >= 4 * L["restore"] and R["restore_sync"] >= 4 * L["restore_sync"],
            f"{R['restore'] / L['restore']:.1f} x (sync: {R['restore_sync'] / L['restore_sync']:.1f} x)",
        ),
        (
            "restore >= 0.7 x cp's speed",
            cp / L["restore"] >= 0.7 and cps / L["restore_sync"] >= 0.7,
            f"{cp / L['restore']:.2f} x (sync: {cps / L['restore_sync']:.2f} x)",
        ),
        ("restore byte-identical", bool(L["identical"]), "cmp"),
        ("peak RSS <= 300 MiB", L["rss"] <= 300 << 20, human(L["rss"])),
    ]
    lines.append("| target | met | measured |")
    lines.append("|---|:---:|---|")
    for name, ok, detail in checks:
        lines.append(f"| {name} | {'met' if ok else 'NOT met'} | {detail} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "median": med,
                    "floors": {"read": fr, "blake3": fb, "cp": cp, "cp_sync": cps},
                    "churn": churn_bytes,
                    "data": data_bytes,
                    "checks": [(n, ok) for n, ok, _ in checks],
                },
                indent=2,
            )
        )
    if args.readme:
        readme = REPO / "bench" / "README.md"
        text = readme.read_text() if readme.exists() else ""
        start, end = "<!-- engine_vs_peers:start -->", "<!-- engine_vs_peers:end -->"
        cmd = f"`.venv/bin/python bench/engine_vs_peers.py --size {args.size} --runs {args.runs} --readme`"
        block = f"{start}\n{time.strftime('%Y-%m-%d')}, reproduce with {cmd}:\n\n{table}\n{end}"
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
        else:
            text += "\n" + block + "\n"
        readme.write_text(text)
    shutil.rmtree(work / "src", ignore_errors=True)
    for p in (base, churned):
        p.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
