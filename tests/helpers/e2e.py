"""Helpers for the end-to-end tests: run launch.py for real and read what it left."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def smoke_overrides(tmp: Path, bench: Path, ckpt: Path, **extra) -> list[str]:
    keys = {
        "bench.root": bench, "model.checkpoint_dir": ckpt,
        "run.logs_dir": tmp / "logs", "output.dir": tmp / "outputs",
        "slurm.executor": "slurm",
    }
    keys.update(extra)
    return [f"{k}={v}" for k, v in keys.items()]


def launch(*args, timeout_s: float = 600, check: bool = True, cwd: Path | None = None,
           launch_py: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """launch.py ARGS as a user runs it (stdin is not a terminal: nothing is asked);
    `env`: the whole environment of the process (default: this one's)."""
    cmd = [sys.executable, str(launch_py or "launch.py"), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def latest_run(logs: Path) -> Path:
    return logs / (logs / "LATEST").read_text().strip()


def jobs(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "jobs.json").read_text())


def chunk_record(run_dir: Path, index: int) -> dict:
    try:
        return json.loads((run_dir / "chunks" / f"{index}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 1.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def squeue_ids(job_id: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-j", str(job_id), "-o", "%i"],
                         capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def run_logs(run_dir: Path) -> str:
    parts = []
    for p in sorted((run_dir / "submitit").glob("*_log.*")):
        parts.append(f"==> {p.name}\n{p.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


def submit_smoke(tmp: Path, over: list[str]) -> tuple[Path, dict]:
    """`launch.py --config configs/smoke.yaml OVERRIDES`; the run folder and its gen entry."""
    launch("--config", "configs/smoke.yaml", *over)
    run_dir = latest_run(tmp / "logs")
    return run_dir, jobs(run_dir)[0]
