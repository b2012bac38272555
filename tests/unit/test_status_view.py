"""`status`, `runs`, `logs` and `--wait`'s last line on run folders of local-executor jobs
(states from the progress records, no Slurm call); real files throughout."""
from __future__ import annotations

import io
import json
import time

import pytest
from submitit.core.utils import JobPaths

from tests.helpers.e2e import launch
from tests.helpers.monitor import gen_entry, make_done, make_run, write_record
from wmsub.login import monitor, views
from wmsub.state.progress import ChunkProgress

FIX = ("CheckpointError: model.checkpoint_dir /tmp/x/no-such-ckpt does not exist — fix: point "
       "model.checkpoint_dir at the folder holding the official Wan2.2-TI2V-5B files "
       "(diffusion_pytorch_model*.safetensors, Wan2.2_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth)")


def _traceback(frames: int) -> str:
    lines = ["Traceback (most recent call last):"]
    for k in range(frames):
        lines += [f'  File "/site-packages/wmsub/node/module_{k}.py", line {10 + k}, in step_{k}',
                  f"    result = call_{k}(argument)", "             ^^^^^^^^^^^^^^^^"]
    return "\n".join(lines + [FIX])


def _local_run(tmp_path, chunks, **kw):
    return make_run(tmp_path, chunks, [gen_entry("4242", list(chunks), executor="local")], **kw)


def test_status_prints_the_exception_and_its_fix_whole_without_the_frames(tmp_path):
    run = _local_run(tmp_path, {0: ["a", "b"]})
    write_record(run, 0, ["a", "b"], job_id="4242_0", state="failed", error=FIX)
    log = JobPaths(run.submitit_dir, job_id="4242_0", task_id=0).stderr
    log.write_text("starting\n" + _traceback(frames=20) + "\n")
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


def test_the_rate_stays_put_after_the_run_ended_and_an_ended_run_has_no_eta(tmp_path):
    chunks = {0: [f"s{k}" for k in range(6)]}
    run = _local_run(tmp_path, chunks)
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
    run = _local_run(tmp_path, {0: ["a", "b"]})
    write_record(run, 0, ["a", "b"], state="running", current="a", step=12, steps=50)
    status = monitor.collect_status(run.path)
    assert (status["chunks"][0]["step"], status["chunks"][0]["steps"]) == (12, 50)
    assert "a step 12/50" in views.render_status(status)


def test_wait_ends_with_the_report_path_and_its_total_score(tmp_path):
    run = _local_run(tmp_path, {0: ["a"]})
    write_record(run, 0, ["a"], state="finished", done=["a"])
    status = monitor.collect_status(run.path)
    assert views.final_line(status) == "report: none (judge.enabled is false for this run)"
    (run.path / "report").mkdir()
    (run.path / "report" / "report.md").write_text("# report\n")
    (run.path / "report" / "report.json").write_text(json.dumps({"scores": {"total": 7.4567}}))
    status = monitor.collect_status(run.path)
    assert views.final_line(status) == f"report: {run.path / 'report' / 'report.md'}  (total score 7.46 / 10)"


def test_runs_lists_every_run_with_its_state_counts_and_score(tmp_path):
    from wmsub.state.runs import RunFolder
    first = _local_run(tmp_path, {0: ["a", "b"]})
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
    run = _local_run(tmp_path, {0: ["a"], 1: ["b"]})
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


def test_the_live_screen_fits_a_short_terminal_keeping_the_rows_that_matter(tmp_path):
    from rich.console import Console
    from wmsub.login.live import screen
    chunks = {i: [f"s{i}-{k}" for k in range(10)] for i in range(35)}
    run = _local_run(tmp_path, chunks)
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
    lines = ["starting"] + _traceback(frames=3).splitlines() + noise
    summary = monitor.summarize_log(lines)
    assert FIX in summary and "Traceback (most recent call last):" in summary
    assert summary[-monitor.SLURM_LINES:] == noise[-monitor.SLURM_LINES:]
    assert len(summary) <= monitor.LOG_TAIL_LINES
    assert monitor.summarize_log(noise) == noise[-monitor.LOG_TAIL_LINES:]  # nothing else to show
