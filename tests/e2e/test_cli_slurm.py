"""The command line against the dev cluster: states Slurm reports oddly, `logs -f` on a
running job, a whole run launched from a checkout whose path holds a space, and the dry
run's script (checked with `sbatch --test-only`, so it needs slurmctld)."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time

import pytest

from tests.helpers.e2e import REPO, jobs, latest_run, launch, run_logs, smoke_overrides
from tests.helpers.judge import STANDIN, make_judge_checkpoint
from tests.helpers.monitor import (SLURM_WAIT_S, gen_entry, make_done, make_run, sbatch,
                                   scancel_quietly, write_record)
from tests.helpers.slurm import run as sh
from tests.helpers.slurm import sacct_states, wait_for
from wmsub.login import monitor, views
from wmsub.login.submission import job_name

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def test_a_chunk_that_finished_but_exited_oddly_shows_completed(tmp_path):
    """Chunk 0's record says finished with every video on disk, but its job ended FAILED
    with exit code 12 (as when preempted while exiting); chunk 1 says finished too, with a
    video missing, and stays failed."""
    master = sbatch("--array=0-1", "-o", "/dev/null", "--wrap", "exit 12")
    try:
        chunks = {0: ["a", "b", "c"], 1: ["d", "e"]}
        run = make_run(tmp_path, chunks, [gen_entry(master, [0, 1])])
        for stem in ["a", "b", "c", "d"]:
            make_done(tmp_path / "outputs", stem)
        write_record(run, 0, chunks[0], job_id=f"{master}_0", state="finished", done=chunks[0])
        write_record(run, 1, chunks[1], job_id=f"{master}_1", state="finished", done=["d"])
        wait_for(lambda: set(sacct_states(master).values()) == {"FAILED"}, SLURM_WAIT_S,
                 "both tasks FAILED in sacct")
        status = monitor.collect_status(run.path)
        first, second = status["chunks"]
        assert (first["state"], first["state_from"]) == ("completed", "record")
        # what Slurm said stays visible: squeue's reason, or sacct's exit code
        assert first["slurm_state"] == "FAILED" and "Slurm: FAILED" in first["reason"]
        assert second["state"] == "failed" and "state_from" not in second
        assert status["totals"]["failed_chunks"] == 1 and status["totals"]["failed"] == 1
        assert "completed (per its record)" in views.render_status(status)
    finally:
        scancel_quietly(master)


def test_a_cancelled_run_has_no_eta(tmp_path):
    master = sbatch("--hold", "--array=0-1", "-o", "/dev/null", "--wrap", "true")
    try:
        chunks = {0: ["a", "b", "c"], 1: ["d", "e", "f"]}
        run = make_run(tmp_path, chunks, [gen_entry(master, [0, 1])])
        now = time.time()
        make_done(tmp_path / "outputs", "a")
        write_record(run, 0, chunks[0], done=["a"], started_at=now - 600,
                     videos=[{"stem": "a", "seconds": 60, "s_per_step": 1, "finished_at": now - 60}])
        pending = monitor.collect_status(run.path)["totals"]
        assert pending["active"] and pending["eta_s"] is not None
        sh(["scancel", master])
        status = wait_for(lambda: (lambda s: s if not s["totals"]["active"] else None)(
            monitor.collect_status(run.path)), 60, "the run ended")
        assert [c["state"] for c in status["chunks"]] == ["cancelled", "cancelled"]
        assert status["totals"]["eta_s"] is None
        assert "ETA -" in views.render_status(status)
    finally:
        scancel_quietly(master)


def test_logs_follows_a_running_chunk_until_its_job_ends(tmp_path):
    chunks = {0: ["a"]}
    run = make_run(tmp_path, chunks, [])
    logs = run.submitit_dir
    master = sbatch("--array=0", "-o", f"{logs}/%A_%a_0_log.out", "-e", f"{logs}/%A_%a_0_log.err",
                    "--wrap", "for i in 1 2 3 4; do echo line-$i; sleep 1; done")
    try:
        (run.path / "jobs.json").write_text(json.dumps([gen_entry(master, [0])]))
        (tmp_path / "logs" / "LATEST").write_text(run.name + "\n")
        t0 = time.monotonic()
        proc = launch("logs", "--logs", tmp_path / "logs", "--chunk", "0", "-f", timeout_s=SLURM_WAIT_S)
        assert [line for line in proc.stdout.splitlines() if line.startswith("line-")] == \
            ["line-1", "line-2", "line-3", "line-4"]
        assert proc.stdout.startswith(f"==> {logs}/{master}_0_0_log.out <==")
        assert "has left the queue" in proc.stderr and time.monotonic() - t0 < SLURM_WAIT_S
    finally:
        scancel_quietly(master)


def _copy_checkout(dest):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(source.read_bytes())
    return dest


def test_a_whole_run_from_a_checkout_path_with_a_space(tmp_path, synthetic_bench, tiny_checkpoint):
    """Launch from a copy of the checkout under `my checkout/`, with slurm.python a path with
    a space too, the judge (the STAND-IN) and the report after it, and `--wait`."""
    checkout = _copy_checkout(tmp_path / "my checkout" / "wmsub")
    python = tmp_path / "py env" / "python"
    python.parent.mkdir()
    python.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    python.chmod(0o755)
    bench = synthetic_bench(2, seed=5)
    repo = tmp_path / "wmb_repo"
    repo.mkdir()
    (repo / "evaluation.py").write_bytes(STANDIN.read_bytes())
    (repo / "worldmodelbench.json").write_bytes((bench / "worldmodelbench.json").read_bytes())
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "generate.sampling_steps": 2, "slurm.python": python,
        "slurm.srun_args": "--cpus-per-task=1", "judge.enabled": "true",
        "judge.python": sys.executable, "judge.repo": repo,
        "judge.checkpoint": make_judge_checkpoint(tmp_path / "vila"),
        "judge.shards": 1, "judge.partition": "low", "judge.cpus": 1, "judge.mem_gb": 1})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = launch("--config", "configs/smoke.yaml", *over, "--wait", cwd=elsewhere,
                  launch_py=checkout / "launch.py", timeout_s=900)
    run_dir = latest_run(tmp_path / "logs")
    report = json.loads((run_dir / "report" / "report.json").read_text())
    last = proc.stdout.rstrip("\n").splitlines()[-1]
    assert last == (f"report: {run_dir / 'report' / 'report.md'}  "
                    f"(total score {report['scores']['total']:.2f} / 10)"), run_logs(run_dir)

    # the hint is one shell command; typed anywhere, it shows this run
    hint = next(line for line in proc.stdout.splitlines() if line.startswith("watch it:"))
    argv = shlex.split(hint.removeprefix("watch it:"))
    assert argv == ["python", str(checkout / "launch.py"), "status", "--run", run_dir.name,
                    "--logs", str(run_dir.parent)]
    shown = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout
    assert shown.startswith(f"run {run_dir.name}")

    # the job imported wmsub from the spaced checkout, through the quoted export line
    gen = jobs(run_dir)[0]
    script = (run_dir / "submitit" / f"{gen['job_id']}_submission.sh").read_text()
    export = next(line for line in script.splitlines() if line.startswith("export PYTHONPATH="))
    echoed = sh(["bash", "-c", f"PYTHONPATH=; {export}; echo \"$PYTHONPATH\""]).strip()
    assert echoed == str(checkout)
    assert f"--cpus-per-task=1 {shlex.quote(str(python))} -u -m submitit" in script
    for entry in jobs(run_dir):
        names = sh(["sacct", "-X", "-n", "-P", "-o", "JobName%80", "-j", entry["job_id"]]).split()
        assert set(names) == {job_name(run_dir.name, entry["stage"])}, entry
    chunk_logs = "".join(p.read_text() for p in (run_dir / "submitit").glob("*_0_*log.*"))
    assert "video " in chunk_logs and "accelerate" not in chunk_logs


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
