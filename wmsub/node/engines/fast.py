"""Speed-ups applied to a plain official `WanModel`, one small named function each.

The engine calls `apply_speedups(model, cfg.generate)` when `generate.exact` is false.
Every function here mutates the model in place by binding instance attributes, so
`restore_official(model)` gives back the untouched official computation (the class
methods of `wan.modules.model` are never edited).

What each lever changes, numerically (docs/SPEED.md has the measured errors):
- `apply_attention_kernel`: which SDPA kernel runs the attention (cuDNN, flash, ...);
  same math, a different summation order.
- `apply_fast_blocks`: the same fp32 modulation / fp32 residual stream as the official
  blocks, but (a) the time embedding + time projection run on the distinct timestep
  values only (TI2V has 2 per step, the official code runs the fp32 MLP on all 18k
  tokens) and are gathered per token, never materialising the [B, L, 6, C] fp32 tensor;
  (b) RoPE in fp32 real arithmetic from cached cos/sin tables instead of complex128.
  The result differs from the official one only by rounding.
- `apply_interleaved_rope`: the same RoPE written without a stack (faster compiled kernel).
- `apply_fused_qkv`: one GEMM for q, k, v (exact concatenation of the weights).
- `apply_compile`: `torch.compile` of each block (fuses the norms, modulation, RoPE and
  residual adds into a few kernels).
Measured and dropped (no gain on an H100): a separate cross-attention kernel,
contiguous [B, N, L, D] attention inputs, batching cond+uncond as one batch-2 forward.
"""
from __future__ import annotations

import logging
import types

import torch
import torch.nn.functional as F

from wmsub.node.engines.attention import dense_attention, make_flash_attention

SDPA_KERNELS = ("cudnn", "flash", "efficient", "math")
# Compiled block graphs are shared by all 30 blocks (parameters are graph inputs), but
# every distinct video size is one more graph: WorldModelBench has 6 sizes.
_RECOMPILE_LIMIT = 64


def _wan_model_module():
    from wmsub.node.engines.shims import wan_module
    return wan_module("modules.model")


# --------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------

def resolve_kernel(name: str, device: torch.device | str) -> str:
    """The concrete attention kernel for `generate.attention` on `device`."""
    from wmsub.node.engines.attention import resolve_attention
    return resolve_attention(name, device)


def _sdpa_backend(kernel: str):
    from torch.nn.attention import SDPBackend
    return {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[kernel]


def attention_bhld(q, k, v, kernel: str, mask=None):
    """Attention on [B, L, N, D] bf16 tensors with exactly one kernel; returns [B, L, N, D].

    The official blocks call flash_attention with [B, L, N, D]; SDPA wants [B, N, L, D]:
    the transposes are views, the kernels take the strides as they are (contiguous
    [B, N, L, D] copies were measured: no gain, docs/SPEED.md).
    """
    if mask is None:  # always on a single device: no padded keys
        return dense_attention(q, k, v, kernel)
    if kernel in SDPA_KERNELS:
        from torch.nn.attention import sdpa_kernel
        q, k, v = (u.transpose(1, 2) for u in (q, k, v))
        with sdpa_kernel([_sdpa_backend(kernel)]):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2)
    return make_flash_attention(kernel)(q, k, v, k_lens=mask[:, 0, 0, :].sum(-1))


def apply_attention_kernel(model, name: str):
    """Run every attention of `model` with kernel `name` (generate.attention).

    Fast blocks read the kernel from the model; the official blocks call the
    module-level `flash_attention`, which the shims dispatcher replaces process-wide.
    """
    device = next(model.parameters()).device
    kernel = resolve_kernel(name, device)
    model._wmsub_attention = kernel
    from wmsub.node.engines.attention import install_attention
    install_attention(kernel)
    return model


# --------------------------------------------------------------------------------------
# fast blocks
# --------------------------------------------------------------------------------------

