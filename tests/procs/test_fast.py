"""The fast path compiled with torch.compile (inductor builds its C++ kernels in other
processes) computes the official function up to bf16 rounding, on the CPU. The fast path's
other tests: tests/unit/test_fast.py."""
from __future__ import annotations

import pytest

from tests.helpers.fast import rel_err, run, ti2v_inputs, tiny_model
from wmsub.config import load_config
from wmsub.node.engines import fast

pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]


def test_compiled_fast_path_matches_official():
    # one compile (about 20-30 s on 2 cores): the graph the GPU runs, on the CPU
    cfg = load_config(None, ["generate.exact=false", "generate.fast_blocks=true",
                             "generate.compile=true", "generate.attention=math"])
    model = tiny_model(seed=17, num_layers=1)
    inp = ti2v_inputs(18)
    official = run(model, inp)
    fast.apply_speedups(model, cfg.generate)
    ours = run(model, inp)
    assert all(fast.speedups_applied(model).values())
    # inductor reorders the bf16 attention arithmetic: bf16 rounding, not fp32
    assert rel_err(ours, official) < 2e-3
