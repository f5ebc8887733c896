"""Shared helpers of the benchmark scripts: image building, churn, timed subprocesses."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SBIN = os.pathsep.join(["/usr/sbin", "/sbin"])


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=SBIN)
    if not found:
        raise SystemExit(f"{name} not found")
    return found


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


@dataclass
class Run:
    seconds: float
    maxrss: int  # bytes
    stdout: str


def timed(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run a command: wall time, stdout, and its peak RSS (wait4 ru_maxrss of that child)."""
    t0 = time.monotonic()
    # stdout goes to a file, not a pipe: a child that writes more than a pipe holds while
    # stderr is read would block; the pid is waited for with wait4 to get its own rusage.
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.PIPE)
        assert p.stderr is not None
        err = p.stderr.read()
        _pid, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        dt = time.monotonic() - t0
        out.seek(0)
        text = out.read().decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({p.returncode}): {err[-2000:]!r}")
    return Run(dt, ru.ru_maxrss * 1024, text)


def stage_usr(dest: Path, budget: int, skip: set[str] | None = None) -> tuple[int, list[Path]]:
    """Hard-link (or copy) regular files from /usr into dest until budget bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    total = 0
    used: list[Path] = []
    for dirpath, dirnames, filenames in os.walk("/usr"):
        dirnames.sort()
        for fn in sorted(filenames):
            src = Path(dirpath) / fn
            if skip is not None and str(src) in skip:
                continue
            try:
                st = src.lstat()
            except OSError:
                continue
            if not src.is_file() or src.is_symlink() or st.st_size == 0:
                continue
            if total + st.st_size > budget:
                continue
            out = dest / src.relative_to("/")
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, out)
            except OSError:
                try:
                    shutil.copyfile(src, out)
                except OSError:
                    continue
            total += st.st_size
            used.append(src)
            if total >= budget * 0.999:
                return total, used
    return total, used


def make_image(image: Path, size: int, fill: float, staging: Path) -> int:
    """ext4 image of `size` bytes about `fill` full of /usr files; returns staged bytes."""
    if staging.exists():
        shutil.rmtree(staging)
    # ext4 metadata and per-file slack take room: stage a bit less than the target
    staged, _ = stage_usr(staging, int(size * fill * 0.97))
    image.unlink(missing_ok=True)
    subprocess.run(
        [
            tool("mkfs.ext4"),
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            str(staging),
            str(image),
            str(size // 1024) + "K",
        ],
        check=True,
        capture_output=True,
    )
    return staged


def churn(image: Path, nbytes: int, workdir: Path, seed: int = 1) -> int:
    """Write about nbytes of new files (real /usr files, renamed) into the image with debugfs."""
    rnd = random.Random(seed)
    candidates: list[Path] = []
    for dirpath, dirnames, filenames in os.walk("/usr/share"):
        dirnames.sort()
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            if p.is_file() and not p.is_symlink() and 4096 < p.stat().st_size < (8 << 20):
                candidates.append(p)
    rnd.shuffle(candidates)
    workdir.mkdir(parents=True, exist_ok=True)
    cmds = ["mkdir churn"]
    total = 0
    for n, p in enumerate(candidates):
        if total >= nbytes:
            break
        local = workdir / f"c{n}"
        data = bytearray(p.read_bytes())
        data[:16] = rnd.randbytes(16)  # a new file, not a copy the dedup could find
        local.write_bytes(bytes(data))
        cmds.append(f"write {local} churn/f{n}")
        total += len(data)
    script = workdir / "debugfs.cmds"
    script.write_text("\n".join(cmds) + "\n")
    subprocess.run(
        [tool("debugfs"), "-w", "-f", str(script), str(image)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(workdir)
    return total


def data_extents(path: Path) -> list[tuple[int, int]]:
    sys.path.insert(0, str(REPO))
    from engine.pipeline import data_extents as de

    fd = os.open(path, os.O_RDONLY)
    try:
        return de(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _d, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def drop_file(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
