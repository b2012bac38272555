"""Faults found in fault-injection runs, on the dev Slurm cluster: two launches in the same
second, and a chunk preempted twice under a short time limit."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.helpers.e2e import (REPO, chunk_record, jobs, launch, run_logs, smoke_overrides,
                               squeue_ids, submit_smoke, wait_until)
from tests.helpers.slurm import BeginTimeReleaser, job_state_sacct

pytestmark = pytest.mark.usefixtures("slurm_cluster")

# Imports first, then wait for the agreed instant: both launches then plan and name their
# run within the same second.
_LAUNCH_AT = ("import sys, time; from wmsub.cli import main; at = float(sys.argv[1]); "
              "time.sleep(max(0.0, at - time.time())); sys.exit(main(sys.argv[2:]))")


def _launch_together(args: list[str]) -> list[subprocess.CompletedProcess]:
    at = float(int(time.time()) + 4)  # a whole second, after both have imported
    procs = [subprocess.Popen([sys.executable, "-c", _LAUNCH_AT, str(at), *args], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


def test_two_launches_in_the_same_second_submit_into_their_own_run_folders(
        tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(4, seed=11)
    for attempt in range(3):  # a loaded machine may still split them across a second boundary
        tmp = tmp_path / f"try{attempt}"
        over = smoke_overrides(tmp, bench, tiny_checkpoint, **{"plan.chunks": 2})
        results = _launch_together(["--config", "configs/smoke.yaml", *over])
        for r in results:
            assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-3000:]
        logs = tmp / "logs"
        new = sorted(p.name for p in logs.iterdir() if p.is_dir())
        assert len(new) == 2, new
        if new[1] == f"{new[0]}-2":
            break
    else:
        pytest.fail(f"the two launches never named their runs in the same second: {new}")

    runs = [logs / name for name in new]
    entries = [jobs(run) for run in runs]
    for run, entry in zip(runs, entries):
        assert len(entry) == 1 and entry[0]["stage"] == "gen" and len(entry[0]["tasks"]) == 2, entry
        assert f"run {run.name}:" in "".join(r.stdout for r in results)
    assert entries[0][0]["job_id"] != entries[1][0]["job_id"]
    tasks = [t for entry in entries for t in entry[0]["tasks"].values()]
    wait_until(lambda: not any(squeue_ids(t) for t in tasks), 900, "both arrays to end")

    made = []
    for run, entry in zip(runs, entries):
        for index, task in entry[0]["tasks"].items():
            rec = chunk_record(run, int(index))  # each array's own record, never overwritten
            assert rec.get("job_id") == task and rec["state"] == "finished", (rec, run_logs(run))
            assert sorted(rec["done"]) == sorted(rec["stems"]), rec
            made += [v["stem"] for v in rec["videos"]]
            assert job_state_sacct(task) == "COMPLETED"
    outputs = sorted(p.stem for p in (tmp / "outputs").glob("*.mp4"))
    assert sorted(made) == outputs and len(outputs) == 4, f"each stem made exactly once: {made}"


def test_two_preemptions_under_a_short_time_limit_are_not_timeouts(tmp_path, synthetic_bench,
                                                                   tiny_checkpoint):
    # 5-minute limit: submitit alone calls every signal of a job of 10 minutes or less a
    # timeout, and with max_timeout_requeues=1 the second preemption failed the chunk
    bench = synthetic_bench(5, seed=12)
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "generate.sampling_steps": 30, "slurm.time_min": 5,
        "slurm.signal_delay_s": 30, "slurm.max_timeout_requeues": 1})
    run_dir, gen = submit_smoke(tmp_path, over)
    task = gen["tasks"]["0"]

    def preempt_mid_video(restarts: int) -> None:
        wait_until(lambda: (r := chunk_record(run_dir, 0)).get("state") == "running"
                   and r.get("restarts", 0) == restarts and r.get("current"), 600,
                   f"incarnation {restarts} of the chunk to be making a video")
        high = subprocess.run(["sbatch", "--parsable", "-p", "high", "--gres=gpu:4", "-n", "1",
                               "-o", "/dev/null", "--wrap", "sleep 3"],
                              capture_output=True, text=True, check=True)
        high_id = high.stdout.strip().split(";")[0]
        wait_until(lambda: job_state_sacct(high_id) == "COMPLETED", 300, "the high-priority job")

    with BeginTimeReleaser([task.split("_")[0]]):
        preempt_mid_video(0)
        preempt_mid_video(1)
        wait_until(lambda: not squeue_ids(task), 900, "the twice-preempted chunk to end")
    rec = chunk_record(run_dir, 0)
    assert rec["state"] == "finished", (rec, run_logs(run_dir))
    assert (rec["preemptions"], rec["timeouts"]) == (2, 0), rec
    assert rec["restarts"] == 2 and sorted(rec["done"]) == sorted(rec["stems"]), rec
    status = json.loads(launch("status", "--logs", tmp_path / "logs", "--json").stdout)
    (chunk,) = status["chunks"]
    assert (chunk["preemptions"], chunk["timeouts"], chunk["state"]) == (2, 0, "completed"), chunk
    assert (status["totals"]["preemptions"], status["totals"]["timeouts"]) == (2, 0)
    text = launch("status", "--logs", tmp_path / "logs").stdout
    assert "timeouts 0, preemptions 2" in text, text


def _sbatch(*args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", "-p", "low", "-c", "1", "--mem=100M", *args],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split(";")[0]


def _claim_from_another_node(outputs, stem: str, job_id: str) -> None:
    claims = outputs / ".wmsub" / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    info = {"stem": stem, "token": f"t-{job_id}", "host": "node-elsewhere", "pid": 4242,
            "pidns": "pid:[1]", "pid_start": 1, "job_id": job_id, "created_at": time.time(),
            "owner": {"job_id": job_id, "host": "node-elsewhere", "pid": 4242}}
    (claims / f"{stem}.claim").write_text(json.dumps(info))


def test_run_releases_the_claims_of_jobs_that_ended_and_keeps_the_live_ones(
        tmp_path, synthetic_bench, tiny_checkpoint):
    # A job killed on another node (scancel, node failure, OOM) cannot release its claim and
    # its pid cannot be checked from here: only Slurm knows it has ended.
    ended = _sbatch("--wrap", "true")
    wait_until(lambda: not squeue_ids(ended), 60, "the short job to end")
    live = _sbatch("--wrap", "sleep 300")
    try:
        bench = synthetic_bench(3, seed=9)
        stems = [json.loads((bench / "worldmodelbench.json").read_text())[i]["first_frame"]
                 .split("/")[-1].rsplit(".", 1)[0] for i in range(3)]
        outputs = tmp_path / "outputs"
        _claim_from_another_node(outputs, stems[0], ended)
        _claim_from_another_node(outputs, stems[1], live)
        over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{"plan.chunks": 1})
        proc = launch("--config", "configs/smoke.yaml", *over, "--wait", timeout_s=600, check=False)
        assert f"released 1 claim(s) of Slurm job(s) that have ended: {stems[0]} ({ended})" \
            in proc.stdout, proc.stdout[-3000:]
        made = {p.stem for p in outputs.glob("*.mp4")}
        assert stems[0] in made and stems[2] in made, (made, proc.stdout[-3000:])
        assert stems[1] not in made, "a live job's claim is left to that job"
        assert (outputs / ".wmsub" / "claims" / f"{stems[1]}.claim").exists()
        assert not (outputs / ".wmsub" / "claims" / f"{stems[0]}.claim").exists()
    finally:
        subprocess.run(["scancel", live], check=False)
