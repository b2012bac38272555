"""Every bad setup of issue 13, tried as a new user would on the dev cluster: each is refused
before the queue with the exit code, a message naming the key and the fix, and nothing
submitted (no job in squeue/sacct, no run folder, logs/LATEST unchanged)."""
from __future__ import annotations

import os
import re
import shlex
import sys

import pytest

from tests.helpers.e2e import REPO
from tests.helpers.envs import bare_venv, venv_without
from tests.helpers.judge import make_judge_checkpoint
from tests.helpers.refusals import (EARLIER, assert_nothing_submitted, assert_refused, jobs_named,
                                    launch_with, scene)
from wmsub.state.runs import create_run

pytestmark = pytest.mark.usefixtures("slurm_cluster")
SMOKE = ("--config", "configs/smoke.yaml")


def readme_cluster_example() -> list[str]:
    """The README's `python launch.py bench.root=... slurm.setup=[...]` command, as the shell
    would split it (with $CONDA_PREFIX expanded)."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"^python launch\.py bench\.root=\S+ slurm\.partition=.*?(?<!\\)\n", text, re.M | re.S)
    assert match, "the README's cluster example is gone"
    command = os.path.expandvars(match.group(0).replace("\\\n", " "))
    argv = shlex.split(command)
    assert argv[:2] == ["python", "launch.py"]
    return argv[2:]


def test_the_readme_cluster_example_runs_verbatim(tmp_path, synthetic_bench, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("CONDA_PREFIX", sys.prefix)  # the example names the env by $CONDA_PREFIX
    s = scene(tmp_path)
    example = readme_cluster_example()
    assert 'slurm.setup=["module load cuda/12.4"]' in example
    # the dev cluster's own partition, sizes and the tiny model come after (later keys win)
    proc = launch_with(*example, "--dry-run", *s.overrides(
        synthetic_bench(2), tiny_checkpoint, **{"slurm.partition": "low", "slurm.mem_gb": 2,
                                                "slurm.cpus_per_task": 1, "generate.device": "cpu"}))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "module load cuda/12.4" in lines  # one shell line, as written
    assert not any('["' in line for line in lines)
    assert "#SBATCH --partition=low" in lines
    # there is no `module` here: the check runs the line as the job would and says so
    assert "slurm.setup[0]: `module load cuda/12.4` failed here" in proc.stderr
    assert_nothing_submitted(s)


def test_out_of_range_values_are_all_refused_at_once(tmp_path, synthetic_bench, tiny_checkpoint):
    s = scene(tmp_path)
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    bad = {"slurm.time_min": 0, "slurm.mem_gb": -1, "slurm.array_parallelism": 0,
           "slurm.cpus_per_task": 0, "slurm.signal_delay_s": -5, "plan.chunks": 0,
           "plan.target_chunk_minutes": 0, "plan.seconds_per_video": -1, "output.dir": a_file}
    proc = launch_with(*SMOKE, *s.overrides(synthetic_bench(2), tiny_checkpoint, **bad))
    phrases = [f"{key}: {key}=" for key in bad if key not in ("output.dir", "plan.chunks")]
    assert_refused(proc, s, *phrases, "set slurm.mem_gb within 1..4096",
                   f"output.dir: {a_file} is a file, not a folder — fix: point output.dir at a folder",
                   "nothing was submitted")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", ["a/b", "two\nlines"])
def test_an_unsafe_run_name_is_refused(tmp_path, synthetic_bench, tiny_checkpoint, name):
    s = scene(tmp_path)
    over = [o for o in s.overrides(synthetic_bench(2), tiny_checkpoint) if not o.startswith("run.name=")]
    proc = launch_with(*SMOKE, *over, f"run.name={s.name}{name}")
    assert_refused(proc, s, "run.name: run.name=", "use letters, digits")


def test_a_type_error_in_a_yaml_file_names_the_file(tmp_path, synthetic_bench, tiny_checkpoint):
    s = scene(tmp_path)
    config = tmp_path / "mine.yaml"
    config.write_text((REPO / "configs/smoke.yaml").read_text().replace("mem_gb: 2", "mem_gb: two"))
    proc = launch_with("--config", config, *s.overrides(synthetic_bench(2), tiny_checkpoint))
    assert_refused(proc, s, f"{config}: slurm.mem_gb: expected an integer, got 'two'",
                   "fix: write a whole number, e.g. slurm.mem_gb=64", rc=2)


def test_a_generation_interpreter_that_does_not_exist(tmp_path, synthetic_bench, tiny_checkpoint):
    s = scene(tmp_path)
    proc = launch_with(*SMOKE, *s.overrides(synthetic_bench(2), tiny_checkpoint,
                                            **{"slurm.python": "/nonexistent/python"}))
    assert_refused(proc, s, "slurm.python: /nonexistent/python does not exist",
                   "fix: set slurm.python to the generation env's interpreter")


def test_a_login_venv_without_torch_refuses_jobs_that_would_use_it(tmp_path, synthetic_bench,
                                                                  tiny_checkpoint):
    """The README's login-node install has no torch: with slurm.python empty the jobs would
    run in it. The same venv plans, checks and submits once slurm.python names the
    generation env."""
    s = scene(tmp_path)
    login = venv_without(tmp_path / "login-venv", "torch")
    over = s.overrides(synthetic_bench(2), tiny_checkpoint)
    proc = launch_with(*SMOKE, *over, python=login)
    assert_refused(proc, s, "cannot import torch: ModuleNotFoundError: No module named 'torch'",
                   "slurm.python is empty, so the jobs use this launching interpreter")
    gen = f"slurm.python={sys.executable}"
    assert launch_with("plan", *SMOKE, *over, gen, python=login).returncode == 0
    checked = launch_with("check", *SMOKE, *over, gen, python=login)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert_nothing_submitted(s)


def test_a_missing_checkpoint_folder(tmp_path, synthetic_bench):
    s = scene(tmp_path)
    proc = launch_with(*SMOKE, *s.overrides(synthetic_bench(2), "/no/such/dir"))
    assert_refused(proc, s, "model.checkpoint_dir: /no/such/dir does not exist",
                   "huggingface-cli download Wan-AI/Wan2.2-TI2V-5B")


def test_a_judge_env_without_numpy_and_a_missing_judge_checkpoint(tmp_path, synthetic_bench,
                                                                 tiny_checkpoint):
    s = scene(tmp_path)
    repo = tmp_path / "wmb"
    repo.mkdir()
    (repo / "evaluation.py").write_text("import numpy as np\n")  # as the official script does
    (repo / "worldmodelbench.json").write_text("[]")
    judge = {"judge.enabled": "true", "judge.python": bare_venv(tmp_path / "vila"), "judge.repo": repo,
             "judge.checkpoint": "/nonexistent", "judge.mem_gb": 1, "judge.cpus": 1}
    proc = launch_with(*SMOKE, *s.overrides(synthetic_bench(2), tiny_checkpoint, **judge))
    assert_refused(proc, s, "judge.checkpoint: /nonexistent does not exist",
                   "huggingface-cli download Efficient-Large-Model/vila-ewm-qwen2-1.5b")
    # with the weights folder in place, the env's missing numpy is what stops it
    judge["judge.checkpoint"] = make_judge_checkpoint(tmp_path / "weights")
    proc = launch_with(*SMOKE, *s.overrides(synthetic_bench(2), tiny_checkpoint, **judge))
    assert_refused(proc, s, "judge.python: ", "cannot run `import numpy as np` from evaluation.py",
                   "pip install numpy==1.26.4 in the judge env")


def test_auto_executor_without_sbatch_refuses(tmp_path, synthetic_bench, tiny_checkpoint):
    s = scene(tmp_path)
    empty = tmp_path / "bin"
    empty.mkdir()
    over = s.overrides(synthetic_bench(2), tiny_checkpoint, **{"slurm.executor": "auto"})
    proc = launch_with(*SMOKE, *over, env={"PATH": str(empty)})
    assert_refused(proc, s, "slurm.executor: sbatch not found", "fix: load Slurm, or pass --local")


def test_a_partition_slurm_does_not_have(tmp_path, synthetic_bench, tiny_checkpoint):
    s = scene(tmp_path)
    proc = launch_with(*SMOKE, *s.overrides(synthetic_bench(2), tiny_checkpoint,
                                            **{"slurm.partition": "nosuchpartition"}))
    assert_refused(proc, s, "slurm.partition: sbatch refuses the gen job", "invalid partition",
                   "`sinfo -s` lists partitions")


def test_resubmit_runs_the_same_checks(tmp_path, synthetic_bench, tiny_checkpoint):
    """A run whose generation env went away since: resubmit refuses and adds no job."""
    from wmsub.config import absolutize_paths, load_config
    s = scene(tmp_path)
    cfg = absolutize_paths(load_config("configs/smoke.yaml", s.overrides(
        synthetic_bench(2), tiny_checkpoint, **{"slurm.python": "/gone/python"})))
    run = create_run(cfg, "configs/smoke.yaml")
    (run.path / "jobs.json").write_text("[]")
    (s.logs / "LATEST").write_text(EARLIER)
    proc = launch_with("resubmit", "--logs", s.logs, "--run", s.name)
    assert proc.returncode == 1 and "slurm.python: /gone/python does not exist" in proc.stderr
    assert "fix: set slurm.python to the generation env's interpreter" in proc.stderr, proc.stderr
    assert (run.path / "jobs.json").read_text() == "[]"
    assert (s.logs / "LATEST").read_text() == EARLIER
    assert jobs_named(s.name, s.started) == []
