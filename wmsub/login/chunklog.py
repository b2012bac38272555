"""`launch.py logs`: one chunk's submitit log, printed or followed live (`-f`).

The paths are submitit's (`monitor.log_paths`, from submitit's JobPaths): stdout holds the
worker's log lines, stderr tracebacks and warnings. Both are shown, each under a
`==> path <==` header as `tail` does.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from wmsub.login import slurm_query as sq
from wmsub.login.monitor import collect_status, current_chunk_jobs, log_paths
from wmsub.state.runs import RunFolder

FOLLOW_POLL_S = 0.5
QUEUE_POLL_S = 5.0


def default_chunk(run: RunFolder) -> int | None:
    """The first running chunk, else the first that failed, else the first."""
    chunks = collect_status(run.path)["chunks"]
    for wanted in (("running", "requeued"), ("failed", "timeout", "cancelled", "unknown")):
        for c in chunks:
            if c["state"] in wanted and c["job_id"]:
                return c["index"]
    return chunks[0]["index"] if chunks else None


class _Follower:
    """Prints what is appended to a set of files, with a header whenever the file changes."""

    def __init__(self, paths: list[Path], out=None):
        self.paths, self.out = paths, out or sys.stdout
        self.offsets = {p: 0 for p in paths}
        self.last: Path | None = None

    def drain(self) -> int:
        printed = 0
        for path in self.paths:
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[path])
                    data = f.read()
            except OSError:
                continue
            if not data:
                continue
            self.offsets[path] += len(data)
            if path != self.last:
                self.out.write(("\n" if self.last else "") + f"==> {path} <==\n")
                self.last = path
            self.out.write(data.decode(errors="replace"))
            printed += len(data)
        self.out.flush()
        return printed


def _job_active(job_id: str) -> bool:
    queue, error = sq.query_squeue([job_id.split("_")[0]], all_states=False)
    return error is not None or job_id in queue


def show_chunk_log(run: RunFolder, chunk: int | None, rank: int = 0, *, follow: bool = False,
                   out=None) -> int:
    out = out or sys.stdout
    jobs = current_chunk_jobs(run.jobs())
    if chunk is None:
        chunk = default_chunk(run)
    if chunk not in jobs:
        known = ", ".join(map(str, sorted(jobs))) or "none"
        print(f"error: chunk {chunk} of run {run.name} has no job (chunks with jobs: {known})",
              file=sys.stderr)
        return 2
    job_id, entry = jobs[chunk]
    err, std = log_paths(run.path, job_id, rank)
    print(f"chunk {chunk}, job {job_id}, rank {rank} of run {run.name}", file=sys.stderr)
    follower = _Follower([std, err], out)
    follower.drain()
    if not follow:
        if not (std.exists() or err.exists()):
            print(f"no log yet: {std} (the job may still be pending; see `launch.py status`)",
                  file=sys.stderr)
            return 1
        return 0
    is_slurm = entry.get("executor", "slurm") == "slurm"
    next_queue_check = time.monotonic() + QUEUE_POLL_S
    try:
        while True:
            time.sleep(FOLLOW_POLL_S)
            follower.drain()
            if is_slurm and time.monotonic() >= next_queue_check:
                next_queue_check = time.monotonic() + QUEUE_POLL_S
                if not _job_active(job_id):
                    follower.drain()  # what the job wrote while it ended
                    print(f"job {job_id} has left the queue; stopped following", file=sys.stderr)
                    return 0
    except KeyboardInterrupt:
        return 0
