"""One `squeue` and one `sacct` call for a set of jobs, parsed into normalized states.

The monitor asks about all of a run's jobs at once: a status of 35 chunks must not cost
35 round trips to slurmctld. squeue knows live jobs (and, with `-t all`, jobs that
ended less than MinJobAge ago); sacct knows everything the accounting database kept.
Both are optional: a missing command or disabled accounting comes back as an error
string, never as an exception, so `status` can say so and go on with what it has.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

# The states a chunk or stage can be shown in.
ACTIVE_STATES = ("pending", "running", "requeued")
FINAL_STATES = ("completed", "failed", "timeout", "cancelled")

_STATE_MAP = {
    "PENDING": "pending", "SUSPENDED": "pending", "STOPPED": "pending",
    "REQUEUE_HOLD": "requeued", "REQUEUE_FED": "requeued", "REQUEUED": "requeued",
    "PREEMPTED": "requeued", "SPECIAL_EXIT": "requeued",
    "RUNNING": "running", "COMPLETING": "running", "CONFIGURING": "running",
    "RESIZING": "running", "SIGNALING": "running", "STAGE_OUT": "running",
    "COMPLETED": "completed",
    "FAILED": "failed", "NODE_FAIL": "failed", "BOOT_FAIL": "failed",
    "OUT_OF_MEMORY": "failed", "DEADLINE": "failed", "REVOKED": "failed",
    "TIMEOUT": "timeout",
    "CANCELLED": "cancelled",
}

# squeue --Format fields, each padded to a fixed width and closed by "|" so that values
# with spaces (pending reasons) survive; widths are generous because squeue truncates.
_SQUEUE_FIELDS = (("JobArrayID", 48), ("JobID", 24), ("State", 24), ("Reason", 160),
                  ("TimeUsed", 24), ("RestartCnt", 10))
SQUEUE_FORMAT = ",".join(f"{name}:{width}|" for name, width in _SQUEUE_FIELDS)
SACCT_FIELDS = "JobID,JobIDRaw,State,ElapsedRaw,Reason,ExitCode"
COMMAND_TIMEOUT_S = 20


@dataclass
class JobInfo:
    job_id: str          # "A_i" for an array task, "A" for a single job
    raw_id: str          # Slurm's own unique id of the task (what scancel/sacct call JobIDRaw)
    state: str           # one of ACTIVE_STATES + FINAL_STATES + ("unknown",)
    slurm_state: str     # Slurm's word, e.g. "CANCELLED by 0", "PREEMPTED"
    reason: str = ""
    elapsed_s: int = 0   # this attempt (squeue) or all attempts summed (sacct -D)
    restarts: int = 0
    source: str = ""     # "squeue" | "sacct"


def normalize_state(slurm_state: str) -> str:
    """Slurm's state word (squeue %T or sacct State, e.g. 'CANCELLED by 0') -> our state."""
    word = slurm_state.strip().split(" ")[0].rstrip("+").upper()
    return _STATE_MAP.get(word, "unknown")


def parse_duration(text: str) -> int:
    """squeue's TimeUsed ('5:03', '1:02:03', '2-01:02:03') in seconds; 0 if unparseable."""
    text = text.strip()
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        if not head.isdigit():
            return 0
        days = int(head)
    parts = text.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        return 0
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return days * 86400 + seconds


_ARRAY_RANGE = re.compile(r"^(\d+)_\[([^\]]*)\]$")


def expand_job_id(job_id: str) -> list[str]:
    """'12_[0-2,5%4]' -> ['12_0', '12_1', '12_2', '12_5']; other ids unchanged.

    sacct (and squeue without -r) name the not-yet-started part of an array this way.
    """
    match = _ARRAY_RANGE.match(job_id.strip())
    if not match:
        return [job_id.strip()]
    master, spec = match.groups()
    spec = spec.split("%")[0]
    out = []
    for part in spec.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            step = 1
            if ":" in hi:
                hi, step_text = hi.split(":", 1)
                step = int(step_text)
            out.extend(f"{master}_{i}" for i in range(int(lo), int(hi) + 1, step))
        elif part.isdigit():
            out.append(f"{master}_{part}")
    return out


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """Output of `squeue -h -r -O SQUEUE_FORMAT` -> {job id: JobInfo}."""
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < len(_SQUEUE_FIELDS) or not cells[0]:
            continue
        array_id, raw_id, state, reason, used, restarts = cells[:len(_SQUEUE_FIELDS)]
        norm = normalize_state(state)
        for job_id in expand_job_id(array_id):
            jobs[job_id] = JobInfo(
                job_id=job_id, raw_id=raw_id, state=norm, slurm_state=state,
                reason="" if reason in ("None", "(null)") else reason,
                elapsed_s=parse_duration(used),
                restarts=int(restarts) if restarts.isdigit() else 0, source="squeue")
    return jobs


