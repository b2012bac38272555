"""Preemptions and timeouts are counted apart (issue 14, finding 3), without a cluster: the
requeue classifier decides from the job's end time, the worker's checkpoint() (what
submitit calls on the signal) counts the verdict in the chunk record, and `status` shows
both counts. The real signals on the dev cluster: tests/e2e/test_e2e_faults.py."""
from __future__ import annotations

import time

from submitit.core.job_environment import SignalHandler

from wmsub.config import load_config
from wmsub.login.monitor import collect_status
from wmsub.login.planner import build_plan
from wmsub.login.views import render_status
from wmsub.node import requeue
from wmsub.node.worker import ChunkWorker
from wmsub.state.progress import ChunkProgress
from wmsub.state.runs import create_run


def test_signals_are_counted_as_the_classifier_says_and_status_shows_both(tmp_path, synthetic_bench):
    cfg = load_config("configs/smoke.yaml", [
        f"bench.root={synthetic_bench(2)}", f"output.dir={tmp_path / 'out'}",
        f"run.logs_dir={tmp_path / 'logs'}", "plan.chunks=1", "slurm.signal_delay_s=120"])
    plan = build_plan(cfg)
    run = create_run(cfg, None)
    run.save_plan(plan.record())
    (chunk,) = plan.chunks
    worker = ChunkWorker(str(run.path), 0, list(chunk.instances))
    worker._progress = ChunkProgress(run.chunk_record(0), 0, [i.stem for i in chunk.instances])

    original = SignalHandler.has_timed_out
    try:
        # a 10-minute job: submitit alone calls every signal of it a timeout
        start = time.time()
        worker._requeue = requeue.RequeueClassifier(cfg.slurm.signal_delay_s,
                                                    end_time=start + 600).install()
        verdicts = []
        for end_in in (540, 300, 100):  # preempted 1 and 5 minutes in, then the limit's warning
            worker._requeue.end_time = time.time() + end_in
            verdicts.append(SignalHandler.has_timed_out(object()))  # as submitit asks
            worker.checkpoint()  # what submitit then calls
    finally:
        SignalHandler.has_timed_out = original
    assert verdicts == [False, False, True]  # submitit's countdown moves on the last only

    record = worker._progress.read()
    assert (record["preemptions"], record["timeouts"], record["signals"]) == (2, 1, 3), record
    assert record["state"] == "requeued"
    status = collect_status(run.path, use_sacct=False)
    (row,) = status["chunks"]
    assert (row["preemptions"], row["timeouts"]) == (2, 1), row
    assert (status["totals"]["preemptions"], status["totals"]["timeouts"]) == (2, 1)
    assert "timeouts 1, preemptions 2" in render_status(status)
