"""Contracts the layout promises (docs/DESIGN.md): what the compute node imports, the one
private submitit function we use, the job id, the requeue classification, GPUs per rank."""
from __future__ import annotations

import ast
import inspect
import time
from pathlib import Path

import pytest

from wmsub import CHECKOUT
from wmsub.config import Config
from wmsub.node import ranks, requeue
from wmsub.state.claims import current_job_id

NODE = CHECKOUT / "wmsub" / "node"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_compute_node_code_imports_neither_the_planner_nor_the_manifest_validator():
    for path in NODE.rglob("*.py"):
        imported = _imports(path)
        assert not any(m.startswith("wmsub.login") for m in imported), path
        assert "wmsub.benchmark.manifest" not in imported, path


def test_login_and_state_code_never_import_torch_at_module_level():
    for folder in ("login", "state", "benchmark", "score"):
        for path in (CHECKOUT / "wmsub" / folder).rglob("*.py"):
            top = [n for n in ast.parse(path.read_text()).body
                   if isinstance(n, (ast.Import, ast.ImportFrom))]
            mods = {getattr(n, "module", None) or n.names[0].name for n in top}
            assert not any(m and m.split(".")[0] == "torch" for m in mods), path


def test_the_private_sbatch_builder_still_takes_what_the_preview_passes(tmp_path):
    """Fails loudly if submitit renames `_make_sbatch_string` or its parameters: the
    dry-run preview (login/submission.sbatch_preview) is the only user."""
    from submitit.slurm import slurm as submitit_slurm

    from wmsub.login import submission
    from wmsub.state.runs import RunFolder
    builder = getattr(submitit_slurm, "_make_sbatch_string", None)
    assert builder is not None, "submitit no longer has _make_sbatch_string: rewrite sbatch_preview"
    params = set(inspect.signature(builder).parameters)
    run = RunFolder(tmp_path / "run")
    needed = {"command", "folder", "map_count"} | set(
        submission._generation_sbatch_params(Config(), run))
    assert needed <= params, f"submitit's _make_sbatch_string lost {sorted(needed - params)}"
    text = submission.sbatch_preview(Config(), run, 3)
    assert "#SBATCH --array=0-2%" in text and "submitit.core._submit" in text
    # one named function uses it, nowhere else in the package
    users = [p for p in (CHECKOUT / "wmsub").rglob("*.py") if "_make_sbatch_string" in p.read_text()]
    assert users == [CHECKOUT / "wmsub" / "login" / "submission.py"]


def test_the_job_id_comes_from_submitit_and_is_unique_outside_a_job(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SUBMITIT_EXECUTOR"):
        monkeypatch.delenv(var, raising=False)
    assert current_job_id().startswith("pid")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "107")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    assert current_job_id() == "100_7"


@pytest.mark.parametrize("visible, rank, gpu", [(None, 1, "1"), ("0,1", 1, "1"), ("2,3", 0, "2"),
                                                ("2,3", 1, "3"), ("GPU-a,GPU-b", 1, "GPU-b")])
def test_each_rank_takes_its_gpu_from_the_jobs_own_list(visible, rank, gpu):
    assert ranks.rank_gpu(visible, rank) == gpu


def test_a_rank_without_a_gpu_of_its_own_is_an_error():
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES=2 lists 1"):
        ranks.rank_gpu("2", 1)


def test_requeue_signals_are_classified_by_the_jobs_end_time():
    end = time.time() + 3600
    # a preemption one minute into a job with a 10-minute limit: submitit calls it a timeout
    assert requeue.is_timeout(end, 120, now=end - 540) is False
    assert requeue.is_timeout(end, 120, now=end - 120) is True
    assert requeue.is_timeout(end, 120, now=end - 120 - 60) is True  # Slurm may signal 60 s early
    assert requeue.is_timeout(None, 120) is None
    assert requeue.parse_slurm_time("N/A") is None
    assert requeue.parse_slurm_time("2026-11-30T16:14:10") is not None


def test_the_classifier_replaces_submitits_guess_and_remembers_the_verdict():
    from submitit.core.job_environment import SignalHandler
    original = SignalHandler.has_timed_out
    try:
        end = time.time() + 3600
        clf = requeue.RequeueClassifier(120, end_time=end).install()
        assert SignalHandler.has_timed_out(object()) is False and clf.last == "preemption"
        clf.end_time = time.time() + 100
        assert SignalHandler.has_timed_out(object()) is True and clf.last == "timeout"
    finally:
        SignalHandler.has_timed_out = original


def test_a_task_bound_to_its_own_gpu_takes_it():
    # --gpu-bind=single:1 / --gpus-per-task: each task's list holds one GPU of the job's two
    assert ranks.rank_gpu("3", 1, job_gpus="2,3") == "3"
    with pytest.raises(RuntimeError):
        ranks.rank_gpu("3", 1, job_gpus="3")  # the job has one GPU for two tasks


@pytest.mark.parametrize("gpu, visible, allocation, cgroup, problem", [
    ("2", "2,3", "2,3", False, None),
    ("3", "3", "3", False, None),                       # per-task binding
    ("0", "0,1", "2,3", True, None),                    # device cgroup: numbered from 0
    ("0", "0,1", "2,3", False, "is not the job's allocation"),  # changed after Slurm set it
    ("0", None, "2,3", False, "outside its job's allocation 2,3"),  # local-rank fallback
    ("0", None, None, False, "Slurm bound no GPU"),
])
def test_a_ranks_gpu_must_be_its_own_jobs(gpu, visible, allocation, cgroup, problem):
    found = ranks.rank_gpu_problem(gpu, visible, allocation, cgroup)
    assert (found is None) if problem is None else (problem in found)


def test_every_official_module_wmsub_imports_is_in_the_checked_list():
    import re
    from wmsub.node.engines.shims import WAN_MODULES
    used = {m for p in (CHECKOUT / "wmsub").rglob("*.py")
            for m in re.findall(r'wan_module\("([^"]+)"\)', p.read_text())}
    assert used and used <= set(WAN_MODULES), sorted(used - set(WAN_MODULES))
