"""`status`, `runs`, `logs` and `--wait`'s last line on run folders of local-executor jobs
(states from the progress records, no Slurm call); real files throughout. The commands as
launch.py runs them, in their own process, are in tests/procs/test_status_view.py."""
from __future__ import annotations

import io
import json
import time

import pytest

from tests.helpers.monitor import FIX, fake_traceback, local_run, make_done, write_record
from wmsub.login import monitor, views
from wmsub.state.progress import ChunkProgress


def test_the_rate_stays_put_after_the_run_ended_and_an_ended_run_has_no_eta(tmp_path):
    chunks = {0: [f"s{k}" for k in range(6)]}
    run = local_run(tmp_path, chunks)
    t_end = time.time() - 60
    done = chunks[0][:4]
    for stem in done:
        make_done(tmp_path / "outputs", stem)
    # 4 videos over the 30 minutes before the end, then the chunk ended (2 failed)
    videos = [{"stem": s, "seconds": 90.0, "s_per_step": 1.0, "finished_at": t_end - 450 * (3 - k)}
              for k, s in enumerate(done)]
    write_record(run, 0, chunks[0], state="finished_with_failures", done=done, videos=videos,
                 started_at=t_end - 1800, updated_at=t_end, failed={"s4": "x", "s5": "y"})
    rates = [monitor.collect_status(run.path, now=t_end + dt)["totals"] for dt in (60, 840, 7200)]
    assert {t["videos_per_hour"] for t in rates} == {8.0}  # 4 videos in the 30-minute window
    assert all(t["eta_s"] is None and not t["active"] for t in rates)
    assert "8.0 videos/h  ETA -" in views.render_status(monitor.collect_status(run.path, now=t_end + 840))
    # the same run still going: the rate is measured up to now, and there is an ETA
    write_record(run, 0, chunks[0], state="running", done=done, videos=videos, current="s4",
                 started_at=t_end - 1800, updated_at=t_end)
    live = monitor.collect_status(run.path, now=t_end + 60)["totals"]
    assert live["active"] and live["eta_s"] == pytest.approx(2 * 3600 / live["videos_per_hour"], rel=0.01)


def test_the_step_reporter_writes_at_most_every_interval_and_never_waits(tmp_path):
    progress = ChunkProgress(tmp_path / "chunks" / "0.json", 0, ["a"])
    progress.update(lambda r: r.update(current="a"))
    report = progress.step_reporter("a", interval_s=0.2)
    writes = []
    original = progress.try_update
    progress.try_update = lambda fn: writes.append(1) or original(fn)
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < 0.7:
        step += 1
        report(step, 10_000)
    assert 2 <= len(writes) <= 4, f"{len(writes)} writes for {step} steps in 0.7 s"
    record = progress.read()
    assert record["steps"] == 10_000 and 0 < record["step"] <= step
    # a held lock: the step is skipped at once, nothing waits
    with progress._lock(1.0):
        t0 = time.monotonic()
        assert progress.try_update(lambda r: r.update(step=1)) is False
        assert time.monotonic() - t0 < 0.1
    # another video is current now: a late report of the old one writes nothing
    progress.update(lambda r: r.update(current="b", step=None))
    stale = progress.step_reporter("a", interval_s=0.0)
    stale(7, 10)
    assert progress.read()["step"] is None


def test_status_shows_the_current_denoising_step(tmp_path):
    run = local_run(tmp_path, {0: ["a", "b"]})
    write_record(run, 0, ["a", "b"], state="running", current="a", step=12, steps=50)
    status = monitor.collect_status(run.path)
    assert (status["chunks"][0]["step"], status["chunks"][0]["steps"]) == (12, 50)
    assert "a step 12/50" in views.render_status(status)


