"""`status`, `runs` and `logs` through launch.py as a user runs it (stdout a pipe), on run
folders of local-executor jobs (states from the progress records, no Slurm call)."""
from __future__ import annotations

import json
import time

import pytest
from submitit.core.utils import JobPaths

from tests.helpers.e2e import launch
from tests.helpers.monitor import FIX, fake_traceback, gen_entry, local_run, make_done, write_record
from wmsub.login import monitor


def test_status_prints_the_exception_and_its_fix_whole_without_the_frames(tmp_path):
    run = local_run(tmp_path, {0: ["a", "b"]})
    write_record(run, 0, ["a", "b"], job_id="4242_0", state="failed", error=FIX)
    log = JobPaths(run.submitit_dir, job_id="4242_0", task_id=0).stderr
    log.write_text("starting\n" + fake_traceback(frames=20) + "\n")
    (tmp_path / "logs" / "LATEST").write_text("run-test\n")

    out = launch("status", "--logs", tmp_path / "logs").stdout  # stdout is a pipe here
    assert f"   error: {FIX}" in out.splitlines()
    assert f"   | {FIX}" in out.splitlines()
    assert 'File "' not in out and "^^^^" not in out, "traceback frames fill the tail"
    assert "…" not in out and "\x1b[" not in out, "no cut lines and no colour in a pipe"
    status = json.loads(launch("status", "--logs", tmp_path / "logs", "--json").stdout)
    chunk = status["chunks"][0]
    assert chunk["log_tail"][-1] == FIX and len(chunk["log_tail"]) == monitor.LOG_TAIL_LINES
    assert chunk["log_summary"] == ["starting", "Traceback (most recent call last):", FIX]


def test_runs_lists_every_run_with_its_state_counts_and_score(tmp_path):
    from wmsub.state.runs import RunFolder
    first = local_run(tmp_path, {0: ["a", "b"]})
    make_done(tmp_path / "outputs", "a")
    make_done(tmp_path / "outputs", "b")
    write_record(first, 0, ["a", "b"], state="finished", done=["a", "b"], started_at=time.time() - 3600,
                 updated_at=time.time() - 1800)
    first.save_launch_info("configs/smoke.yaml")
    (first.path / "report").mkdir()
    (first.path / "report" / "report.json").write_text(json.dumps({"scores": {"total": 6.25}}))
    second = RunFolder(tmp_path / "logs" / "run-two")
    second.save_config(first.load_config())
    second.save_plan(first.load_plan())
    (second.path / "jobs.json").write_text(json.dumps([gen_entry("77", [0], executor="local")]))
    write_record(second, 0, ["a", "b"], state="running", current="c")
    (tmp_path / "logs" / "LATEST").write_text("run-two\n")

    listed = json.loads(launch("runs", "--logs", tmp_path / "logs", "--json").stdout)
    by_name = {r["name"]: r for r in listed}
    got = {k: by_name["run-test"][k] for k in ("config", "state", "done", "total", "score", "latest")}
    assert got == {"config": "configs/smoke.yaml", "state": "completed", "done": 2, "total": 2,
                   "score": 6.25, "latest": False}
    assert by_name["run-test"]["gpu_hours"] == pytest.approx(1.0, abs=0.01)  # 1800 s x 2 GPUs
    assert (by_name["run-two"]["state"], by_name["run-two"]["score"], by_name["run-two"]["latest"]) == \
        ("running", None, True)
    text = launch("runs", "--logs", tmp_path / "logs").stdout
    row = next(line for line in text.splitlines() if "run-test" in line)
    assert row.split() == ["run-test", "smoke.yaml", "completed", "2/2", "1.00", "6.25"]
    assert next(line for line in text.splitlines() if "run-two" in line).startswith("* run-two")


def test_logs_prints_one_chunk_rank_log(tmp_path):
    run = local_run(tmp_path, {0: ["a"], 1: ["b"]})
    (tmp_path / "logs" / "LATEST").write_text("run-test\n")
    paths = JobPaths(run.submitit_dir, job_id="4242_1", task_id=1)
    paths.stdout.write_text("rank 1 says hello\n")
    paths.stderr.write_text("rank 1 warns\n")
    proc = launch("logs", "--logs", tmp_path / "logs", "--chunk", "1", "--rank", "1")
    assert proc.stdout == (f"==> {paths.stdout} <==\nrank 1 says hello\n\n"
                           f"==> {paths.stderr} <==\nrank 1 warns\n")
    assert "chunk 1, job 4242_1, rank 1" in proc.stderr
    missing = launch("logs", "--logs", tmp_path / "logs", "--chunk", "7", check=False)
    assert missing.returncode == 2 and "chunks with jobs: 0, 1" in missing.stderr
    not_yet = launch("logs", "--logs", tmp_path / "logs", "--chunk", "0", check=False)
    assert not_yet.returncode == 1 and "no log yet" in not_yet.stderr
