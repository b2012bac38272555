"""launch.py as a user runs it, in its own process, without the cluster doing work: --help,
--dry-run, refusals before submission (each `run`/`--dry-run` also probes the generation
interpreter in a subprocess, as it does before the queue)."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from tests.helpers.e2e import REPO, launch, smoke_overrides
from wmsub import cli


def test_help_lists_every_command():
    out = launch("--help").stdout
    for command in ("plan", "check", "--on-node", "status", "cancel", "resubmit", "report", "--dry-run",
                    "--local"):
        assert command in out


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


def test_a_run_name_another_launch_is_using_is_refused_without_a_traceback(
        tmp_path, synthetic_bench, tiny_checkpoint):
    """Issue 14, finding 4: a second launch with the same run.name, while the first is
    between its checks and its submission, is refused cleanly instead of sharing the folder."""
    folder = tmp_path / "logs" / "busy"
    folder.mkdir(parents=True)
    other = os.open(folder / ".launch.lock", os.O_CREAT | os.O_RDWR)  # the other launch
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(other, b"pid 4242 on node-a\n")
        proc = launch("--config", "configs/smoke.yaml", "--local", "run.name=busy",
                      *smoke_overrides(tmp_path, synthetic_bench(2), tiny_checkpoint), check=False)
    finally:
        os.close(other)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "is being launched right now by pid 4242 on node-a" in proc.stderr, proc.stderr
    assert "nothing was submitted" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".launch.lock"]  # nothing of this launch
    assert not (tmp_path / "logs" / "LATEST").exists() and not list(tmp_path.glob("outputs/*.mp4"))


def test_unknown_key_exits_2_with_the_key_named(tmp_path):
    proc = launch("plan", "--config", "configs/smoke.yaml", "generate.sampling_step=3", check=False)
    assert proc.returncode == 2 and "generate.sampling_steps" in proc.stderr


def test_a_command_help_shows_that_command_alone():
    out = launch("status", "--help").stdout
    assert out.startswith("usage: launch.py status")
    assert "commands:" not in out and "launch.py plan" not in out and "resubmit" not in out
    assert re.search(r"--interval SECONDS\s+seconds between refreshes", out)
    for name in cli.COMMANDS:  # every command has its own parser and help
        assert launch(name, "--help").stdout.startswith(f"usage: launch.py {name}")


def test_a_mistyped_command_is_refused_with_the_command_it_resembles():
    proc = launch("stauts", check=False)
    assert proc.returncode == 2
    assert "did you mean `status`" in proc.stderr and "expected key=value" not in proc.stderr
    proc = launch("frobnicate", check=False)
    assert proc.returncode == 2 and "did you mean" not in proc.stderr
    assert "commands: run, plan, check, status" in proc.stderr


def test_config_and_logs_are_found_in_the_checkout_from_any_folder(tmp_path, monkeypatch,
                                                                 synthetic_bench, tiny_checkpoint):
    monkeypatch.chdir(tmp_path)
    assert cli.checkout_path("configs/smoke.yaml") == REPO / "configs" / "smoke.yaml"
    (tmp_path / "logs").mkdir()  # one here wins over the checkout's
    assert (tmp_path / cli.checkout_path("logs")).resolve() == (tmp_path / "logs").resolve()
    bench = synthetic_bench(2)
    proc = launch("plan", "--config", "configs/smoke.yaml",
                  *smoke_overrides(tmp_path, bench, tiny_checkpoint), cwd=tmp_path,
                  launch_py=REPO / "launch.py")
    assert "2 pending" in proc.stdout
    # the default config too: the error is about the benchmark it names, not the config file
    proc = launch("plan", cwd=tmp_path, launch_py=REPO / "launch.py", check=False)
    assert "config file" not in proc.stderr and "benchmark validation failed" in proc.stderr


def _judge_overrides(tmp_path, bench) -> list[str]:
    from tests.helpers.judge import STANDIN, make_judge_checkpoint
    repo = tmp_path / "wmb_repo"
    repo.mkdir()
    shutil.copy(STANDIN, repo / "evaluation.py")
    shutil.copy(bench / "worldmodelbench.json", repo / "worldmodelbench.json")
    return ["judge.enabled=true", f"judge.python={sys.executable}", f"judge.repo={repo}",
            f"judge.checkpoint={make_judge_checkpoint(tmp_path / 'vila')}", "judge.shards=2",
            "judge.cpus=1", "judge.mem_gb=1"]


def _stand_in_sbatch(tmp_path) -> tuple[dict, Path]:
    """An environment whose `sbatch` accepts `--test-only SCRIPT` (and nothing else) and logs
    each call: the dry run's checks need no slurmctld here (tests/e2e/test_cli_slurm.py asks
    the real one)."""
    bin_dir, calls = tmp_path / "stand-in-bin", tmp_path / "sbatch-calls"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {shlex.quote(str(calls))}\n'
        '[ "$1" = --test-only ] && [ -f "$2" ] || { echo "stand-in sbatch: only --test-only" >&2; exit 1; }\n'
        'echo "sbatch: Job 1 to start at 2026-01-01T00:00:00 using 2 processors on nodes n1 in partition low" >&2\n')
    (bin_dir / "sbatch").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}, calls


def test_dry_run_shows_the_real_run_and_every_stage_script_and_creates_nothing(
        tmp_path, synthetic_bench, tiny_checkpoint):
    from wmsub.login.submission import job_name
    bench = synthetic_bench(6)
    env, sbatch_calls = _stand_in_sbatch(tmp_path)
    out = launch("--config", "configs/smoke.yaml", "--dry-run", "plan.chunks=3",
                 "plan.seconds_per_video=80000", "slurm.srun_args=--cpus-per-task=1,--exclusive",
                 *smoke_overrides(tmp_path, bench, tiny_checkpoint),
                 *_judge_overrides(tmp_path, bench), env=env).stdout
    # the checks before the queue tried the gen, judge and report scripts with --test-only
    assert [line.split()[0] for line in sbatch_calls.read_text().splitlines()] == ["--test-only"] * 3
    assert "DRY-RUN" not in out
    name = re.search(r"^run: +(smoke-\d{8}-\d{6}) ", out, re.M).group(1)
    run_dir = tmp_path / "logs" / name
    assert f"run folder: {run_dir}" in out
    assert f"#SBATCH --output={run_dir}/submitit/%A_%a_0_log.out" in out
    names = {stage: job_name(name, stage) for stage in ("gen", "judge", "report")}
    for stage, job in names.items():
        assert f"#SBATCH --job-name={job}" in out, stage
    assert len({job[:8] for job in names.values()}) == 3, "squeue's 8 columns must tell stages apart"
    assert "# sbatch script for the judge array (2 shard(s))" in out
    assert "#SBATCH --dependency='afterany:<gen job id>'" in out
    assert "#SBATCH --dependency='afterany:<judge job id>'" in out
    assert "--cpus-per-task=1 --exclusive " in out  # slurm.srun_args on the generation srun line
    # 3 chunks, 2 at once: the wall clock is two chunks' time; GPU-hours = job time x 2 GPUs
    est = re.search(r"estimate: +(\S+) of job time", out).group(1)
    wall = re.search(r"~(\S+) wall clock with 2 chunk\(s\) at once", out).group(1)
    assert est != wall
    assert re.search(r"(\d+\.\d) GPU-hours \(2 GPU\(s\) per job\)", out)
    assert not (tmp_path / "logs").exists(), "a dry run must not create a run folder"


def test_srun_args_must_be_options(tmp_path):
    proc = launch("plan", "--config", "configs/smoke.yaml", "slurm.srun_args=cpus-per-task=8",
                  check=False)
    assert proc.returncode == 2
    assert "slurm.srun_args" in proc.stderr and "--cpus-per-task=8" in proc.stderr
