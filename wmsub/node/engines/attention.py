"""The attention dispatcher: the official `flash_attention` contract on a kernel chosen by
name (`generate.attention`), patched into the official modules that call it.

wan.modules.model and wan.distributed.ulysses call `flash_attention`, which asserts CUDA
and flash_attn; `install_attention` replaces that name in each imported module with
`make_flash_attention(kernel)`. Kernel choice is the only numerics this changes
(docs/ENGINE.md).
"""
from __future__ import annotations

import importlib.util
import math
import sys

import torch
import torch.nn.functional as F


ATTENTION_CHOICES = ("auto", "flash3", "flash2", "cudnn", "flash", "efficient", "math")
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_current_kernel = "auto"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def resolve_attention(name: str, device: torch.device | str) -> str:
    """The concrete kernel `name` means on `device` (auto picks the fastest installed)."""
    if name not in ATTENTION_CHOICES:
        raise ValueError(f"generate.attention={name!r} is not one of {', '.join(ATTENTION_CHOICES)}")
    dev = torch.device(device).type
    if name != "auto":
        if dev != "cuda" and name != "math":
            return "math"  # CPU has one SDPA kernel family; the CUDA names do not apply
        if name == "flash3" and not _has("flash_attn_interface"):
            raise ValueError("generate.attention=flash3 but flash_attn_interface (FlashAttention 3) "
                             "is not installed; use auto, cudnn or flash")
        if name == "flash2" and not _has("flash_attn"):
            raise ValueError("generate.attention=flash2 but flash_attn is not installed; "
                             "use auto, cudnn or flash")
        return name
    if dev != "cuda":
        return "math"
    if _has("flash_attn_interface"):
        return "flash3"
    if _has("flash_attn"):
        return "flash2"
    return "cudnn"


def _sdpa_backends(kernel: str):
    from torch.nn.attention import SDPBackend
    table = {
        "cudnn": [SDPBackend.CUDNN_ATTENTION],
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "math": [SDPBackend.MATH],
    }
    return table[kernel]


def _key_mask(b, lq, lk, k_lens, causal, window_size, device):
    """Boolean [B,1,Lq,Lk] mask (True = attend) or None when every key is visible."""
    need_lens = k_lens is not None and any(int(n) != lk for n in k_lens.tolist())
    need_window = tuple(window_size) != (-1, -1)
    causal_offset = causal and lq != lk
    if not (need_lens or need_window or causal_offset):
        return None
    mask = torch.ones(b, 1, lq, lk, dtype=torch.bool, device=device)
    if need_lens:
        keys = torch.arange(lk, device=device)
        mask &= (keys[None, :] < k_lens.to(device)[:, None]).view(b, 1, 1, lk)
    if causal or need_window:
        # FlashAttention aligns causal/window masks to the bottom-right corner.
        rows = torch.arange(lq, device=device)[:, None] + (lk - lq)
        cols = torch.arange(lk, device=device)[None, :]
        left, right = window_size
        if causal:
            right = 0
        if right >= 0:
            mask &= (cols <= rows + right)
        if left >= 0:
            mask &= (cols >= rows - left)
    return mask


def _sdpa(q, k, v, mask, softmax_scale, causal, kernel):
    """FA layout in and out; runs torch SDPA with exactly the chosen backend."""
    from torch.nn.attention import sdpa_kernel
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    is_causal = causal and mask is None  # lq == lk here: top-left == bottom-right
    gqa = qt.size(1) != kt.size(1)
    with sdpa_kernel(_sdpa_backends(kernel)):
        out = F.scaled_dot_product_attention(
            qt, kt, vt, attn_mask=mask, is_causal=is_causal, scale=softmax_scale,
            enable_gqa=gqa)
    return out.transpose(1, 2)


def _flash_varlen(q, k, v, lq, lk, b, k_lens, softmax_scale, causal, window_size, kernel):
    q_lens = torch.full((b,), lq, dtype=torch.int32, device=q.device)
    if k_lens is None:
        k_lens = torch.full((b,), lk, dtype=torch.int32, device=q.device)
        kp, vp = k.flatten(0, 1), v.flatten(0, 1)
    else:
        kp = torch.cat([u[:n] for u, n in zip(k, k_lens)])
        vp = torch.cat([u[:n] for u, n in zip(v, k_lens)])
    cu_q = torch.cat([q_lens.new_zeros([1]), q_lens]).cumsum(0, dtype=torch.int32).to(q.device)
    cu_k = torch.cat([k_lens.new_zeros([1]), k_lens]).cumsum(0, dtype=torch.int32).to(q.device)
    if kernel == "flash3":
        import flash_attn_interface
        out = flash_attn_interface.flash_attn_varlen_func(
            q=q.flatten(0, 1), k=kp, v=vp, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
            seqused_q=None, seqused_k=None, max_seqlen_q=lq, max_seqlen_k=lk,
            softmax_scale=softmax_scale, causal=causal, deterministic=False)[0]
    else:
        import flash_attn
        out = flash_attn.flash_attn_varlen_func(
            q=q.flatten(0, 1), k=kp, v=vp, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
            max_seqlen_q=lq, max_seqlen_k=lk, dropout_p=0.0, softmax_scale=softmax_scale,
            causal=causal, window_size=window_size, deterministic=False)
    return out.unflatten(0, (b, lq))


