"""Why a chunk got its requeue signal: its time limit is near (a timeout) or Slurm
preempted it.

submitit guesses from elapsed time alone: a signal counts as a timeout once 80 % of the
limit has passed, and always when the limit is 10 minutes or less, so short or late
preemptions used up `slurm.max_timeout_requeues` and failed chunks that were never out of
time. The job's real end time is known to Slurm: a timeout signal comes `--signal`'s delay
before it (Slurm may send it up to 60 s early), a preemption at any other moment.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import time

log = logging.getLogger("wmsub.requeue")

# Slurm sends a `--signal` up to 60 s before the asked delay; a little clock slack on top.
EARLY_SIGNAL_SLACK_S = 90


def job_end_time(job_id: str | None = None, timeout_s: float = 20) -> float | None:
    """The running job's scheduled end (epoch seconds) from squeue; None when unknown."""
    job_id = job_id or os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True,
                             text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_slurm_time(out.stdout.strip()) if out.returncode == 0 else None


def parse_slurm_time(text: str) -> float | None:
    """squeue's '2026-11-30T16:14:10' (local time) as epoch seconds; None for 'N/A' etc."""
    try:
        return dt.datetime.fromisoformat(text.split()[0]).timestamp()
    except (ValueError, IndexError):
        return None


def is_timeout(end_time: float | None, signal_delay_s: float, now: float | None = None) -> bool | None:
    """True when a signal at `now` is the time-limit warning; None when the end is unknown."""
    if end_time is None:
        return None
    now = time.time() if now is None else now
    return now >= end_time - signal_delay_s - EARLY_SIGNAL_SLACK_S


class RequeueClassifier:
    """Replaces submitit's elapsed-time guess (in this process) with the job's end time,
    and remembers the verdict for the chunk record."""

    def __init__(self, signal_delay_s: float, end_time: float | None = None):
        self.signal_delay_s = signal_delay_s
        self.end_time = end_time if end_time is not None else job_end_time()
        self.last: str | None = None  # "timeout" | "preemption" once a signal came

    def install(self) -> "RequeueClassifier":
        from submitit.core.job_environment import SignalHandler
        classifier = self
        guess = getattr(SignalHandler.has_timed_out, "submitit_guess", SignalHandler.has_timed_out)

        def has_timed_out(handler) -> bool:
            verdict = is_timeout(classifier.end_time, classifier.signal_delay_s)
            source = "the job's end time"
            if verdict is None:  # not under Slurm (local executor): submitit's guess
                verdict, source = guess(handler), "submitit's elapsed-time guess"
            classifier.last = "timeout" if verdict else "preemption"
            log.warning("requeue signal: %s (from %s)", classifier.last, source)
            return verdict
        has_timed_out.submitit_guess = guess
        SignalHandler.has_timed_out = has_timed_out
        return self
