"""generate.compile_cache_dir across processes: a second process (a later chunk or job)
reuses what the first compiled (the folder's own rules: tests/unit/test_compile_cache.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from wmsub.node.compile_cache import INDUCTOR_ENV

REPO = Path(__file__).resolve().parents[2]

# A chunk's process, reduced to what matters here: the config, the cache set from it
# before torch is imported, then a compiled function; prints inductor's cache counters.
CHILD = """
import json, sys
from wmsub.config import load_config
from wmsub.node.compile_cache import use_compile_cache
use_compile_cache(load_config(None, sys.argv[1:]))
import torch
from torch._dynamo.utils import counters

@torch.compile
def step(x):
    return torch.sin(x) * 2 + x.cos().sum()

step(torch.randn(64))
print(json.dumps(dict(counters["inductor"])))
"""


def test_a_second_process_reuses_the_first_ones_compiled_graph(tmp_path):
    args = [f"generate.compile_cache_dir={tmp_path / 'cc'}"]
    env = {k: v for k, v in os.environ.items() if k != INDUCTOR_ENV}
    env["PYTHONPATH"] = str(REPO)

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first.get("fxgraph_cache_miss", 0) >= 1 and not first.get("fxgraph_cache_hit")
    assert second.get("fxgraph_cache_hit", 0) >= 1 and not second.get("fxgraph_cache_miss")
    assert list((tmp_path / "cc" / "inductor").rglob("*")), "nothing was cached in the folder"
