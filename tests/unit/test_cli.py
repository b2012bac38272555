"""launch.py without the cluster doing work: --help, --dry-run, refusals before submission."""
from __future__ import annotations

import json

from tests.helpers.e2e import launch, smoke_overrides


def test_help_lists_every_command():
    out = launch("--help").stdout
    for command in ("plan", "check", "--on-node", "status", "cancel", "resubmit", "report", "--dry-run",
                    "--local"):
        assert command in out


def test_dry_run_prints_the_exact_sbatch_script_and_submits_nothing(tmp_path, synthetic_bench,
                                                                   tiny_checkpoint, slurm_cluster):
    # the dry run checks the script with `sbatch --test-only`: it needs slurmctld
    bench = synthetic_bench(6)
    out = launch("--config", "configs/smoke.yaml", "--dry-run", "plan.chunks=3",
                 "slurm.account=proj42", "slurm.additional={gpu-bind: closest}",
                 *smoke_overrides(tmp_path, bench, tiny_checkpoint)).stdout
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --gres=gpu:2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --requeue", "#SBATCH --signal=USR2@60", "#SBATCH --partition=low",
                 "#SBATCH --account=proj42", "#SBATCH --gpu-bind=closest", "#SBATCH --time=20",
                 "submitit.core._submit", "export PYTHONPATH="):
        assert line in out, line
    assert "3 array tasks" in out
    assert not (tmp_path / "logs").exists(), "a dry run must not create a run folder"


def test_bad_benchmark_is_refused_before_any_submission(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(3)
    entries = json.loads((bench / "worldmodelbench.json").read_text())
    entries[1]["text_instruction"] = ""
    entries[2]["first_frame"] = "../outside.jpg"
    (bench / "worldmodelbench.json").write_text(json.dumps(entries))
    proc = launch("--config", "configs/smoke.yaml", *smoke_overrides(tmp_path, bench, tiny_checkpoint),
                  check=False)
    assert proc.returncode == 1
    assert "nothing was submitted" in proc.stderr
    assert "entry 1" in proc.stderr and "text_instruction" in proc.stderr
    assert "entry 2" in proc.stderr and "outside" in proc.stderr
    assert not (tmp_path / "logs").exists()


def test_judge_stage_without_its_setup_is_refused_before_submission(tmp_path, synthetic_bench,
                                                                    tiny_checkpoint):
    bench = synthetic_bench(2)
    proc = launch("--config", "configs/smoke.yaml", "judge.enabled=true",
                  *smoke_overrides(tmp_path, bench, tiny_checkpoint), check=False)
    assert proc.returncode == 1
    assert "judge.python" in proc.stderr and "judge.repo" in proc.stderr
    assert not (tmp_path / "logs").exists()


def test_unknown_key_exits_2_with_the_key_named(tmp_path):
    proc = launch("plan", "--config", "configs/smoke.yaml", "generate.sampling_step=3", check=False)
    assert proc.returncode == 2 and "generate.sampling_steps" in proc.stderr
