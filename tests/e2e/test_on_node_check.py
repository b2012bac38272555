"""`launch.py check --on-node` on the dev cluster (4 GPUs as device files, CPU ranks, gloo):
each rank's GPU is its own job's while another 2-GPU job runs beside it, and the check fails
clearly when a rank would take that other job's GPUs or the node's interpreter lacks torch."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers.envs import venv_without
from tests.helpers.refusals import launch_with, scene
from tests.helpers.slurm import scontrol_job, wait_for
from wmsub.config import absolutize_paths, load_config
from wmsub.state.runs import create_run

pytestmark = pytest.mark.usefixtures("slurm_cluster")
SMOKE = ("--config", "configs/smoke.yaml")


@pytest.fixture
def other_job():
    """A running 2-GPU job of someone else: (job id, its GPU indices on the node)."""
    job = subprocess.run(["sbatch", "--parsable", "-p", "low", "--gres=gpu:2", "-n", "1", "-c", "1",
                          "--mem=100M", "-J", "wmsub-other-user", "-o", "/dev/null", "--wrap", "sleep 900"],
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        wait_for(lambda: scontrol_job(job).get("JobState") == "RUNNING", 300, f"job {job} to run")
        detail = subprocess.run(["scontrol", "show", "job", "-d", job], capture_output=True,
                                text=True, check=True).stdout
        yield job, gres_indices(detail)
    finally:
        subprocess.run(["scancel", job], check=False)


def gres_indices(scontrol_detail: str) -> set[str]:
    """GPU indices from `scontrol show job -d` (GRES=gpu:2(IDX:0-1) or IDX:0,2)."""
    spec = re.search(r"GRES=\S*\(IDX:([0-9,\-]+)\)", scontrol_detail).group(1)
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(str(i) for i in range(int(lo), int(hi or lo) + 1))
    return out


def _check(tmp_path, bench, ckpt, s, **extra):
    proc = launch_with("check", "--on-node", "--json", "--timeout", "600", *SMOKE,
                       *s.overrides(bench, ckpt, **extra), timeout_s=900)
    return proc, json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}


def test_each_rank_takes_its_own_jobs_gpu_beside_another_job_and_status_shows_it(
        tmp_path, synthetic_bench, tiny_checkpoint, other_job):
    other, other_gpus = other_job
    s = scene(tmp_path)
    bench = synthetic_bench(2)
    proc, data = _check(tmp_path, bench, tiny_checkpoint, s)
    assert proc.returncode == 0 and data["ok"], proc.stdout[-4000:] + proc.stderr[-2000:]
    node = data["on_node"]
    ranks = node["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    gpus = [r["gpu"] for r in ranks]
    allocation = set(ranks[0]["allocation"].split(","))
    assert len(set(gpus)) == 2 and set(gpus) == allocation, ranks
    assert allocation.isdisjoint(other_gpus), (allocation, other_gpus)
    assert all(r["dist"]["ok"] and r["dist"]["sum"] == 2 and r["dist"]["backend"] == "gloo" for r in ranks)
    assert all(r["output"]["ok"] for r in ranks)
    assert json.loads((tmp_path / "logs" / "checks" / node["folder"].split("/")[-1] / "result.json")
                      .read_text())["ok"] is True
    # status of a run in the same logs folder shows the newest on-node check
    cfg = absolutize_paths(load_config("configs/smoke.yaml", s.overrides(bench, tiny_checkpoint)))
    create_run(cfg, "configs/smoke.yaml")
    status = launch_with("status", "--logs", s.logs)
    assert status.returncode == 0, status.stderr
    assert f"on-node check: passed (job {node['job_id']}" in status.stdout


def test_a_rank_on_another_jobs_gpu_fails_the_check(tmp_path, synthetic_bench, tiny_checkpoint, other_job):
    """The interpreter's wrapper (as a container or env launcher may) points the ranks at
    the other job's GPUs: the check names the rank, the GPU and the fix."""
    other, other_gpus = other_job
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"#!/bin/bash\nexport CUDA_VISIBLE_DEVICES={','.join(sorted(other_gpus))}\n"
                       f"exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    s = scene(tmp_path)
    proc, data = _check(tmp_path, synthetic_bench(2), tiny_checkpoint, s, **{"slurm.python": wrapper})
    assert proc.returncode == 1, proc.stdout[-4000:]
    problems = [p for p in data["on_node"]["problems"] if p["key"] == "slurm.gpus_per_job"]
    assert len(problems) == 2, data["on_node"]
    for p in problems:
        assert f"CUDA_VISIBLE_DEVICES={','.join(sorted(other_gpus))} in the task is not the job's allocation" \
            in p["what"]
        assert "do not set CUDA_VISIBLE_DEVICES" in p["fix"]


def test_a_node_interpreter_without_torch_fails_the_check(tmp_path, synthetic_bench, tiny_checkpoint):
    """The env exists on the login node but the nodes see another one (a mount, a module):
    the login check passes, the node's check names torch."""
    node_env = venv_without(tmp_path / "node-venv", "torch")
    wrapper = tmp_path / "python-wrapper"
    wrapper.write_text(f"#!/bin/bash\n[ -n \"$SLURM_JOB_ID\" ] && exec {node_env} \"$@\"\n"
                       f"exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    s = scene(tmp_path)
    proc, data = _check(tmp_path, synthetic_bench(2), tiny_checkpoint, s, **{"slurm.python": wrapper})
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert next(c for c in data["checks"] if c["name"] == "interpreter")["ok"]  # fine at login
    (problem,) = [p for p in data["on_node"]["problems"] if "torch" in p["what"]]
    assert problem["key"] == "slurm.python" and "cannot import torch: ModuleNotFoundError" in problem["what"]
    assert "(rank 0 on " in problem["what"] and ", 1 on " in problem["what"] and "cu124" in problem["fix"]