def parse_sacct(text: str) -> dict[str, JobInfo]:
    """Output of `sacct -X -n -P -D -o SACCT_FIELDS` -> {job id: JobInfo}.

    With -D a requeued job has one row per attempt, oldest first: the last row is its
    state now, the earlier rows count as restarts, and all rows' elapsed add up to the
    time the job really held its GPUs.
    """
    jobs: dict[str, JobInfo] = {}
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) < 6 or not cells[0]:
            continue
        array_id, raw_id, state, elapsed, reason, exit_code = (c.strip() for c in cells[:6])
        seconds = int(elapsed) if elapsed.isdigit() else 0
        norm = normalize_state(state)
        # sacct keeps the last pending reason after the job ran: only a pending job's counts.
        if norm != "pending" or reason in ("None", "(null)"):
            reason = ""
        if norm == "failed" and exit_code not in ("", "0:0"):
            code, _, sig = exit_code.partition(":")
            reason = f"exit code {code}" + (f", signal {sig}" if sig not in ("", "0") else "")
        for job_id in expand_job_id(array_id):
            earlier = jobs.get(job_id)
            jobs[job_id] = JobInfo(
                job_id=job_id, raw_id=raw_id, state=norm, slurm_state=state, reason=reason,
                elapsed_s=seconds + (earlier.elapsed_s if earlier else 0),
                restarts=(earlier.restarts + 1) if earlier else 0, source="sacct")
    return jobs


def _run(argv: list[str], timeout_s: float = COMMAND_TIMEOUT_S) -> tuple[int, str, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer within {timeout_s:.0f}s"
    return proc.returncode, proc.stdout, proc.stderr.strip()


def squeue_command(job_ids: list[str]) -> str:
    """The plain command a user can type to see the same jobs."""
    return f"squeue -j {','.join(job_ids)} -r" if job_ids else "squeue --me"


def query_squeue(job_ids: list[str], *, all_states: bool = True) -> tuple[dict[str, JobInfo], str | None]:
    """One squeue call for all `job_ids` (array masters expand to their tasks).

    all_states adds jobs that ended within MinJobAge, so a just-finished chunk shows as
    completed/failed even without accounting. Unknown ids are not an error: squeue
    refuses a list of only purged ids with 'Invalid job id specified'.
    """
    if not job_ids:
        return {}, None
    argv = ["squeue", "-h", "-r", "-j", ",".join(job_ids), "-O", SQUEUE_FORMAT]
    if all_states:
        argv += ["-t", "all"]
    rc, out, err = _run(argv)
    if rc != 0:
        if "Invalid job id" in err:
            return {}, None
        return {}, err or f"squeue exited with {rc}"
    return parse_squeue(out), None


def query_sacct(job_ids: list[str]) -> tuple[dict[str, JobInfo], str | None]:
    """One sacct call; (jobs, None) or ({}, why sacct can't be used)."""
    if not job_ids:
        return {}, None
    argv = ["sacct", "-X", "-n", "-P", "-D", "-j", ",".join(job_ids), "-o", SACCT_FIELDS]
    rc, out, err = _run(argv)
    if rc != 0 or "accounting storage is disabled" in err.lower():
        return {}, err.splitlines()[-1] if err else f"sacct exited with {rc}"
    return parse_sacct(out), None


def scancel(job_ids: list[str]) -> tuple[int, str]:
    """Cancel all `job_ids` (array masters cancel every task) in one call."""
    if not job_ids:
        return 0, ""
    rc, _out, err = _run(["scancel", *job_ids])
    return rc, err
