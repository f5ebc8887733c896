"""What readers see of a VM's consistency hooks.

The messages of hook problems name script paths, parameters, freeze/thaw commands and quote
what the hooks printed: details for those who may `view_hook_details` (operators and above).
Everybody else gets the problem's code and the sentence below for it.
"""

from engine.connectors import spec

# jobs.backup.after_backup_lost: the thaw run again after a backup's worker died.
THAW_AFTER_WORKER_LOST = "thaw_after_worker_lost"

SUMMARIES = {
    spec.PRE_SCRIPT_NOT_FOUND: "The pre-script was not found.",
    spec.POST_SCRIPT_NOT_FOUND: "The post-script was not found.",
    spec.SCRIPT_NOT_EXECUTABLE: "A hook script is not executable.",
    spec.INSECURE_PERMISSIONS: "A hook script or one of its folders may be changed by others.",
    spec.INVALID_CONFIGURATION: "The VM's hook configuration is not valid.",
    spec.PRE_SCRIPT_TIMEOUT: "The pre-script timed out.",
    spec.POST_SCRIPT_TIMEOUT: "The post-script timed out.",
    spec.PRE_SCRIPT_FAILED: "The pre-script failed.",
    spec.POST_SCRIPT_FAILED: "The post-script failed.",
    spec.FREEZE_FAILED: "The freeze command failed.",
    spec.THAW_FAILED: "THAW FAILED: the VM's file systems may still be frozen.",
    THAW_AFTER_WORKER_LOST: "The VM's thaw command ran again after the backup's worker was lost.",
}
HIDDEN = "Operators see the details."


def message(code: str, text: str, *, details: bool) -> str:
    """`text` itself, or, without `details`, the summary of a hook problem's code."""
    if details or code not in SUMMARIES:
        return text
    return f"{SUMMARIES[code]} {HIDDEN}"


def warnings(items: list[dict], *, details: bool) -> list[dict]:
    return [
        {**w, "message": message(w.get("code", ""), w.get("message", ""), details=details)}
        for w in items
    ]
