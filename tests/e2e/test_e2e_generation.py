"""End to end on the dev Slurm cluster: launch.py → job array → chunk workers (2 ranks,
real wan modules, tiny random weights) → videos; then preemption, timeout and scancel."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.e2e import (chunk_record, jobs, latest_run, launch, run_logs, smoke_overrides,
                               squeue_ids, submit_smoke, wait_until)
from tests.helpers.slurm import BeginTimeReleaser, job_state_sacct
from wmsub.state.runs import RunFolder

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def _store(run_dir):
    from wmsub.state.store import OutputStore
    cfg = RunFolder(run_dir).load_config()
    return cfg, OutputStore.for_config(cfg)


def _assert_all_valid(run_dir, stems):
    cfg, store = _store(run_dir)
    out = store.out_dir if hasattr(store, "out_dir") else None
    for stem in stems:
        assert store.is_done(stem, verify="decode"), f"{stem} is not a valid finished video"
    assert store.kernel == "math"  # the login side reads the kernel the node pinned
    records = {p.stem: json.loads(p.read_text())
               for p in (run_dir.parents[1] / "outputs" / ".wmsub" / "records").glob("*.json")}
    for stem in stems:
        assert records[stem]["fingerprint"] == store.fingerprint
        assert records[stem]["kernel"] == "math"
    leftovers = list((run_dir.parents[1] / "outputs").glob(".*.tmp"))
    assert not leftovers, f"partial files left: {leftovers}"
    return out


def test_run_sp_two_ranks_three_chunks(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(6)
    launch("--config", "configs/smoke.yaml", *smoke_overrides(tmp_path, bench, tiny_checkpoint),
           "plan.chunks=3", "--wait", timeout_s=900)
    run_dir = latest_run(tmp_path / "logs")
    plan = json.loads((run_dir / "plan.json").read_text())
    stems = [s for c in plan["chunks"] for s in c["stems"]]
    assert len(plan["chunks"]) == 3 and sorted(stems) == sorted(set(stems)) and len(stems) == 6
    _assert_all_valid(run_dir, stems)
    entry = jobs(run_dir)[0]
    for index, task in entry["tasks"].items():
        rec = chunk_record(run_dir, int(index))
        assert rec["state"] == "finished", run_logs(run_dir)
        assert sorted(rec["done"]) == sorted(rec["stems"])
        assert job_state_sacct(task) == "COMPLETED"
    # both ranks ran in each job: the sp group had two members
    log_text = run_logs(run_dir)
    assert "r1]" in log_text and "r0]" in log_text
    # launching again plans nothing: resume by stem
    again = launch("plan", "--config", "configs/smoke.yaml", "--json",
                   *smoke_overrides(tmp_path, bench, tiny_checkpoint))
    assert json.loads(again.stdout)["pending"] == 0


def test_preemption_requeues_and_resumes(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(4, seed=1)
    # one chunk, slow enough steps that the high-priority job lands mid-chunk
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "generate.sampling_steps": 30, "bench.limit": 4, "slurm.time_min": 30})
    run_dir, gen = submit_smoke(tmp_path, over)
    task = gen["tasks"]["0"]
    rec = wait_until(lambda: (r := chunk_record(run_dir, 0)) and len(r.get("done", [])) >= 1 and r,
                     600, "the first video of the chunk")
    first_done = list(rec["done"])
    records_dir = tmp_path / "outputs" / ".wmsub" / "records"
    before = {s: (records_dir / f"{s}.json").read_text() for s in first_done}
    mtimes = {s: (tmp_path / "outputs" / f"{s}.mp4").stat().st_mtime_ns for s in first_done}
    high = subprocess.run(["sbatch", "--parsable", "-p", "high", "--gres=gpu:4", "-n", "1", "-o", "/dev/null",
                           "--wrap", "sleep 3"], capture_output=True, text=True, check=True)
    high_id = high.stdout.strip().split(";")[0]
    with BeginTimeReleaser([task.split("_")[0]]):
        wait_until(lambda: job_state_sacct(high_id) == "COMPLETED", 300, "the high-priority job")
        wait_until(lambda: chunk_record(run_dir, 0).get("state") == "finished"
                   and not squeue_ids(task), 900, "the requeued chunk to finish")
    rec = chunk_record(run_dir, 0)
    assert rec["restarts"] >= 1, rec
    assert sorted(rec["done"]) == sorted(rec["stems"])
    status = json.loads(launch("status", "--logs", tmp_path / "logs", "--json").stdout)
    (chunk,) = status["chunks"]
    assert chunk["restarts"] >= 1 and chunk["state"] == "completed", chunk
    assert status["totals"]["done"] == 4 == len(list((tmp_path / "outputs").glob("*.mp4")))
    made = [v["stem"] for v in rec["videos"]]
    assert len(made) == len(set(made)), f"a stem was made twice: {made}"
    for s in first_done:  # finished before the preemption: untouched
        assert (records_dir / f"{s}.json").read_text() == before[s]
        assert (tmp_path / "outputs" / f"{s}.mp4").stat().st_mtime_ns == mtimes[s]
    _assert_all_valid(run_dir, rec["stems"])


def test_timeout_requeues_then_bound_fails(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(6, seed=2)
    # 1-minute limit, signal 35 s before it: each incarnation gets ~25 s of work
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "generate.sampling_steps": 40, "slurm.time_min": 1,
        "slurm.signal_delay_s": 35, "slurm.max_timeout_requeues": 5})
    run_dir, gen = submit_smoke(tmp_path, over)
    task = gen["tasks"]["0"]
    with BeginTimeReleaser([task.split("_")[0]]):
        wait_until(lambda: not squeue_ids(task), 1200, "the timed-out chunk to complete")
    rec = chunk_record(run_dir, 0)
    assert rec["state"] == "finished", (rec, run_logs(run_dir))
    assert rec["restarts"] >= 1
    _assert_all_valid(run_dir, rec["stems"])

    # three times the work with no timeout requeue allowed: it ends failed, and says why
    # (6 videos of 40 steps once fit one ~25 s incarnation on a quiet machine)
    bench2 = synthetic_bench(6, seed=3)
    tmp2 = tmp_path / "bound"
    over2 = smoke_overrides(tmp2, bench2, tiny_checkpoint, **{
        "plan.chunks": 1, "generate.sampling_steps": 120, "slurm.time_min": 1,
        "slurm.signal_delay_s": 35, "slurm.max_timeout_requeues": 0})
    run2, gen = submit_smoke(tmp2, over2)
    task2 = gen["tasks"]["0"]
    wait_until(lambda: not squeue_ids(task2), 600, "the bounded chunk to end")
    rec2 = chunk_record(run2, 0)
    assert rec2["state"] == "failed" and "timed out" in rec2["error"], rec2
    assert len(rec2["done"]) < len(rec2["stems"])
    # the rank left alone when rank 0 went counts no failed attempt against the instance
    failures = tmp2 / "outputs" / ".wmsub" / "failures"
    assert not list(failures.glob("*.json")), [p.read_text()[:300] for p in failures.glob("*.json")]


def test_scancel_then_launch_plans_only_missing(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(6, seed=4)
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "generate.sampling_steps": 30})
    run_dir, gen = submit_smoke(tmp_path, over)
    task = gen["tasks"]["0"]
    wait_until(lambda: len(chunk_record(run_dir, 0).get("done", [])) >= 2, 600, "two videos")
    subprocess.run(["scancel", task], check=True)
    wait_until(lambda: not squeue_ids(task), 120, "the cancelled chunk to leave the queue")
    # a rank can outlive the job's queue entry by Slurm's kill wait; until it has gone its
    # claim is live and the planner rightly leaves that stem to it
    wait_until(lambda: not _store(run_dir)[1].claims.live_claims(), 60, "the cancelled ranks to exit")
    done = set(p.stem for p in (tmp_path / "outputs").glob("*.mp4"))
    assert 2 <= len(done) < 6
    plan = json.loads(launch("plan", "--config", "configs/smoke.yaml", "--json", *over).stdout)
    planned = {s for c in plan["chunks"] for s in c["stems"]}
    assert plan["done"] == len(done)
    assert planned.isdisjoint(done) and len(planned) == 6 - len(done)
    launch("--config", "configs/smoke.yaml", *over, "--wait", timeout_s=900)
    assert len(list((tmp_path / "outputs").glob("*.mp4"))) == 6


def test_local_executor_runs_the_same_worker(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(3, seed=5)
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "slurm.executor": "local", "generate.parallel": "cfg",
        "generate.async_write": "true"})
    launch("--config", "configs/smoke.yaml", *over, timeout_s=600)
    run_dir = latest_run(tmp_path / "logs")
    assert jobs(run_dir)[0]["executor"] == "local"
    rec = chunk_record(run_dir, 0)
    assert rec["state"] == "finished" and len(rec["done"]) == 3, (rec, run_logs(run_dir))
    _assert_all_valid(run_dir, rec["stems"])


def test_failing_instance_is_recorded_and_the_chunk_goes_on(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(3, seed=6)
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "output.max_attempts": 2})
    run_dir, gen = submit_smoke(tmp_path, over)
    # the image vanishes after validation: generating that instance must fail on the node
    entries = json.loads((bench / "worldmodelbench.json").read_text())
    victim = entries[1]["first_frame"]
    image_bytes = (bench / victim).read_bytes()
    (bench / victim).unlink()
    task = gen["tasks"]["0"]
    wait_until(lambda: not squeue_ids(task), 600, "the chunk to end")
    rec = chunk_record(run_dir, 0)
    stem = victim.split("/")[-1].rsplit(".", 1)[0]
    assert rec["state"] == "finished_with_failures", rec
    assert stem in rec["failed"] and "FileNotFoundError" in rec["failed"][stem]
    assert sorted(rec["done"]) == sorted(s for s in rec["stems"] if s != stem)
    failure = json.loads((tmp_path / "outputs" / ".wmsub" / "failures" / f"{stem}.json").read_text())
    assert failure["attempts"] == 2 and "Traceback" in failure["traceback"]
    assert not (tmp_path / "outputs" / f"{stem}.mp4").exists()
    # planning again (image back) leaves the failed instance out (attempts used up), says so
    (bench / victim).write_bytes(image_bytes)
    plan = json.loads(launch("plan", "--config", "configs/smoke.yaml", "--json", *over).stdout)
    assert plan["failed"] == 1 and plan["pending"] == 0


def test_dp_ranks_share_a_chunk_each_stem_once(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(4, seed=8)
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 1, "generate.parallel": "dp"})
    launch("--config", "configs/smoke.yaml", *over, "--wait", timeout_s=900)
    run_dir = latest_run(tmp_path / "logs")
    rec = chunk_record(run_dir, 0)
    assert rec["state"] == "finished" and sorted(rec["done"]) == sorted(rec["stems"]), rec
    made = [v["stem"] for v in rec["videos"]]
    assert sorted(made) == sorted(rec["stems"]), f"each stem exactly once: {made}"
    records = [json.loads((tmp_path / "outputs" / ".wmsub" / "records" / f"{s}.json").read_text())
               for s in rec["stems"]]
    ranks = {r["rank"] for r in records}
    assert ranks == {0, 1}, f"both dp ranks should have written videos: {ranks}"
    _assert_all_valid(run_dir, rec["stems"])
