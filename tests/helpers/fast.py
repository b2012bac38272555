"""Tiny official WanModels and their inputs, for the fast path's tests (tests/unit/test_fast.py,
tests/procs/test_fast.py)."""
from __future__ import annotations

import torch

from wmsub.node.engines.shims import wan_module

TINY = dict(model_type="ti2v", patch_size=(1, 2, 2), text_len=16, in_dim=48, dim=128,
            ffn_dim=256, freq_dim=32, text_dim=32, out_dim=48, num_heads=2, num_layers=2)


def rel_err(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def tiny_model(seed=0, **over):
    model_mod = wan_module("modules.model")
    torch.manual_seed(seed)
    model = model_mod.WanModel(**{**TINY, **over}).eval().requires_grad_(False)
    torch.nn.init.normal_(model.head.head.weight, std=0.05)  # the official init zeroes it
    return model


def ti2v_inputs(seed, frames=3, h=4, w=6, batch=1, pad=0):
    """Latents, per-token timesteps (first latent frame at 0, as TI2V) and contexts."""
    g = torch.Generator().manual_seed(seed)
    seq = frames * (h // 2) * (w // 2)
    xs = [torch.randn(48, frames, h, w, generator=g) for _ in range(batch)]
    first = (h // 2) * (w // 2)
    t = torch.empty(batch, seq + pad)
    for i in range(batch):
        t[i] = float(torch.randint(1, 999, (1,), generator=g))
        t[i, :first] = 0.0
    ctx = [torch.randn(int(torch.randint(3, 12, (1,), generator=g)), 32, generator=g)
           for _ in range(batch)]
    return dict(x=xs, t=t, context=ctx, seq_len=seq + pad)


def run(model, inp):
    with torch.no_grad():
        return torch.stack(model(inp["x"], t=inp["t"], context=inp["context"],
                                 seq_len=inp["seq_len"]))
