#!/usr/bin/env python3
"""The ransomware signal's false-positive and detection rates, over repeated normal churn.

For each of --vms lab-like VMs (a 48 MiB ext4 image of compressible documents, as
`inventory.lab.attack.documents` makes them): one full backup, then --backups incrementals,
each after a normal churn of 0.25-2 MiB of new random files (`lab churn`, `churn_image`).
Every incremental is judged as the product judges it (`jobs.anomaly.figures` and
`judge_figures`, the VM's last 14 incrementals as history); a suspicious one among them is a
false positive (once MIN_HISTORY incrementals exist). After every 10th churn, copies of the
image are attacked (`lab attack`, `attack_image`: files overwritten with random bytes and
renamed) at shares 1, 0.5 and 0.25 of the files, backed up on top of the same parent and
judged: detected or not. The attacked copies do not enter the history.

    .venv/bin/python bench/ransomware_signal.py [--vms 3] [--backups 40] [--readme]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORK = Path(tempfile.mkdtemp(prefix="signal-", dir=REPO / "bench" / "work"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
os.environ["LIFEBOAT_DATA_DIR"] = str(WORK / "data")

import django  # noqa: E402

django.setup()

import engine  # noqa: E402
from inventory.lab.attack import attack_image, documents  # noqa: E402
from inventory.lab.images import churn_image, make_image  # noqa: E402
from jobs.anomaly import MIN_HISTORY, figures, judge_figures  # noqa: E402

SHARES = (1.0, 0.5, 0.25)


def backup(store: engine.Store, image: Path, parent: str | None) -> engine.BackupResult:
    return engine.backup(
        engine.BackupRequest(store, [engine.DiskSource(0, str(image))], "vm", parent=parent)
    )


def run_vm(n: int, backups: int, kek: bytes) -> dict[str, list[int]]:
    rng = random.Random(n)
    image = WORK / f"vm{n}.img"
    make_image(image, 48, f"vm{n}", documents(f"vm{n}"))
    store = engine.init_store(WORK / f"store{n}", kek)
    parent = backup(store, image, None).rp_id
    history: list[dict] = []
    out = {"judged": [], "fp": [], **{f"attack {s:g}": [] for s in SHARES}}
    for i in range(backups):
        churn_image(image, rng.uniform(0.25, 2.0), tag=f"c{i}")
        res = backup(store, image, parent)
        state, signal = judge_figures([figures(d) for d in res.disks], history)
        if signal["history"] >= MIN_HISTORY:
            out["judged"].append(1)
            out["fp"].append(int(state == "suspicious"))
        history.insert(0, signal)
        parent = res.rp_id
        if (i + 1) % 10 == 0 and len(history) > MIN_HISTORY:
            for share in SHARES:
                copy = WORK / f"vm{n}-attacked.img"
                shutil.copyfile(image, copy)
                attack_image(copy, share)
                hit = engine.backup(
                    engine.BackupRequest(
                        store, [engine.DiskSource(0, str(copy))], "vm", parent=parent
                    )
                )
                state, _ = judge_figures([figures(d) for d in hit.disks], history)
                out[f"attack {share:g}"].append(int(state == "suspicious"))
                engine.delete_recovery_point(store, hit.rp_id)
                copy.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=3)
    ap.add_argument("--backups", type=int, default=40)
    args = ap.parse_args()
    kek = engine.create_platform_kek(WORK / "master.key")
    total: dict[str, list[int]] = {}
    try:
        for n in range(args.vms):
            for key, values in run_vm(n, args.backups, kek).items():
                total.setdefault(key, []).extend(values)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    judged = len(total["judged"])
    print(
        f"{args.vms} VMs x {args.backups} churn backups; {judged} judged (history >= {MIN_HISTORY})"
    )
    print("| Case | Backups judged | Flagged | Rate |")
    print("|---|---:|---:|---:|")
    fp = sum(total["fp"])
    print(
        f"| normal churn 0.25-2 MiB (false positives) | {judged} | {fp} | {fp / max(1, judged):.1%} |"
    )
    for share in SHARES:
        hits = total[f"attack {share:g}"]
        print(
            f"| attack on {share:.0%} of the files (detection) | {len(hits)} | {sum(hits)} | "
            f"{sum(hits) / max(1, len(hits)):.0%} |"
        )


if __name__ == "__main__":
    main()