def rope_tables(freqs: torch.Tensor, grid_sizes: list, seq_len: int, device) -> tuple:
    """cos/sin [B, L, 1, D/2] fp32 for the official 3-axis RoPE; padding rows are identity."""
    c = freqs.size(1)
    parts = freqs.split([c - 2 * (c // 3), c // 3, c // 3], dim=1)
    cos = torch.ones(len(grid_sizes), seq_len, 1, c, dtype=torch.float32)
    sin = torch.zeros(len(grid_sizes), seq_len, 1, c, dtype=torch.float32)
    for i, (f, h, w) in enumerate(grid_sizes):
        table = torch.cat([
            parts[0][:f].view(f, 1, 1, -1).expand(f, h, w, -1),
            parts[1][:h].view(1, h, 1, -1).expand(f, h, w, -1),
            parts[2][:w].view(1, 1, w, -1).expand(f, h, w, -1),
        ], dim=-1).reshape(f * h * w, 1, -1).cpu()
        cos[i, :f * h * w] = table.real.float()
        sin[i, :f * h * w] = table.imag.float()
    return cos.to(device), sin.to(device)


def rope_apply_real(x, cos, sin):
    """The official complex128 rotation (pairs (2i, 2i+1) of the head dim) in fp32.

    With interleaved tables (cos, sin of the full head dim, see `interleave_tables`) it
    is written without a stack: x * cos2 + swap_pairs(x) * sin2.
    """
    if cos.size(-1) == x.size(-1):
        xf = x.float()
        swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return xf * cos + swapped * sin
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def interleave_tables(cos, sin):
    """[.., D/2] cos/sin -> [.., D] tables for the stack-free form of rope_apply_real."""
    return (cos.repeat_interleave(2, dim=-1),
            torch.stack([-sin, sin], dim=-1).flatten(-2))


def _fast_self_attention(attn, x, rope_cos, rope_sin, key_mask, kernel):
    b, s, n, d = *x.shape[:2], attn.num_heads, attn.head_dim
    if "wmsub_qkv_weight" in attn._buffers:  # one GEMM for q, k, v (apply_fused_qkv)
        q, k, v = F.linear(x, attn.wmsub_qkv_weight, attn.wmsub_qkv_bias).chunk(3, dim=-1)
        q, k = attn.norm_q(q), attn.norm_k(k)
    else:
        q, k, v = attn.norm_q(attn.q(x)), attn.norm_k(attn.k(x)), attn.v(x)
    q, k, v = q.view(b, s, n, d), k.view(b, s, n, d), v.reshape(b, s, n, d)
    # flash_attention casts fp32 to bf16 only when the input is not already half
    half = v.dtype if v.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    q = rope_apply_real(q, rope_cos, rope_sin).to(half)
    k = rope_apply_real(k, rope_cos, rope_sin).to(half)
    out = attention_bhld(q, k, v.to(half), kernel, key_mask)
    # the official flash_attention returns q's dtype, fp32 after RoPE
    return attn.o(out.float().flatten(2))


def _fast_cross_attention(attn, x, context, kernel):
    b, n, d = x.size(0), attn.num_heads, attn.head_dim
    q = attn.norm_q(attn.q(x)).view(b, -1, n, d)
    k = attn.norm_k(attn.k(context)).view(b, -1, n, d)
    v = attn.v(context).view(b, -1, n, d)
    half = v.dtype if v.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    out = attention_bhld(q.to(half), k.to(half), v.to(half), kernel)
    return attn.o(out.to(q.dtype).flatten(2))


def fast_block_forward(self, x, mod_table, mod_index, rope_cos, rope_sin, key_mask,
                       context, kernel):
    """One WanAttentionBlock, official dtype flow, per-token modulation gathered.

    mod_table [U, 6, C] fp32: time projection of the U distinct timesteps;
    mod_index [B, L] long: which row each token uses.
    """
    with torch.amp.autocast("cuda", dtype=torch.float32):
        mod = (self.modulation.float()[0] + mod_table).unbind(1)  # 6 x [U, C]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        m[mod_index] for m in mod)  # [B, L, C] each; fused into consumers when compiled

    y = _fast_self_attention(
        self.self_attn, self.norm1(x).float() * (1 + scale_msa) + shift_msa,
        rope_cos, rope_sin, key_mask, kernel)
    x = x + y.float() * gate_msa
    x = x + _fast_cross_attention(self.cross_attn, self.norm3(x), context, kernel)
    y = self.ffn(self.norm2(x).float() * (1 + scale_mlp) + shift_mlp)
    return x + y.float() * gate_mlp


def fast_head_forward(self, x, emb_table, mod_index):
    """The official Head with the time embedding gathered from its distinct rows."""
    with torch.amp.autocast("cuda", dtype=torch.float32):
        shift, scale = (self.modulation.float()[0] + emb_table[:, None, :]).unbind(1)
        return self.head(self.norm(x) * (1 + scale[mod_index]) + shift[mod_index])


def fast_model_forward(self, x, t, context, seq_len, y=None):
    """Drop-in for WanModel.forward (same arguments, same outputs)."""
    wan_model = _wan_model_module()
    device = self.patch_embedding.weight.device
    if self.freqs.device != device:
        self.freqs = self.freqs.to(device)
    if y is not None:
        x = [torch.cat([u, v], dim=0) for u, v in zip(x, y)]

    x = [self.patch_embedding(u.unsqueeze(0)) for u in x]
    grid_sizes = torch.stack([torch.tensor(u.shape[2:], dtype=torch.long) for u in x])
    x = [u.flatten(2).transpose(1, 2) for u in x]
    seq_lens = torch.tensor([u.size(1) for u in x], dtype=torch.long)
    assert seq_lens.max() <= seq_len
    x = torch.cat([torch.cat([u, u.new_zeros(1, seq_len - u.size(1), u.size(2))], dim=1)
                   for u in x])

    if t.dim() == 1:
        t = t.expand(t.size(0), seq_len)
    # TI2V timesteps take 2 values per step (0 on the first latent frame): the fp32
    # time MLP runs on those rows instead of on every token.
    values, mod_index = torch.unique(t, return_inverse=True)
    with torch.amp.autocast("cuda", dtype=torch.float32):
        emb_table = self.time_embedding(
            wan_model.sinusoidal_embedding_1d(self.freq_dim, values).float())
        mod_table = self.time_projection(emb_table).unflatten(1, (6, self.dim))

    context = self.text_embedding(torch.stack([
        torch.cat([u, u.new_zeros(self.text_len - u.size(0), u.size(1))]) for u in context]))

    grids = [tuple(g) for g in grid_sizes.tolist()]
    rope_cos, rope_sin = _cached_rope(self, grids, seq_len, device)
    key_mask = None
    if bool((seq_lens < seq_len).any()):
        keys = torch.arange(seq_len)
        key_mask = (keys[None, :] < seq_lens[:, None]).view(-1, 1, 1, seq_len).to(device)
    kernel = getattr(self, "_wmsub_attention", "math" if device.type != "cuda" else "cudnn")
    for block in self.blocks:
        x = block(x, mod_table, mod_index, rope_cos, rope_sin, key_mask, context, kernel)

    x = self.head(x, emb_table, mod_index)
    return [u.float() for u in self.unpatchify(x, grid_sizes)]


def _cached_rope(model, grids, seq_len, device):
    key = (tuple(grids), seq_len, str(device))
    cache = model.__dict__.setdefault("_wmsub_rope_cache", {})
    if key not in cache:
        if len(cache) > 16:
            cache.clear()
        cos, sin = rope_tables(model.freqs, grids, seq_len, device)
        if getattr(model, "_wmsub_rope_interleaved", False):
            cos, sin = interleave_tables(cos, sin)
        cache[key] = (cos, sin)
    return cache[key]


def apply_fast_blocks(model):
    """Bind the fast forward to the model, its blocks and its head (undo: restore_official)."""
    model.forward = types.MethodType(fast_model_forward, model)
    model.head.forward = types.MethodType(fast_head_forward, model.head)
    for block in model.blocks:
        block.forward = types.MethodType(fast_block_forward, block)
    model._wmsub_fast_blocks = True
    return model


def apply_fused_qkv(model):
    """One [3C, C] GEMM for the self-attention q, k, v instead of three [C, C] ones.

    Concatenating the weights is exact (each output column is the same dot product).
    Costs one more copy of those weights; the originals stay for restore_official.
    """
    for block in model.blocks:
        attn = block.self_attn
        weight = torch.cat([attn.q.weight, attn.k.weight, attn.v.weight])
        bias = torch.cat([attn.q.bias, attn.k.bias, attn.v.bias])
        # buffers, not plain attributes: compiled blocks then share one graph
        attn.register_buffer("wmsub_qkv_weight", weight, persistent=False)
        attn.register_buffer("wmsub_qkv_bias", bias, persistent=False)
    return model


def apply_interleaved_rope(model):
    """RoPE from [L, D] interleaved cos/sin tables (no stack in the compiled kernel)."""
    model._wmsub_rope_interleaved = True
    model.__dict__.pop("_wmsub_rope_cache", None)
    return model


# --------------------------------------------------------------------------------------
# compile
# --------------------------------------------------------------------------------------

def apply_compile(model, mode: str | None = None, tune_kernels: bool = False):
    """torch.compile each DiT block (shape-static: one graph per video size).

    tune_kernels: inductor's coordinate-descent tuning of the generated (norm, RoPE,
    modulation) kernels; a longer compile, the GEMMs stay cuBLAS.
    """
    import torch._dynamo
    if tune_kernels:
        import torch._inductor.config as inductor_config
        inductor_config.coordinate_descent_tuning = True
    cfg = torch._dynamo.config
    for attr in ("cache_size_limit", "recompile_limit"):
        if hasattr(cfg, attr):
            setattr(cfg, attr, max(getattr(cfg, attr), _RECOMPILE_LIMIT))
    if hasattr(cfg, "accumulated_cache_size_limit"):
        cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 4 * _RECOMPILE_LIMIT)
    for block in model.blocks:
        block.compile(dynamic=False, mode=mode)
    model._wmsub_compiled = True
    return model


# --------------------------------------------------------------------------------------
# the whole set
# --------------------------------------------------------------------------------------

def _plain_wan_model(model) -> bool:
    # The fast forward is single-device: a model whose forward was already replaced
    # (Ulysses sequence parallel) or that is wrapped (FSDP) keeps the official blocks.
    return type(model).__name__ == "WanModel" and "forward" not in model.__dict__


def apply_speedups(model, gen_cfg, fuse_qkv: bool = True):
    """Apply the speed-ups `gen_cfg` (a GenerateConfig) switches on; exact: none.

    fast_blocks: fast blocks + interleaved RoPE + fused q/k/v (each measured to pay,
    docs/SPEED.md); compile: torch.compile of each block. Under sequence parallelism
    only the attention kernel applies (logged). fuse_qkv=False leaves q/k/v as three
    GEMMs: the fused copy of their weights is for engines with memory to spare.
    """
    if gen_cfg.exact:
        return model
    apply_attention_kernel(model, gen_cfg.attention)
    if (gen_cfg.fast_blocks or gen_cfg.compile) and not _plain_wan_model(model):
        logging.getLogger(__name__).warning(
            "generate.fast_blocks/compile skipped: the DiT is sharded or its forward is "
            "replaced (parallel=sp); use parallel=dp or cfg for the fast blocks")
        return model
    if gen_cfg.fast_blocks:
        apply_fast_blocks(model)
        apply_interleaved_rope(model)
        if fuse_qkv:
            apply_fused_qkv(model)
    if gen_cfg.compile:
        apply_compile(model)
    return model


def speedups_applied(model) -> dict:
    """What this module changed on `model`, for the engine's fingerprint."""
    return {"attention": getattr(model, "_wmsub_attention", None),
            "fast_blocks": bool(getattr(model, "_wmsub_fast_blocks", False)),
            "interleaved_rope": bool(getattr(model, "_wmsub_rope_interleaved", False)),
            "fused_qkv": "wmsub_qkv_weight" in model.blocks[0].self_attn._buffers,
            "compile": bool(getattr(model, "_wmsub_compiled", False))}


def restore_official(model):
    """Remove every speed-up: the official class methods run again."""
    for module in [model, model.head, *model.blocks]:
        module.__dict__.pop("forward", None)
    for block in model.blocks:
        for name in ("wmsub_qkv_weight", "wmsub_qkv_bias"):
            block.self_attn._buffers.pop(name, None)
    for block in model.blocks:
        block._compiled_call_impl = None
    for attr in ("_wmsub_fast_blocks", "_wmsub_compiled", "_wmsub_attention",
                 "_wmsub_rope_cache", "_wmsub_rope_interleaved"):
        model.__dict__.pop(attr, None)
    return model


def forward_flops(seq_len: int, dim: int, ffn_dim: int, num_layers: int,
                  text_len: int = 512, out_features: int = 192) -> float:
    """Matrix FLOPs of one WanModel forward (one batch item), for TFLOP/s figures."""
    per_layer = (
        2 * seq_len * dim * dim * 4            # self-attention q, k, v, o
        + 4 * seq_len * seq_len * dim          # QK^T and PV
        + 2 * seq_len * dim * dim * 2          # cross-attention q, o
        + 2 * text_len * dim * dim * 2         # cross-attention k, v
        + 4 * seq_len * text_len * dim         # cross-attention scores and values
        + 2 * seq_len * dim * ffn_dim * 2)     # ffn
    return float(num_layers * per_layer + 2 * seq_len * dim * out_features)


__all__ = ["apply_attention_kernel", "apply_fast_blocks", "apply_compile", "apply_speedups",
           "restore_official", "speedups_applied", "attention_bhld", "rope_tables",
           "rope_apply_real", "forward_flops", "resolve_kernel"]
