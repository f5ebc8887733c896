"""The `test_target` job: a storage target's Test button, run where its credentials are used.

The credentials a target names (environment variables, or a file) are read by the process
that opens a store, and stores are opened by the workers, not by the web server. So the Test
runs as a short job on a worker (the default queue, as replications and lock extensions do):
it opens the location with the credentials that worker reads, and the job's result says what
it found and which worker looked. A failure is the job's error, with the exact cause.
"""

import engine
from jobs import runner
from jobs.models import Operation, Param
from jobs.runner import JobContext, JobError
from vaults.models import StorageTarget
from vaults.stores import probe_location

FOUND = {
    "store": "a Lifeboat store is there",
    "empty": "reachable; no store yet",
}


@runner.handles(Operation.TEST_TARGET)
def run_test_target(ctx: JobContext) -> None:
    params = ctx.job.params
    location = str(params.get(Param.LOCATION, ""))
    ctx.set_result(location=location, checked_by=ctx.job.worker)
    target = StorageTarget.objects.filter(pk=params.get(Param.TARGET)).first()
    if target is None:
        raise JobError("target_gone", "The storage target was deleted before the test ran.")
    try:
        found = probe_location(location, target)
    except (engine.EngineError, OSError) as e:
        raise JobError("target_unreachable", str(e) or type(e).__name__) from e
    ctx.set_result(found=found, detail=f"{location}: {FOUND[found]}.")
