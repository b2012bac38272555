"""`status` and `cancel` against real Slurm jobs on the dev cluster (wmsub/monitor.py).

Run folders here are built by hand (files only) and point at real `sbatch --wrap` jobs,
so the monitor's one squeue call and one sacct call parse what Slurm really prints.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import time

import pytest

from tests.helpers.monitor import (SLURM_WAIT_S, build_350_in_35, gen_entry, make_done, make_run, sbatch,
                                   scancel_quietly, write_record)
from tests.helpers.slurm import (BeginTimeReleaser, run, sacct_states, squeue_rows, squeue_states,
                                 wait_for)
from wmsub.login import monitor, views, submission
from wmsub.login import slurm_query as sq
from wmsub.state.claims import ClaimBook
from wmsub.config import Config
from wmsub.state.jsonio import write_json_atomic
from wmsub.state.runs import RunFolder

# ---- parsing without a cluster ---------------------------------------------------------------

def test_slurm_words_normalize_to_the_monitor_states():
    cases = {"PENDING": "pending", "RUNNING": "running", "COMPLETING": "running",
             "REQUEUED": "requeued", "PREEMPTED": "requeued", "REQUEUE_HOLD": "requeued",
             "COMPLETED": "completed", "FAILED": "failed", "OUT_OF_MEMORY": "failed",
             "NODE_FAIL": "failed", "TIMEOUT": "timeout", "CANCELLED by 0": "cancelled",
             "CANCELLED+": "cancelled", "BOGUS_STATE": "unknown"}
    assert {word: sq.normalize_state(word) for word in cases} == cases
    assert [sq.parse_duration(t) for t in ("0:07", "5:03", "1:02:03", "2-01:00:00", "INVALID")] == \
        [7, 303, 3723, 2 * 86400 + 3600, 0]
    assert sq.expand_job_id("12_[0-2,5%4]") == ["12_0", "12_1", "12_2", "12_5"]
    assert sq.expand_job_id("12_7") == ["12_7"]


def test_a_relative_output_dir_is_found_from_the_run_folder_not_the_current_dir(tmp_path, monkeypatch):
    cfg = Config()
    cfg.output.dir, cfg.run.logs_dir = "videos/out", "work/logs"
    (tmp_path / "videos" / "out").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "videos")
    run_dir = tmp_path / "work" / "logs" / "run-x"
    assert RunFolder(run_dir).output_dir(cfg) == tmp_path / "videos" / "out"
    cfg.output.dir = str(tmp_path / "elsewhere")
    assert RunFolder(run_dir).output_dir(cfg) == tmp_path / "elsewhere"


def test_a_resubmitted_chunk_is_shown_with_its_newest_job():
    jobs = [gen_entry("100", [0, 1, 2]),
            {"stage": "gen", "job_id": "200", "tasks": {"2": "200_0"}, "chunks": [2]},
            {"stage": "judge", "job_id": "300", "tasks": {"0": "300_0"}}]
    current = monitor.current_chunk_jobs(jobs)
    assert {i: job for i, (job, _) in current.items()} == {0: "100_0", 1: "100_1", 2: "200_0"}


def test_watch_redraws_in_place_until_the_run_has_ended(tmp_path):
    """A local-executor run: no Slurm call at all; the record finishing ends the watch.
    (tests/e2e/test_terminal.py watches in a real terminal.)"""
    from rich.console import Console
    chunks = {0: ["a", "b"]}
    run_folder = make_run(tmp_path, chunks, [gen_entry("4242", [0], executor="local")])
    plan = run_folder.load_plan()
    plan.stems.append("gave-up")
    plan.failed_stems["gave-up"] = "CUDA error"
    run_folder.save_plan(plan)
    write_record(run_folder, 0, chunks[0], state="running", current="a", step=3, steps=50)

    class FinishAfterFirstFrame(io.StringIO):
        frames = 0

        def write(self, text):
            if "chunk" in text and self.frames == 0:
                self.frames += 1
                make_done(tmp_path / "outputs", "a")
                make_done(tmp_path / "outputs", "b")
                write_record(run_folder, 0, chunks[0], state="finished", done=["a", "b"])
            return super().write(text)

    screen = FinishAfterFirstFrame()
    console = Console(file=screen, force_terminal=True, width=120, height=30)
    final = views.watch(run_folder.path, interval_s=0.01, console=console)
    shown = screen.getvalue()
    assert "a step 3/50" in shown and "2/2" in shown and "every job of the run has ended" in shown
    assert "\x1b[2J" not in shown, "the watch must redraw in place, not clear the screen"
    assert final["finished"] and final["chunks"][0]["state"] == "completed"
    assert (final["totals"]["done"], final["totals"]["total"], final["totals"]["failed"]) == (2, 3, 0)
    assert final["totals"]["plan_failed"] == ["gave-up"]
    assert "failed output.max_attempts times before: 1 (gave-up)" in shown


# ---- against the dev cluster ---------------------------------------------------------------------

def test_status_tracks_a_real_array_and_explains_its_failed_chunk(slurm_cluster, tmp_path):
    chunks = {0: ["s0", "s1"], 1: ["s2", "s3"], 2: ["s4", "s5"]}
    run_folder = make_run(tmp_path, chunks, [])
    logs = run_folder.path / "submitit"
    script = ('echo start-$SLURM_ARRAY_TASK_ID; sleep 4; '
              'if [ "$SLURM_ARRAY_TASK_ID" = 2 ]; then echo boom-task-2 >&2; exit 3; fi')
    master = sbatch("--hold", "--array=0-2", "-J", "wmsub-test-monitor",
                    "-o", f"{logs}/%A_%a_0_log.out", "-e", f"{logs}/%A_%a_0_log.err", "--wrap", script)
    judge = sbatch("--dependency=afterany:" + master, "-o", "/dev/null", "--wrap", "true")
    try:
        write_json_atomic(run_folder.path / "jobs.json", [
            gen_entry(master, [0, 1, 2]),
            {"stage": "judge", "job_id": judge, "executor": "slurm", "tasks": {"0": judge}}])
        make_done(tmp_path / "outputs", "s0")
        write_record(run_folder, 2, chunks[2], state="failed", failed={"s5": "CUDA error: out of memory"},
                     error="RuntimeError: engine died")

        held = monitor.collect_status(run_folder.path)
        queue = squeue_rows(master)
        assert {r.job_id: r.state for r in queue} == {f"{master}_{i}": "PENDING" for i in range(3)}
        assert [(c["job_id"], c["state"], c["reason"]) for c in held["chunks"]] == \
            [(r.job_id, "pending", r.reason) for r in sorted(queue, key=lambda r: r.job_id)]
        assert held["chunks"][0]["reason"] == "JobHeldUser"
        assert held["judge"]["state"] == "pending" and held["judge"]["jobs"][0]["reason"] == "Dependency"
        assert held["squeue_cmd"] == f"squeue -j {master},{judge} -r"
        assert not held["finished"] and held["totals"]["done"] == 1 and held["totals"]["total"] == 6

        run(["scontrol", "release", master])
        running = wait_for(lambda: (lambda s: s if s["chunks"][1]["state"] == "running" else None)(
            monitor.collect_status(run_folder.path)), SLURM_WAIT_S, "chunk 1 running", 0.2)
        assert squeue_states(f"{master}_1")[f"{master}_1"] in ("RUNNING", "COMPLETING")
        assert running["chunks"][1]["elapsed_s"] is not None
        with BeginTimeReleaser([master]):
            run(["scontrol", "requeue", f"{master}_1"])
            wait_for(lambda: monitor.collect_status(run_folder.path)["finished"], SLURM_WAIT_S,
                     "every job of the run ended")
        # sacct lags slurmctld by a moment: wait until it has the final states, then compare.
        wait_for(lambda: set(sacct_states(master).values()) >= {"COMPLETED", "FAILED"} and
                 sacct_states(judge).get(judge) == "COMPLETED", 60, "sacct final states")
        done = monitor.collect_status(run_folder.path)
        accounted = sacct_states(master)
        assert done["sacct"] is True
        assert [c["state"] for c in done["chunks"]] == \
            [sq.normalize_state(accounted[f"{master}_{i}"]) for i in range(3)] == \
            ["completed", "completed", "failed"]
        assert done["chunks"][1]["restarts"] == 1
        failed = done["chunks"][2]
        assert failed["reason"] == "exit code 3"
        assert failed["failed"] == {"s5": "CUDA error: out of memory"}
        assert failed["log"] == str(logs / f"{master}_2_0_log.err")
        assert failed["log_tail"] == ["boom-task-2"]
        assert done["judge"]["state"] == "completed" and done["judge"]["results"] == []
        (run_folder.path / "judge" / "shard-0").mkdir(parents=True)
        (run_folder.path / "judge" / "shard-0" / "result.json").write_text("{}")
        (run_folder.path / "report").mkdir()
        (run_folder.path / "report" / "report.md").write_text("# report\n")
        done = monitor.collect_status(run_folder.path)
        assert done["judge"]["results"] == [str(run_folder.path / "judge" / "shard-0" / "result.json")]
        assert done["report"]["present"] and done["report"]["state"] == "not submitted"
        assert done["totals"]["gpu_hours"] > 0 and done["totals"]["failed"] == 5
        text = views.render_status(done)
        for expected in ("boom-task-2", "CUDA error: out of memory", "engine died",
                         f"{master}_2_0_log.err", "exit code 3", f"squeue -j {master},{judge} -r"):
            assert expected in text
        json.dumps(done)  # --json prints exactly this object
    finally:
        scancel_quietly(master, judge)


def test_status_without_sacct_uses_squeue_and_the_records(slurm_cluster, tmp_path, monkeypatch):
    held = sbatch("--hold", "--array=0-1", "-o", "/dev/null", "--wrap", "true")
    try:
        chunks = {0: ["a"], 1: ["b", "c"], 2: ["d"], 3: ["e"]}
        gone = "999999"  # long purged or never existed: in neither squeue nor (here) sacct
        # chunks 2 and 3 were resubmitted as tasks of `held`: the newest entry wins
        jobs = [gen_entry(gone, [0, 1, 2, 3]),
                {"stage": "gen", "executor": "slurm", "job_id": held,
                 "tasks": {"2": f"{held}_0", "3": f"{held}_1"}, "chunks": [2, 3]}]
        run_folder = make_run(tmp_path, chunks, jobs, gpus=2)
        write_record(run_folder, 3, ["e"], job_id=f"{gone}_3", state="failed", restarts=4,
                     failed={"e": "NaN in latents"}, error="RuntimeError: old job died")
        make_done(tmp_path / "outputs", "a")
        hour_ago = time.time() - 3600
        write_record(run_folder, 0, ["a"], state="finished", done=["a"], started_at=hour_ago,
                     updated_at=hour_ago + 1800)
        write_record(run_folder, 1, ["b", "c"], state="running", current="b", done=["c"])

        only_squeue = tmp_path / "bin"
        only_squeue.mkdir()
        (only_squeue / "squeue").symlink_to(run(["which", "squeue"]).strip())
        monkeypatch.setenv("PATH", str(only_squeue))
        status = monitor.collect_status(run_folder.path)

        assert status["sacct"] is False and "not found" in status["sacct_error"]
        by_index = {c["index"]: c for c in status["chunks"]}
        assert by_index[0]["state"] == "completed"  # from its record
        assert by_index[1]["state"] == "unknown" and "sacct is unavailable" in by_index[1]["reason"]
        assert by_index[1]["unverified"] == ["c"] and by_index[1]["done"] == 0
        assert [(by_index[i]["job_id"], by_index[i]["state"], by_index[i]["reason"]) for i in (2, 3)] == \
            [(f"{held}_0", "pending", "JobHeldUser"), (f"{held}_1", "pending", "JobHeldUser")]
        # the old job's record: its failure stays visible, its state/restarts/error do not
        assert (by_index[3]["restarts"], by_index[3]["error"]) == (0, None)
        assert by_index[3]["failed"] == {"e": "NaN in latents"}
        # GPU time from the finished chunk's record: 1800 s x 2 GPUs.
        assert status["totals"]["gpu_hours"] == pytest.approx(1.0, abs=0.01)
        assert "sacct unavailable" in views.render_status(status)
    finally:
        monkeypatch.undo()
        scancel_quietly(held)


def test_cancel_run_ends_every_stage_and_releases_only_its_claims(slurm_cluster, tmp_path):
    master = sbatch("--array=0-1", "-o", "/dev/null", "--wrap", "sleep 300")
    report = sbatch("--dependency=afterany:" + master, "-o", "/dev/null", "--wrap", "true")
    try:
        chunks = {0: ["s0"], 1: ["s1"]}
        run_folder = make_run(tmp_path, chunks, [
            gen_entry(master, [0, 1]),
            {"stage": "report", "executor": "slurm", "job_id": report, "tasks": {}}])
        outputs = tmp_path / "outputs"
        book = ClaimBook(outputs / ".wmsub" / "claims")
        assert book.claim("s0", {"job_id": f"{master}_0"}) and book.claim("s1", {"job_id": f"{master}_1"})
        assert book.claim("other-run", {"job_id": "999999_3"})
        make_done(outputs, "finished")
        dead = subprocess.Popen(["true"])
        dead.wait()
        temp_of_killed_writer = outputs / f".s0.mp4.{dead.pid}.tmp"
        temp_of_killed_writer.write_bytes(b"partial")
        temp_of_live_writer = outputs / f".other-run.mp4.{os.getpid()}.tmp"
        temp_of_live_writer.write_bytes(b"partial")

        result = submission.cancel_run(run_folder.path)

        assert result["still_queued"] == [] and result["scancel_rc"] == 0
        assert [r for r in squeue_rows(master) + squeue_rows(report)
                if sq.normalize_state(r.state) in sq.ACTIVE_STATES] == []
        assert sorted(result["released_claims"]) == ["s0", "s1"]
        assert sorted(p.name for p in book.dir.glob("*.claim")) == ["other-run.claim"]
        assert (outputs / "finished.mp4").exists()
        assert (outputs / ".wmsub" / "records" / "finished.json").exists()
        assert result["removed_temps"] == [temp_of_killed_writer.name]
        assert temp_of_live_writer.exists()
        after = wait_for(lambda: (lambda s: s if all(c["state"] == "cancelled" for c in s["chunks"])
                                  else None)(monitor.collect_status(run_folder.path)),
                         60, "both chunks shown cancelled")
        assert after["finished"] and after["report"]["state"] == "cancelled"
    finally:
        scancel_quietly(master, report)


def test_status_of_350_instances_in_35_chunks_is_complete_and_consistent(slurm_cluster, tmp_path):
    # its speed (issue: under 2 s) is measured by `python -m bench.status`, not asserted here
    master = sbatch("--hold", "--array=0-34", "-o", "/dev/null", "--wrap", "true")
    try:
        run_folder, now, in_last_hour = build_350_in_35(tmp_path, master)
        outputs = tmp_path / "outputs"
        status = monitor.collect_status(run_folder.path, now=now)
        text = views.render_status(status)
        assert {"run", "chunks", "judge", "report", "totals", "sacct", "squeue_cmd"} <= set(status)
        assert {"index", "job_id", "state", "reason", "restarts", "done", "total", "current",
                "failed", "log"} <= set(status["chunks"][0])
        assert {"done", "total", "videos_per_hour", "eta_s", "gpu_hours"} <= set(status["totals"])
        assert json.loads(json.dumps(status)) == status
        assert status["output_dir"] == str(outputs)
        assert (status["totals"]["done"], status["totals"]["total"]) == (300, 350)
        assert [c["done"] for c in status["chunks"]] == [9] * 30 + [6] * 5
        assert all(c["state"] == "pending" and c["reason"] == "JobHeldUser" for c in status["chunks"])
        assert status["totals"]["videos_per_hour"] == pytest.approx(in_last_hour, rel=0.01)
        assert status["totals"]["eta_s"] == pytest.approx(50 * 3600 / in_last_hour, rel=0.01)
        assert text.count("\n") >= 35 + 4
    finally:
        scancel_quietly(master)