def test_wait_ends_with_the_report_path_and_its_total_score(tmp_path):
    run = local_run(tmp_path, {0: ["a"]})
    write_record(run, 0, ["a"], state="finished", done=["a"])
    status = monitor.collect_status(run.path)
    assert views.final_line(status) == "report: none (judge.enabled is false for this run)"
    (run.path / "report").mkdir()
    (run.path / "report" / "report.md").write_text("# report\n")
    (run.path / "report" / "report.json").write_text(json.dumps({"scores": {"total": 7.4567}}))
    status = monitor.collect_status(run.path)
    assert views.final_line(status) == f"report: {run.path / 'report' / 'report.md'}  (total score 7.46 / 10)"
    assert monitor.report_score(run.path) == 7.46  # what `runs` shows
    (run.path / "report" / "report.json").write_text("{not json")
    assert monitor.report_score(run.path) is None
    assert views.final_line(monitor.collect_status(run.path)).endswith("(no total score)")


def test_the_live_screen_fits_a_short_terminal_keeping_the_rows_that_matter(tmp_path):
    from rich.console import Console
    from wmsub.login.live import screen
    chunks = {i: [f"s{i}-{k}" for k in range(10)] for i in range(35)}
    run = local_run(tmp_path, chunks)
    for i in range(35):
        state = "finished" if i < 20 else "running" if i < 24 else "failed" if i == 30 else "pending"
        write_record(run, i, chunks[i], state=state, current=chunks[i][3] if state == "running" else None,
                     step=7, steps=50, error="RuntimeError: boom" if state == "failed" else None)
    console = Console(width=100, height=20, record=True, file=io.StringIO())
    console.print(screen(monitor.collect_status(run.path), 100, 20))
    lines = console.export_text().splitlines()
    assert len(lines) <= 20
    shown = [int(line.split()[0]) for line in lines if line.split() and line.split()[0].isdigit()]
    assert shown[:4] == [20, 21, 22, 23] and 30 in shown and not set(shown) & set(range(20))
    assert any("s20-3 step 7/50" in line for line in lines)
    assert any(f"{35 - len(shown)} more" in line and "20 completed" in line for line in lines)
    assert "chunk 30: RuntimeError: boom" in "\n".join(lines)


def test_slurm_lines_after_a_crash_leave_the_exception_in_view():
    # seen in CI: a rank's exception followed by 14 lines of srun's own teardown messages
    noise = [f"srun: error: slurm_msg_sendto: address:port=127.0.0.1:{40000 + k} msg_type=8001"
             for k in range(14)]
    lines = ["starting"] + fake_traceback(frames=3).splitlines() + noise
    summary = monitor.summarize_log(lines)
    assert FIX in summary and "Traceback (most recent call last):" in summary
    assert summary[-monitor.SLURM_LINES:] == noise[-monitor.SLURM_LINES:]
    assert len(summary) <= monitor.LOG_TAIL_LINES
    assert monitor.summarize_log(noise) == noise[-monitor.LOG_TAIL_LINES:]  # nothing else to show


def _slurm_answer(acct: dict, queue: dict | None = None) -> tuple:
    """What `monitor.query_slurm` returns: (squeue, its error, sacct, its error)."""
    return queue or {}, None, acct, None


def _task(job_id: str, state: str, word: str, reason: str = "", source: str = "sacct"):
    from wmsub.login import slurm_query as sq
    return sq.JobInfo(job_id, job_id.replace("_", "0"), state, word, reason=reason, elapsed_s=300,
                      source=source)


