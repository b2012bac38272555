"""One rank of a 2-rank chunk raises in the middle of a video while its peer waits inside an
engine collective. The real chunk worker must record the failure with its reason, end
within `generate.dist_timeout_s` instead of hanging, and leave no video and no claim.

Used by tests/test_worker_desync.py (gloo on CPU) and by tools/two_gpu.py (NCCL on GPU).
The only injected part is the failure itself: `WanTI2VEngine._guided` raises on one rank at
one denoising step.
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


def prepare(tmp: Path, bench: Path, ckpt: Path, device: str, timeout_s: int) -> dict:
    """A run folder with its config; returns the spec the ranks read."""
    from wmsub.config import load_config
    from wmsub.state.runs import create_run
    cfg = load_config(str(REPO / "configs" / "smoke.yaml"), [
        f"bench.root={bench}", f"model.checkpoint_dir={ckpt}", f"run.logs_dir={tmp / 'logs'}",
        f"output.dir={tmp / 'outputs'}", "bench.limit=2", f"generate.device={device}",
        "generate.parallel=sp", f"generate.dist_timeout_s={timeout_s}",
        "run.name=desync"])
    run = create_run(cfg, None)
    return {"run_dir": str(run.path), "fail_rank": 1, "fail_step": 2}


def rank_main() -> None:
    """One rank: inject the failure on `fail_rank`, then run the real chunk worker."""
    spec = json.loads(os.environ["WMSUB_DESYNC_SPEC"])
    from wmsub.node.engines import wan_ti2v
    from wmsub.login.planner import build_plan
    from wmsub.state.runs import RunFolder
    from wmsub.node.worker import ChunkWorker
    if int(os.environ["RANK"]) == spec["fail_rank"]:
        real = wan_ti2v.WanTI2VEngine._guided
        calls = {"n": 0}

        def failing(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == spec["fail_step"]:
                raise RuntimeError(INJECTED)
            return real(self, *args, **kwargs)
        wan_ti2v.WanTI2VEngine._guided = failing
    cfg = RunFolder(Path(spec["run_dir"])).load_config()
    plan = build_plan(cfg)
    instances = [i for i in plan.instances if i.stem in set(plan.pending)]
    ChunkWorker(spec["run_dir"], 0, instances)()


def launch(spec: dict, wait_s: float) -> dict:
    """Start both ranks, wait at most `wait_s`; what happened, as a dict."""
    from tests.helpers.engine import free_port as _free_port
    port = _free_port()
    procs = []
    t0 = time.time()
    for rank in range(2):
        env = dict(os.environ, WMSUB_DESYNC_SPEC=json.dumps(spec), RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", "from tests.helpers.desync_scenario import rank_main; rank_main()"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs, hung = [], False
    for p in procs:
        try:
            out, _ = p.communicate(timeout=max(1.0, wait_s - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            hung = True
            p.kill()
            out, _ = p.communicate()
        outs.append(out)
    return {"returncodes": [p.returncode for p in procs], "hung": hung,
            "wall_s": round(time.time() - t0, 1), "logs": outs}


def outcome(spec: dict) -> dict:
    """What the run left: failure records, videos, claims, the chunk record."""
    from wmsub.state.runs import RunFolder
    run = RunFolder(Path(spec["run_dir"]))
    cfg = run.load_config()
    out = Path(cfg.output.dir)
    meta = out / ".wmsub"
    failures = {p.stem: json.loads(p.read_text()) for p in sorted((meta / "failures").glob("*.json"))}
    claims = sorted(p.name for p in (meta / "claims").glob("*")) if (meta / "claims").is_dir() else []
    record_path = run.chunk_record(0)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    return {"failures": {s: {"attempts": f["attempts"], "reason": f["reason"]} for s, f in failures.items()},
            "videos": sorted(p.name for p in out.glob("*.mp4")),
            "claims": claims, "chunk_state": record.get("state"), "chunk_error": record.get("error")}
