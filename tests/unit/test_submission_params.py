"""sbatch parameters of every job a run submits (login/submission.py), read from the exact
scripts submitit writes (the judge's interpreter kept exactly as given, a real venv:
tests/procs/test_submission_params.py)."""
from __future__ import annotations

import sys

from tests.helpers.judge import make_judge_checkpoint
from wmsub.config import load_config
from wmsub.login import submission
from wmsub.score.judge import judge_setup_problems
from wmsub.state.runs import RunFolder

KEYS = ["slurm.partition=gpu", "slurm.gpu_type=h100", "judge.partition=judgeq", "judge.gpu_type=a100",
        "judge.report_partition=cpu", "slurm.additional={mail-type: FAIL, wckey: proj7}", "judge.shards=3"]


def _sbatch_lines(text: str) -> set[str]:
    return {line for line in text.splitlines() if line.startswith("#SBATCH")}


def test_generation_judge_and_report_jobs_each_get_their_partition_gpus_and_the_extra_flags(tmp_path):
    cfg = load_config("configs/wan22_ti2v_5b.yaml", KEYS)
    run = RunFolder(tmp_path / "run")
    gen = _sbatch_lines(submission.sbatch_preview(cfg, run, 4))
    judge = _sbatch_lines(submission.sbatch_preview(cfg, run, 3, "judge"))
    report = _sbatch_lines(submission.sbatch_preview(cfg, run, 1, "report"))
    assert {"#SBATCH --partition=gpu", "#SBATCH --gres=gpu:h100:2", "#SBATCH --requeue"} <= gen
    assert {"#SBATCH --partition=judgeq", "#SBATCH --gres=gpu:a100:1", "#SBATCH --array=0-2%3",
            "#SBATCH --kill-on-invalid-dep=yes"} <= judge
    assert {"#SBATCH --partition=cpu", "#SBATCH --kill-on-invalid-dep=yes"} <= report
    assert not any("gres" in line or "gpus" in line for line in report), report
    assert not any("--array" in line for line in report)
    for lines in (gen, judge, report):  # slurm.additional reaches every job
        assert {"#SBATCH --mail-type=FAIL", "#SBATCH --wckey=proj7"} <= lines


def test_judge_gpus_default_to_the_generation_type_and_the_report_to_the_judge_partition(tmp_path):
    cfg = load_config("configs/wan22_ti2v_5b.yaml", ["slurm.gpu_type=h100", "judge.partition=judgeq"])
    run = RunFolder(tmp_path / "run")
    assert "#SBATCH --gres=gpu:h100:1" in submission.sbatch_preview(cfg, run, 1, "judge")
    assert "#SBATCH --partition=judgeq" in submission.sbatch_preview(cfg, run, 1, "report")


def test_judge_setup_names_a_missing_or_empty_checkpoint_folder(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("evaluation.py", "worldmodelbench.json"):
        (repo / name).write_text("")
    base = [f"judge.python={sys.executable}", f"judge.repo={repo}"]
    (problem,) = judge_setup_problems(load_config(None, base + ["judge.checkpoint=/nonexistent"]))
    assert problem.key == "judge.checkpoint" and "/nonexistent does not exist" in problem.what
    assert "vila-ewm-qwen2-1.5b" in problem.fix
    (tmp_path / "empty").mkdir()
    (problem,) = judge_setup_problems(load_config(None, base + [f"judge.checkpoint={tmp_path / 'empty'}"]))
    assert "does not look like a model folder: no config.json and weight files" in problem.what
    ok = make_judge_checkpoint(tmp_path / "weights")
    assert judge_setup_problems(load_config(None, base + [f"judge.checkpoint={ok}"])) == []