def test_states_slurm_reports_oddly_after_the_end(tmp_path):
    """Chunk 0's record says finished with its 3 videos on disk, but Slurm says FAILED with
    exit code 12 (preempted while exiting); chunk 1 says finished with a video missing;
    chunk 2 was cancelled mid-video. The dev-cluster version: tests/e2e/test_cli_slurm.py."""
    from tests.helpers.monitor import gen_entry, make_run
    chunks = {0: ["a", "b", "c"], 1: ["d", "e"], 2: ["f", "g"]}
    run = make_run(tmp_path, chunks, [gen_entry("900", [0, 1, 2])])
    for stem in "abcd":
        make_done(tmp_path / "outputs", stem)
    write_record(run, 0, chunks[0], job_id="900_0", state="finished", done=chunks[0])
    write_record(run, 1, chunks[1], job_id="900_1", state="finished", done=["d"])
    write_record(run, 2, chunks[2], job_id="900_2", state="running", current="f", step=3, steps=50,
                 videos=[{"stem": "x", "seconds": 60, "finished_at": time.time() - 120}])
    acct = {"900_0": _task("900_0", "failed", "FAILED", "exit code 12"),
            "900_1": _task("900_1", "failed", "FAILED", "exit code 12"),
            "900_2": _task("900_2", "cancelled", "CANCELLED by 0")}
    status = monitor.collect_status(run.path, slurm=_slurm_answer(acct))
    first, second, third = status["chunks"]
    assert (first["state"], first["state_from"]) == ("completed", "record")
    assert first["slurm_state"] == "FAILED" and "Slurm: FAILED, exit code 12" in first["reason"]
    assert second["state"] == "failed" and "state_from" not in second
    assert third["state"] == "cancelled" and third["current"] is None and third["step"] is None
    t = status["totals"]
    assert (t["failed_chunks"], t["failed"], t["active"], t["eta_s"]) == (2, 3, False, None)
    text = views.render_status(status)
    assert "completed (per its record)" in text and "ETA -" in text
    assert "failed (exit code 12)" in text  # chunk 1's own line
    # Slurm is about to run chunk 0 again: its state is Slurm's, and the run has an ETA
    queue = {"900_0": _task("900_0", "pending", "PENDING", "BeginTime", source="squeue")}
    status = monitor.collect_status(run.path, slurm=_slurm_answer(acct, queue))
    assert status["chunks"][0]["state"] == "pending" and status["totals"]["active"]
    assert status["totals"]["eta_s"] is not None


# the keys `status --json` had before the live screen and the log summaries: additions only
JSON_KEYS_BEFORE = {
    "": {"run", "path", "output_dir", "time", "chunks", "judge", "report", "totals", "sacct",
         "sacct_error", "squeue_error", "squeue_cmd", "finished"},
    "chunk": {"index", "job_id", "state", "reason", "slurm_state", "restarts", "elapsed_s", "done",
              "total", "current", "failed", "error", "record_state", "record_job_id", "unverified",
              "timeouts", "preemptions", "log", "log_tail"},
    "judge": {"state", "jobs", "results", "shards", "enabled"},
    "report": {"state", "jobs", "present", "path"},
    "totals": {"done", "total", "failed", "plan_failed", "videos_per_hour", "eta_s", "gpu_hours",
               "failed_chunks", "restarts", "timeouts", "preemptions"},
}


def test_status_json_only_adds_keys(tmp_path):
    run = local_run(tmp_path, {0: ["a"]})
    write_record(run, 0, ["a"], job_id="4242_0", state="failed", error="RuntimeError: boom")
    status = json.loads(json.dumps(monitor.collect_status(run.path)))
    got = {"": status, "chunk": status["chunks"][0], "judge": status["judge"],
           "report": status["report"], "totals": status["totals"]}
    for where, keys in JSON_KEYS_BEFORE.items():
        assert keys <= set(got[where]), (where, keys - set(got[where]))


def test_logs_follow_prints_what_is_appended_until_the_job_leaves_the_queue(tmp_path, monkeypatch):
    from submitit.core.utils import JobPaths

    from tests.helpers.monitor import gen_entry, make_run
    from wmsub.login import chunklog
    run = make_run(tmp_path, {0: ["a"]}, [gen_entry("555", [0])])
    log = JobPaths(run.submitit_dir, job_id="555_0", task_id=0).stdout
    log.write_text("line-1\n")
    monkeypatch.setattr(chunklog, "FOLLOW_POLL_S", 0.01)
    monkeypatch.setattr(chunklog, "QUEUE_POLL_S", 0.02)
    asked: list[str] = []

    def job_active(job_id: str) -> bool:  # the job writes a line between polls; squeue
        asked.append(job_id)              # lists it 5 times, then it is gone (its last line
        with open(log, "a") as f:         # written as it ended)
            f.write(f"line-{len(asked) + 1}\n")
        return len(asked) <= 5
    monkeypatch.setattr(chunklog, "_job_active", job_active)
    out = io.StringIO()
    assert chunklog.show_chunk_log(run, 0, follow=True, out=out) == 0
    assert out.getvalue() == f"==> {log} <==\n" + "".join(f"line-{k}\n" for k in range(1, 8))
    assert set(asked) == {"555_0"} and len(asked) == 6
