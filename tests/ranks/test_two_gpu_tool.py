"""tools/two_gpu.py (the 2-GPU NCCL check) at tiny sizes on 2 gloo ranks, so it cannot rot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_two_gpu_tool_runs_on_two_cpu_ranks(tmp_path):
    out = tmp_path / "two.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "tools/two_gpu.py", "--tiny", "--ckpt", str(tmp_path / "ckpt"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["cfg_vs_none"]["equal_latent"] and res["cfg_vs_none"]["equal_video"], res
    for mode in ("sp", "cfg"):
        assert res[mode]["s_per_step"] > 0 and res[mode]["videos_per_hour_per_job"] > 0, res
    assert len(res["dp"]["ranks"]) == 2, res


def test_failure_run_prints_hung_return_codes_and_the_measured_bound(tmp_path):
    """`python tools/two_gpu.py --failure` (here on 2 CPU ranks): the JSON the GPU run gives."""
    from wmsub.node.ranks import DESYNC_EXIT_CODE, failure_bound_s
    cmd = [sys.executable, "tools/two_gpu.py", "--failure", "--tiny", "--failure-timeout-s", "10",
           "--failure-dir", str(tmp_path / "failure")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["hung"] is False and res["within_bound"] is True, res
    assert res["returncodes"] == [DESYNC_EXIT_CODE, DESYNC_EXIT_CODE], res
    assert res["bound_s"] == failure_bound_s(10) and 0 < res["measured_s"] <= res["bound_s"], res
    assert res["chunk_state"] == "failed" and res["live_claims"] == [], res
