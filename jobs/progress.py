"""A job's progress as readers see it: one overall percentage that only moves forward, and
each phase's per-disk bytes.

A job that runs several engine phases (a backup: snapshot, then transfer; a replace-disks
restore: safety copy, then restore) declares them with their weights first (`plan`). Each
phase then fills its own share: the overall percentage is the finished phases' weights plus
the running phase's weight times its fraction, and it never goes below what was shown
before (a phase's byte total can grow as the engine learns it). Without a plan, the one
phase is the whole job.

Everything lives in `Job.result["progress"]`:
``{"phase", "disks" (the running phase's), "percent", "plan": [[phase, weight], …],
"phases": {phase: {"done", "total", "disks": [{"lun", "done", "total"}]}}}``.
"""

import time
from typing import Any

import engine
from jobs.models import SubTask
from jobs.runner import JobContext
from portal.options import option

# A backup's snapshot reads every selected disk; its transfer sends what the vault lacks.
# Reading dominates on the machines Lifeboat targets, so the snapshot weighs more.
BACKUP_PLAN = [("snapshot", 60), ("transfer", 40)]
REPLACE_PLAN = [("safety", 40), ("restore", 60)]
# What each phase is called on the pages.
PHASE_WORDS = {
    "snapshot": "Snapshot",
    "transfer": "Transfer",
    "safety": "Safety copy",
    "restore": "Restore",
    "replicate": "Replicate",
}


def phase_words(phase: str) -> str:
    return PHASE_WORDS.get(phase, phase.replace("_", " ").capitalize())


def plan(ctx: JobContext, phases: list[tuple[str, int]]) -> None:
    """Declare the job's phases and their weights (summing to 100) before the first runs."""
    ctx.set_result(progress={**_progress(ctx), "plan": [[p, w] for p, w in phases]})


def _progress(ctx: JobContext) -> dict[str, Any]:
    value = ctx.job.result.get("progress")
    return dict(value) if isinstance(value, dict) else {}


def overall(progress: dict[str, Any], phase: str, fraction: float) -> int:
    """The overall percentage once `phase` is `fraction` done (0–1), never below the last
    one shown."""
    phases = [(str(p), int(w)) for p, w in progress.get("plan") or []]
    names = [p for p, _ in phases]
    if phase in names:
        i = names.index(phase)
        before = sum(w for _, w in phases[:i])
        value = before + phases[i][1] * fraction
    else:
        value = 100 * fraction
    return max(int(progress.get("percent", 0)), min(100, int(value)))


class EngineProgress:
    """Engine progress → the job's bytes, its phase's per-disk bytes, its overall percentage
    and its sub-task's byte count, written at most twice a second."""

    def __init__(
        self, ctx: JobContext, phase: str, sizes: dict[int, int], subtask: str | None = None
    ) -> None:
        self.ctx, self.phase, self.subtask = ctx, phase, subtask
        self.disks = {lun: {"done": 0, "total": size} for lun, size in sizes.items()}
        self.done = 0
        self.last_write = 0.0
        self.started = time.monotonic()
        self.throttle = option("THROTTLE_MIBPS", 0) * (1 << 20)

    def __call__(self, p: engine.Progress) -> None:
        if self.throttle:  # keep bytes_done / elapsed at most the limit (tests, drills)
            time.sleep(max(0.0, p.bytes_done / self.throttle - (time.monotonic() - self.started)))
        delta, self.done = p.bytes_done - self.done, p.bytes_done
        if p.disks:
            # The engine counts each disk: take its figures (a transfer's totals are the
            # chunks it must look at, not the disk sizes).
            self.disks = {lun: {"done": done, "total": total} for lun, done, total in p.disks}
        elif p.lun is not None and p.lun in self.disks:
            disk = self.disks[p.lun]
            disk["done"] = min(disk["total"], disk["done"] + max(delta, 0))
        now = time.monotonic()
        finished = p.bytes_done >= p.bytes_total
        if finished:
            for disk in self.disks.values():
                disk["done"] = disk["total"]
        if finished or now - self.last_write >= 0.5:
            self.last_write = now
            self._write(p, finished)

    def _write(self, p: engine.Progress, finished: bool) -> None:
        disks = [{"lun": lun, **v} for lun, v in sorted(self.disks.items())]
        progress = _progress(self.ctx)
        fraction = 1.0 if finished else (p.bytes_done / p.bytes_total if p.bytes_total else 0.0)
        phases = dict(progress.get("phases") or {})
        phases[self.phase] = {"done": p.bytes_done, "total": p.bytes_total, "disks": disks}
        progress.update(
            phase=self.phase,
            disks=disks,
            phases=phases,
            percent=overall(progress, self.phase, fraction),
        )
        self.ctx.progress(p.bytes_done, p.bytes_total, force=True, progress=progress)
        if self.subtask:
            SubTask.objects.filter(job_id=self.ctx.job.pk, name=self.subtask).update(
                bytes_done=p.bytes_done
            )
