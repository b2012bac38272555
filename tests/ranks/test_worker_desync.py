"""A rank that fails alone mid-video (2 gloo ranks, sp, the real chunk worker) ends the whole
chunk within the chunk's own bound (node.ranks.failure_bound_s), measured here."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.desync_scenario import INJECTED, launch, outcome, prepare
from wmsub.node.ranks import DESYNC_EXIT_CODE, failure_bound_s

pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]


def test_one_rank_failing_mid_video_is_recorded_and_ends_the_chunk(tmp_path, synthetic_bench,
                                                                    tiny_checkpoint):
    spec = prepare(tmp_path, synthetic_bench(2), tiny_checkpoint, device="cpu", timeout_s=10)
    result = launch(spec, startup_s=240)
    logs = "\n".join(result["logs"])[-6000:]
    assert not result["hung"] and result["within_bound"], (result["ended_after_failure_s"], logs)
    assert result["bound_s"] == failure_bound_s(10)
    # the peer's collective timed out (10 s) instead of hanging; both ranks recorded the
    # desync and ended before the teardown, with the desync exit code
    assert result["returncodes"] == [DESYNC_EXIT_CODE, DESYNC_EXIT_CODE], logs
    state = outcome(spec)
    (stem, failure), = state["failures"].items()
    assert failure["attempts"] == 1 and INJECTED in failure["reason"], state
    assert state["videos"] == [] and state["claims"] == [], state
    assert state["chunk_state"] == "failed" and "failed differently" in state["chunk_error"], state

    # `resubmit` continues the run: both stems again, the failed one with fresh attempts
    from wmsub.login.submission import resubmit_workers
    from wmsub.state.runs import RunFolder
    run = RunFolder(Path(spec["run_dir"]))
    workers = resubmit_workers(run, run.load_config())
    assert sorted(i.stem for w in workers for i in w.instances) == sorted(run.load_plan().stems)
    assert stem in run.load_plan().stems and outcome(spec)["failures"] == {}


def test_a_peer_that_never_answers_is_ended_within_the_bound(tmp_path, synthetic_bench,
                                                             tiny_checkpoint):
    """Rank 0 blocks in a C call where rank 1 fails (like a CUDA sync that never returns):
    neither its collective timeout nor the exchange can end it. The failing rank's own
    deadline records why, ends the peer and exits, within the bound."""
    spec = prepare(tmp_path, synthetic_bench(2), tiny_checkpoint, device="cpu", timeout_s=5,
                   stuck_rank=0)
    result = launch(spec, startup_s=240)
    logs = "\n".join(result["logs"])[-6000:]
    assert not result["hung"] and result["within_bound"], (result["ended_after_failure_s"], logs)
    assert result["returncodes"] == [-9, DESYNC_EXIT_CODE], logs
    state = outcome(spec)
    (stem, failure), = state["failures"].items()
    assert failure["attempts"] == 1 and INJECTED in failure["reason"], state
    assert state["chunk_state"] == "failed" and "did not answer within 35 s" in state["chunk_error"], state
    assert state["videos"] == [] and state["live_claims"] == [], state


def test_exit_bound_ends_a_process_that_cannot_exit_by_itself():
    """After a desync the rank ends within DESYNC_EXIT_S even if its exit blocks (seen under
    NCCL on 2 H100s): here a process stuck in a C call after arming the bound."""
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers.desync_scenario import REPO
    code = ("import ctypes, signal; from wmsub.node.ranks import exit_within; "
            "signal.signal(signal.SIGALRM, signal.SIG_IGN); exit_within(1); "
            "ctypes.CDLL(None).sleep(30)")  # blocks in libc, no Python runs meanwhile
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=25)
    assert proc.returncode == -signal.SIGALRM
    assert time.time() - t0 < 20


def test_the_generation_job_ends_every_task_once_one_exits_with_an_error(tmp_path):
    """Under Slurm the failure bound also rests on srun ending the other ranks at once."""
    from wmsub.config import load_config
    from wmsub.login.submission import sbatch_preview
    from wmsub.state.runs import RunFolder
    cfg = load_config("configs/smoke.yaml", [f"run.logs_dir={tmp_path}"])
    script = sbatch_preview(cfg, RunFolder(tmp_path / "DRY-RUN"), 2)
    (srun,) = [line for line in script.splitlines() if line.startswith("srun ")]
    assert "--kill-on-bad-exit=1" in srun, srun
