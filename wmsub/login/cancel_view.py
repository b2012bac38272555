"""`launch.py cancel` for people: what would be cancelled, the question, the summary."""
from __future__ import annotations

import sys

from wmsub.login import slurm_query as sq
from wmsub.login.monitor import slurm_ids_of
from wmsub.state.runs import RunFolder


def describe_jobs(run: RunFolder) -> list[str]:
    """One line per stage entry of jobs.json: stage, job id, how many tasks are queued now."""
    jobs = run.jobs()
    ids = slurm_ids_of(jobs)
    queue, error = sq.query_squeue(ids, all_states=False)
    lines = []
    for entry in jobs:
        job_id = str(entry.get("job_id", ""))
        if entry.get("executor", "slurm") != "slurm":
            lines.append(f"  {entry.get('stage', 'gen'):<6} {job_id:<12} local executor (not cancelled)")
            continue
        queued = [j for j in queue.values() if j.job_id == job_id or j.job_id.startswith(job_id + "_")]
        where = ("squeue failed: " + error) if error else (
            f"{len(queued)} task(s) in the queue" if queued else "nothing in the queue")
        lines.append(f"  {entry.get('stage', 'gen'):<6} {job_id:<12} {where}")
    return lines


def confirm_cancel(run: RunFolder, stdin=None, stdout=None) -> bool:
    """Ask before cancelling the latest run (no --run given)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    lines = describe_jobs(run)
    stdout.write(f"cancel run {run.name} (the latest; --run picks another)?\n"
                 + ("\n".join(lines) if lines else "  no jobs recorded") + "\n"
                 "finished videos stay; claims of its jobs are released. [y/N] ")
    stdout.flush()
    answer = stdin.readline().strip().lower()
    return answer in ("y", "yes")


def format_cancel(result: dict) -> str:
    """cancel_run's answer as a few sentences."""
    run = result["run"]
    if not result["job_ids"]:
        lines = [f"run {run}: no Slurm jobs recorded; nothing to cancel"]
    elif result["scancel_error"]:
        lines = [f"run {run}: scancel failed (exit {result['scancel_rc']}): {result['scancel_error']}"]
    else:
        lines = [f"run {run}: cancelled job(s) {', '.join(result['job_ids'])} (every stage and task)"]
    if result["still_queued"]:
        lines.append(f"still in the queue after {result['waited_s']:g}s: "
                     f"{', '.join(result['still_queued'])}; claims and temp files left alone — "
                     f"run cancel again once squeue no longer lists them")
    elif result["job_ids"]:
        lines.append(f"the queue is clear of them (waited {result['waited_s']:g}s)")
    lines.append(f"released {len(result['released_claims'])} claim(s)"
                 + (f": {', '.join(result['released_claims'])}" if result["released_claims"] else "")
                 + f"; removed {len(result['removed_temps'])} temp file(s) of killed writers")
    if result["not_cancelled_local_jobs"]:
        lines.append(f"local-executor jobs are not Slurm jobs and were left alone: "
                     f"{', '.join(result['not_cancelled_local_jobs'])}")
    lines.append(f"finished videos stay; continue with: python launch.py resubmit --run {run}")
    return "\n".join(lines)