def make_flash_attention(kernel: str):
    """A drop-in for wan.modules.attention.flash_attention running `kernel`.

    Same contract as the official function: q [B,Lq,Nq,C], k/v [B,Lk,Nk,C]; inputs that
    are not fp16/bf16 are cast to `dtype`; q/k cast to v's dtype; optional q_scale;
    keys beyond k_lens[b] are ignored; causal/window masks are bottom-right aligned as in
    FlashAttention; the output has q's original dtype.
    """

    def flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0., softmax_scale=None,
                        q_scale=None, causal=False, window_size=(-1, -1), deterministic=False,
                        dtype=torch.bfloat16, version=None):
        assert dtype in _HALF_DTYPES
        b, lq, lk, out_dtype = q.size(0), q.size(1), k.size(1), q.dtype
        if q_lens is not None and any(int(n) != lq for n in q_lens.tolist()):
            # The official packs q by q_lens then unflattens to (b, lq): only full
            # query lengths are well-defined there, so we refuse the rest.
            raise ValueError("flash_attention: q_lens shorter than Lq is not supported "
                             "(the official function cannot unflatten such a batch either)")
        if dropout_p:
            raise ValueError("flash_attention: dropout is not supported at inference")

        def half(x):
            return x if x.dtype in _HALF_DTYPES else x.to(dtype)

        q, k, v = half(q), half(k), half(v)
        q = q.to(v.dtype)
        k = k.to(v.dtype)
        if q_scale is not None:
            q = q * q_scale
        if kernel in ("flash3", "flash2"):
            x = _flash_varlen(q, k, v, lq, lk, b, k_lens, softmax_scale, causal,
                              window_size, kernel)
        else:
            mask = _key_mask(b, lq, lk, k_lens, causal, window_size, q.device)
            x = _sdpa(q, k, v, mask, softmax_scale, causal, kernel)
        return x.type(out_dtype)

    flash_attention.kernel = kernel
    return flash_attention


def reference_attention(q, k, v, k_lens=None, softmax_scale=None, causal=False,
                        window_size=(-1, -1), dtype=torch.bfloat16):
    """Plain-math reference (float64 softmax) of the official semantics, for tests."""
    half = (lambda x: x if x.dtype in _HALF_DTYPES else x.to(dtype))
    out_dtype = q.dtype
    q, k, v = half(q), half(k), half(v)
    q, k = q.to(v.dtype), k.to(v.dtype)
    b, lq, lk, d = q.size(0), q.size(1), k.size(1), q.size(-1)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    mask = _key_mask(b, lq, lk, k_lens, causal, window_size, q.device)
    qd, kd, vd = (x.double().transpose(1, 2) for x in (q, k, v))
    if kd.size(1) != qd.size(1):
        rep = qd.size(1) // kd.size(1)
        kd, vd = kd.repeat_interleave(rep, 1), vd.repeat_interleave(rep, 1)
    scores = qd @ kd.transpose(-1, -2) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vd
    return out.transpose(1, 2).to(v.dtype).type(out_dtype)


def install_attention(name: str, device: torch.device | str | None = None) -> str:
    """Patch the dispatcher into every official module that calls flash_attention.

    wan.modules.model and wan.distributed.ulysses import `flash_attention` by name and
    it asserts CUDA + flash_attn; we replace that name in each imported module.
    Returns the concrete kernel.
    """
    global _current_kernel
    if device is None and name == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kernel = resolve_attention(name, device) if device is not None else name
    _current_kernel = kernel
    fn = make_flash_attention(kernel)
    for mod_name in ("wan.modules.attention", "wan.modules.model", "wan.distributed.ulysses"):
        mod = sys.modules.get(mod_name)
        if mod is not None and hasattr(mod, "flash_attention"):
            mod.flash_attention = fn
    return kernel


def current_attention() -> str:
    return _current_kernel
