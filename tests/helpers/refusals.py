"""For tests of refused setups: launch.py in a given interpreter and environment, and the
proof that nothing was submitted (no job named after the run in squeue or sacct, no run
folder, logs/LATEST as it was)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.e2e import REPO

EARLIER = "earlier-run\n"


@dataclass
class Scene:
    """A logs folder holding only a LATEST file, and a unique name for this test's jobs."""
    tmp: Path
    logs: Path
    name: str  # run.name: every job of the run would be named <name>-gen, -judge, -report
    started: str  # sacct -S: jobs since then

    def overrides(self, bench: Path, ckpt: Path, **extra) -> list[str]:
        keys = {"bench.root": bench, "model.checkpoint_dir": ckpt, "run.logs_dir": self.logs,
                "output.dir": self.tmp / "outputs", "slurm.executor": "slurm", "run.name": self.name}
        keys.update(extra)
        return [f"{k}={v}" for k, v in keys.items()]


def scene(tmp: Path) -> Scene:
    logs = tmp / "logs"
    logs.mkdir()
    (logs / "LATEST").write_text(EARLIER)
    return Scene(tmp, logs, f"pf{uuid.uuid4().hex[:10]}", time.strftime("%Y-%m-%dT%H:%M:%S"))


def launch_with(*args, python: str | Path = sys.executable, env: dict | None = None,
                timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "launch.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, env={**os.environ, **(env or {})})


def jobs_named(prefix: str, since: str) -> list[str]:
    """Names of queued or accounted jobs that start with `prefix`."""
    queued = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
    accounted = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobName", "-S", since],
                               capture_output=True, text=True).stdout.split()
    return [n for n in queued + accounted if n.startswith(prefix)]


def assert_nothing_submitted(s: Scene) -> None:
    assert sorted(p.name for p in s.logs.iterdir()) == ["LATEST"], list(s.logs.iterdir())
    assert (s.logs / "LATEST").read_text() == EARLIER
    assert jobs_named(s.name, s.started) == []


def assert_refused(proc: subprocess.CompletedProcess, s: Scene, *phrases: str, rc: int = 1) -> None:
    """The exit code, every phrase in the message (keys and fixes), nothing submitted."""
    said = proc.stdout + proc.stderr
    assert proc.returncode == rc, said[-3000:]
    for phrase in phrases:
        assert phrase in said, f"{phrase!r} not in:\n{said[-3000:]}"
    assert_nothing_submitted(s)
