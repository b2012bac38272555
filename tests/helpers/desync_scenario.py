"""One rank of a 2-rank chunk raises in the middle of a video while its peer waits inside an
engine collective (or, with `stuck_rank`, is stuck in a C call and never answers). The real
chunk worker must record the failure with its reason and end every rank within the chunk's
own bound (`node.ranks.failure_bound_s`), leaving no video and no live claim.

Used by tests/ranks/test_worker_desync.py (gloo on CPU) and by tools/two_gpu.py --failure
(NCCL on GPU). The only injected parts are the failure itself (`WanTI2VEngine._guided` raises
on one rank at one denoising step) and, optionally, a rank that blocks there instead.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
INJECTED = "injected failure on one rank mid-video"
STUCK_S = 3600  # a stuck rank blocks this long in libc: longer than any bound here
MARGIN_S = 15  # the harness waits the chunk's bound plus this before calling it hung


def prepare(tmp: Path, bench: Path, ckpt: Path, device: str, timeout_s: int,
            attention: str = "auto", stuck_rank: int | None = None) -> dict:
    """A run folder with its config; returns the spec the ranks read."""
    from wmsub.config import load_config
    from wmsub.state.runs import create_run
    cfg = load_config(str(REPO / "configs" / "smoke.yaml"), [
        f"bench.root={bench}", f"model.checkpoint_dir={ckpt}", f"run.logs_dir={tmp / 'logs'}",
        f"output.dir={tmp / 'outputs'}", "bench.limit=2", f"generate.device={device}",
        "generate.parallel=sp", f"generate.dist_timeout_s={timeout_s}",
        f"generate.attention={attention}", "run.name=desync"])
    run = create_run(cfg, None)
    from wmsub.login.planner import build_plan
    run.save_plan(build_plan(cfg).record())  # as a launch does: `resubmit` reads it
    return {"run_dir": str(run.path), "fail_rank": 1, "fail_step": 2, "stuck_rank": stuck_rank,
            "dist_timeout_s": timeout_s}


def rank_main() -> None:
    """One rank: inject the failure on `fail_rank` (and the block on `stuck_rank`), then run
    the real chunk worker."""
    spec = json.loads(os.environ["WMSUB_DESYNC_SPEC"])
    from wmsub.node.engines import wan_ti2v
    from wmsub.login.planner import build_plan
    from wmsub.state.runs import RunFolder
    from wmsub.node.worker import ChunkWorker
    rank = int(os.environ["RANK"])
    if rank in (spec["fail_rank"], spec.get("stuck_rank")):
        real = wan_ti2v.WanTI2VEngine._guided
        calls = {"n": 0}

        def injected(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == spec["fail_step"]:
                if rank == spec["fail_rank"]:
                    raise RuntimeError(INJECTED)
                import ctypes
                ctypes.CDLL(None).sleep(STUCK_S)  # like a CUDA sync that never returns
            return real(self, *args, **kwargs)
        wan_ti2v.WanTI2VEngine._guided = injected
    cfg = RunFolder(Path(spec["run_dir"])).load_config()
    plan = build_plan(cfg)
    instances = [i for i in plan.instances if i.stem in set(plan.pending)]
    ChunkWorker(spec["run_dir"], 0, instances)()


def failure_time(spec: dict) -> float | None:
    """When the failing rank recorded its failure (the start of the bound), or None yet."""
    from wmsub.state.runs import RunFolder
    cfg = RunFolder(Path(spec["run_dir"])).load_config()
    for path in (Path(cfg.output.dir) / ".wmsub" / "failures").glob("*.json"):
        try:
            return float(json.loads(path.read_text())["history"][0]["at"])
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return None


def launch(spec: dict, startup_s: float) -> dict:
    """Start both ranks; once the failure is recorded, give them the chunk's bound plus
    MARGIN_S to end, then kill what is left (`hung`). What happened, as a dict."""
    from tests.helpers.engine import free_port as _free_port
    from wmsub.node.ranks import failure_bound_s
    bound = failure_bound_s(spec["dist_timeout_s"])
    port = _free_port()
    procs, logs = [], []
    t0 = time.time()
    for rank in range(2):
        env = dict(os.environ, WMSUB_DESYNC_SPEC=json.dumps(spec), RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = open(Path(spec["run_dir"]) / f"rank{rank}.log", "w+")  # a pipe could fill and block
        logs.append(log)
        procs.append(subprocess.Popen(
            [sys.executable, "-c", "from tests.helpers.desync_scenario import rank_main; rank_main()"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    ended: list[float | None] = [None, None]
    failed_at, hung, give_up = None, False, t0 + startup_s
    while None in ended:
        now = time.time()
        for i, p in enumerate(procs):
            if ended[i] is None and p.poll() is not None:
                ended[i] = now
        if failed_at is None and (failed_at := failure_time(spec)) is not None:
            give_up = failed_at + bound + MARGIN_S
        if None in ended and now > give_up:
            hung = True
            for i, p in enumerate(procs):
                if ended[i] is None:
                    p.kill()
                    p.wait()
                    ended[i] = time.time()
        time.sleep(0.2)
    texts = []
    for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
    after = [round(e - failed_at, 1) for e in ended] if failed_at else None
    return {"returncodes": [p.returncode for p in procs], "hung": hung, "bound_s": bound,
            "ended_after_failure_s": after, "measured_s": max(after) if after else None,
            "within_bound": bool(after) and not hung and max(after) <= bound,
            "wall_s": round(time.time() - t0, 1), "logs": texts}


def outcome(spec: dict) -> dict:
    """What the run left: failure records, videos, claims (files, and those a live process
    holds), the chunk record."""
    from wmsub.state.runs import RunFolder
    from wmsub.state.store import OutputStore
    run = RunFolder(Path(spec["run_dir"]))
    cfg = run.load_config()
    live = sorted(OutputStore.for_config(cfg).claims.live_claims())
    out = Path(cfg.output.dir)
    meta = out / ".wmsub"
    failures = {p.stem: json.loads(p.read_text()) for p in sorted((meta / "failures").glob("*.json"))}
    claims = sorted(p.name for p in (meta / "claims").glob("*")) if (meta / "claims").is_dir() else []
    record_path = run.chunk_record(0)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return {"failures": {s: {"attempts": f["attempts"], "reason": f["reason"]} for s, f in failures.items()},
            "videos": sorted(p.name for p in out.glob("*.mp4")),
            "claims": claims, "live_claims": live,
            "chunk_state": record.get("state"), "chunk_error": record.get("error")}
