"""CPU correctness of the fast path (wmsub/engines/fast.py) on tiny official WanModels.

The fast path must compute the official function up to rounding, and removing it (or
asking for `exact`) must give back the official computation bit for bit. The fast path
compiled with torch.compile: tests/procs/test_fast.py.
"""
from __future__ import annotations

import pytest
import torch

from tests.helpers.fast import rel_err, run, ti2v_inputs, tiny_model
from wmsub.config import load_config
from wmsub.node.engines import fast
from wmsub.node.engines.shims import wan_module

pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]


def test_fast_blocks_match_official_forward():
    model = tiny_model()
    for seed in (1, 2):  # fresh inputs each time: the same function, not one lucky case
        inp = ti2v_inputs(seed)
        official = run(model, inp)
        fast.apply_fast_blocks(model)
        ours = run(model, inp)
        fast.restore_official(model)
        assert official.abs().max() > 0.1, "a trivial model output would prove nothing"
        # fp32 on CPU: only RoPE float64->fp32 and GEMM row counts differ
        assert rel_err(ours, official) < 1e-5


def test_fast_blocks_batch_with_distinct_timesteps_and_padding():
    # two samples, 3-4 distinct timestep values, padded tokens masked from attention
    model = tiny_model(seed=3)
    inp = ti2v_inputs(4, batch=2, pad=5)
    official = run(model, inp)
    fast.apply_fast_blocks(model)
    ours = run(model, inp)
    assert rel_err(ours, official) < 1e-5


def test_restore_official_gives_back_the_bitwise_computation():
    model = tiny_model(seed=5)
    inp = ti2v_inputs(6)
    before = run(model, inp)
    fast.apply_attention_kernel(model, "math")
    fast.apply_fast_blocks(model)
    fast.apply_fused_qkv(model)
    fast.apply_interleaved_rope(model)
    changed = run(model, inp)
    assert not torch.equal(changed, before)  # the fast path really ran
    fast.restore_official(model)
    assert "forward" not in model.__dict__ and "forward" not in model.blocks[0].__dict__
    assert not any(n.startswith("wmsub") for n, _ in model.named_buffers())
    assert torch.equal(run(model, inp), before)


def test_exact_config_applies_nothing():
    cfg = load_config(None, ["generate.exact=true", "generate.fast_blocks=true",
                             "generate.compile=true"])
    model = tiny_model(seed=7)
    inp = ti2v_inputs(8)
    before = run(model, inp)
    assert fast.apply_speedups(model, cfg.generate) is model
    assert fast.speedups_applied(model) == {"attention": None, "fast_blocks": False,
                                            "interleaved_rope": False, "fused_qkv": False,
                                            "compile": False}
    assert torch.equal(run(model, inp), before)


def test_apply_speedups_follows_the_config():
    cfg = load_config(None, ["generate.exact=false", "generate.fast_blocks=true",
                             "generate.compile=false", "generate.attention=math"])
    model = tiny_model(seed=9)
    inp = ti2v_inputs(10)
    official = run(model, inp)
    fast.apply_speedups(model, cfg.generate)
    assert fast.speedups_applied(model) == {"attention": "math", "fast_blocks": True,
                                            "interleaved_rope": True, "fused_qkv": True,
                                            "compile": False}
    assert rel_err(run(model, inp), official) < 1e-5


def test_fused_qkv_is_the_same_projection():
    model = tiny_model(seed=11)
    inp = ti2v_inputs(12)
    fast.apply_fast_blocks(model)
    plain = run(model, inp)
    fast.apply_fused_qkv(model)
    fused = run(model, inp)
    assert rel_err(fused, plain) < 1e-6


def test_rope_real_matches_official_complex128():
    model_mod = wan_module("modules.model")
    model = tiny_model(seed=13)
    grid = [(3, 2, 4)]
    seq = 3 * 2 * 4
    g = torch.Generator().manual_seed(14)
    x = torch.randn(1, seq + 2, 2, 64, generator=g)  # 2 padding rows pass through
    official = model_mod.rope_apply(x, torch.tensor(grid), model.freqs)
    cos, sin = fast.rope_tables(model.freqs, grid, seq + 2, "cpu")
    for tables in ((cos, sin), fast.interleave_tables(cos, sin)):
        ours = fast.rope_apply_real(x, *tables)
        assert torch.equal(ours[:, seq:], x[:, seq:])
        assert rel_err(ours, official) < 1e-6


def test_all_block_options_together_match_official():
    model = tiny_model(seed=19)
    inp = ti2v_inputs(20, batch=2)
    official = run(model, inp)
    fast.apply_attention_kernel(model, "math")
    fast.apply_fast_blocks(model)
    fast.apply_fused_qkv(model)
    fast.apply_interleaved_rope(model)
    assert rel_err(run(model, inp), official) < 1e-5


def test_unknown_attention_kernel_is_a_clear_error():
    model = tiny_model(seed=15)
    with pytest.raises(ValueError, match="generate.attention='flashy'"):
        fast.apply_attention_kernel(model, "flashy")


def test_sequence_parallel_model_keeps_official_blocks():
    import types
    cfg = load_config(None, ["generate.exact=false", "generate.fast_blocks=true",
                             "generate.compile=true", "generate.attention=math"])
    model = tiny_model(seed=21)
    sp_forward = types.MethodType(type(model).forward, model)  # stands in for sp_dit_forward
    model.forward = sp_forward
    fast.apply_speedups(model, cfg.generate)
    assert model.forward is sp_forward
    applied = fast.speedups_applied(model)
    assert applied["attention"] == "math" and not applied["fast_blocks"] and not applied["compile"]


def test_forward_flops_counts_the_official_step():
    # GUIDE section 3: 704x1280x81 is 18,480 tokens and one step (2 forwards) is 581 TFLOP
    flops = fast.forward_flops(18480, 3072, 14336, 30)
    assert abs(2 * flops / 1e12 - 581) < 1.0
