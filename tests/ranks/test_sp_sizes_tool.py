"""tools/sp_sizes.py (every size under sp vs none, per kernel) on 2 gloo ranks at tiny sizes
of odd token counts, so the GPU check cannot rot."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_sp_sizes_tool_runs_on_two_cpu_ranks(tmp_path):
    out = tmp_path / "sizes.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "tools/sp_sizes.py", "--tiny", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    rows = res["kernels"]["math"]["sizes"]
    assert set(rows) == {"160x96", "96x160"} and res["all_ok"], res
    for row in rows.values():
        assert row["tokens"] == 45 and row["padded_keys"] == 1  # odd: one padded key
        assert row["sp_vs_none_rel_err"] < res["sanity_rel_err"] and row["sp_s"] > 0
