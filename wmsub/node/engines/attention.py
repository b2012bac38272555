"""The attention dispatcher: the official `flash_attention` contract on a kernel chosen by
name (`generate.attention`), patched into the official modules that call it.

wan.modules.model and wan.distributed.ulysses call `flash_attention`, which asserts CUDA
and flash_attn; `install_attention` replaces that name in each imported module with
`make_flash_attention(kernel)`. Kernel choice is the only numerics this changes
(docs/ENGINE.md). `dense_attention` is the side-effect-free call the fast path's compiled
blocks make.
"""
from __future__ import annotations

import importlib.util
import math
import sys

import torch
import torch.nn.functional as F


ATTENTION_CHOICES = ("auto", "flash3", "flash2", "cudnn", "flash", "efficient", "math")
SDPA_KERNELS = ("cudnn", "flash", "efficient", "math")
# FlashAttention 3, in order of preference: the official build (hopper/ of the
# flash-attention repo), then PyPI `fa3-fwd` (forward only, bf16 and fp8, no fp16, no
# sliding window). Both take [B, L, H, D] and run on Hopper (sm_90) only.
FA3_INTERFACES = ("flash_attn_interface", "fa3_fwd_interface")
FA3_INSTALL_HINT = ("pip install fa3-fwd==0.0.3 (PyPI, FlashAttention-3 forward for Hopper, "
                    "into the generation environment), or build the official FlashAttention 3 "
                    "(flash_attn_interface)")
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_current_kernel = "auto"


class _FA3:
    """The FA3 functions `install_attention` bound (read, never written, by the kernels:
    a dispatch with side effects makes dynamo recompile every compiled block)."""
    interface: str | None = None
    dense = None   # flash_attn_func(q, k, v, softmax_scale=, causal=)
    varlen = None  # flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, ...)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def fa3_interface() -> str | None:
    """The FA3 module that is installed (official first), or None."""
    return next((m for m in FA3_INTERFACES if _has(m)), None)


def _capability(device) -> tuple[int, int] | None:
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(dev)


def choose_kernel(name: str, device_type: str, fa3: str | None, flash2: bool,
                  capability: tuple[int, int] | None) -> str:
    """The resolution rule, on plain facts (what is installed, the GPU's compute
    capability): `auto` prefers FA3 on Hopper, then flash_attn 2, then cuDNN SDPA."""
    if name not in ATTENTION_CHOICES:
        raise ValueError(f"generate.attention={name!r} is not one of {', '.join(ATTENTION_CHOICES)}")
    if device_type != "cuda":
        return "math"  # CPU has one SDPA kernel family; the CUDA names do not apply
    hopper = capability is not None and capability[0] == 9
    if name == "auto":
        if fa3 and hopper:
            return "flash3"
        return "flash2" if flash2 else "cudnn"
    if name == "flash3":
        if not fa3:
            raise ValueError("generate.attention=flash3 but no FlashAttention 3 is installed: "
                             f"{FA3_INSTALL_HINT}; or use auto, cudnn or flash")
        if not hopper:
            sm = f"sm_{capability[0]}{capability[1]}" if capability else "unknown"
            raise ValueError(f"generate.attention=flash3 needs a Hopper GPU (sm_90, H100/H200); "
                             f"this GPU is {sm}: use auto, flash2, cudnn or flash")
    if name == "flash2" and not flash2:
        raise ValueError("generate.attention=flash2 but flash_attn is not installed "
                         "(pip install flash-attn --no-build-isolation); use auto, cudnn or flash")
    return name


def resolve_attention(name: str, device: torch.device | str) -> str:
    """The concrete kernel `name` means on `device` (auto picks the fastest installed)."""
    dev = torch.device(device)
    return choose_kernel(name, dev.type, fa3_interface(), _has("flash_attn"),
                         _capability(dev) if name in ("auto", "flash3") else None)


def _bind_fa3() -> None:
    if _FA3.interface is not None:
        return
    interface = fa3_interface()
    if interface is None:
        raise ValueError(f"FlashAttention 3 is not installed: {FA3_INSTALL_HINT}")
    module = importlib.import_module(interface)
    _FA3.dense, _FA3.varlen = module.flash_attn_func, module.flash_attn_varlen_func
    _FA3.interface = interface


def fa3_bound() -> str | None:
    """Which FA3 module the flash3 kernel runs (None until flash3 is installed)."""
    return _FA3.interface


def _out(result):
    # FA3 builds differ: older ones return (out, softmax_lse), newer ones out alone
    return result[0] if isinstance(result, tuple) else result


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
    """Boolean [B,1,Lq,Lk] mask (True = attend) or None when every key is visible.

    Causal/window masks are bottom-right aligned to each item's own key length, as
    FlashAttention's varlen kernels align them.
    """
    need_lens = k_lens is not None and any(int(n) != lk for n in k_lens.tolist())
    need_window = tuple(window_size) != (-1, -1)
    causal_offset = causal and lq != lk
    if not (need_lens or need_window or causal_offset):
        return None
    lens = k_lens.to(device) if k_lens is not None else torch.full((b,), lk, device=device)
    keys = torch.arange(lk, device=device)
    mask = (keys[None, :] < lens[:, None]).view(b, 1, 1, lk).expand(b, 1, lq, lk).clone()
    if causal or need_window:
        rows = (torch.arange(lq, device=device)[None, :, None]
                + (lens[:, None, None] - lq))  # [B, Lq, 1]
        cols = keys[None, None, :]
        left, right = window_size
        if causal:
            right = 0
        if right >= 0:
            mask &= (cols <= rows + right)[:, None]
        if left >= 0:
            mask &= (cols >= rows - left)[:, None]
    return mask


def dense_attention(q, k, v, kernel: str, softmax_scale=None, causal=False):
    """Attention over every key of [B, L, N, D] half tensors with exactly `kernel`.

    No mask, no Python side effects: this is what compiled blocks call (fast.py).
    """
    if kernel in SDPA_KERNELS:
        from torch.nn.attention import sdpa_kernel
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        with sdpa_kernel(_sdpa_backends(kernel)):
            out = F.scaled_dot_product_attention(
                qt, kt, vt, is_causal=causal, scale=softmax_scale,
                enable_gqa=qt.size(1) != kt.size(1))
        return out.transpose(1, 2)
    if kernel == "flash3":
        return _out(_FA3.dense(q, k, v, softmax_scale=softmax_scale, causal=causal))
    import flash_attn
    return flash_attn.flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=causal)


def _sdpa_true_keys(q, k, v, k_lens, softmax_scale, causal, window_size, kernel):
    """SDPA over each item's first k_lens[b] keys: the padded keys are sliced away
    before the kernel, never masked (SDPA's flash backend has no masked kernel)."""
    b, lq, lk = q.size(0), q.size(1), k.size(1)
    lens = [lk] * b if k_lens is None else [min(int(n), lk) for n in k_lens.tolist()]
    if len(set(lens)) == 1:
        groups = [(slice(0, b), lens[0])]
    else:
        groups = [(slice(i, i + 1), n) for i, n in enumerate(lens)]
    outs = []
    for items, n in groups:
        qi, ki, vi = q[items], k[items, :n], v[items, :n]
        if tuple(window_size) == (-1, -1) and (not causal or n == lq):
            outs.append(dense_attention(qi, ki, vi, kernel, softmax_scale, causal))
            continue
        mask = _key_mask(qi.size(0), lq, n, None, causal, window_size, q.device)
        outs.append(_sdpa(qi, ki, vi, mask, softmax_scale, causal, kernel))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


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
    """The official flash_attention's own call: packed keys up to k_lens, one varlen kernel."""
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
        if tuple(window_size) != (-1, -1):
            raise ValueError("flash_attention: FlashAttention 3 takes no window_size here "
                             "(the official function ignores it too); use flash2 or cudnn")
        out = _out(_FA3.varlen(
            q=q.flatten(0, 1), k=kp, v=vp, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
            seqused_q=None, seqused_k=None, max_seqlen_q=lq, max_seqlen_k=lk,
            softmax_scale=softmax_scale, causal=causal, deterministic=False))
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
    keys beyond k_lens[b] are ignored; causal/window masks are bottom-right aligned to
    each item's key length as in FlashAttention's varlen kernels; the output has q's
    original dtype. flash3/flash2 run the official varlen call; the SDPA kernels slice the
    keys to k_lens (Ulysses pads the sequence to a multiple of the ranks: at an odd token
    count one padded key), so no boolean mask reaches a kernel unless a window or an
    offset causal mask is asked for.
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
            x = _sdpa_true_keys(q, k, v, k_lens, softmax_scale, causal, window_size, kernel)
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
    if kernel == "flash3":
        _bind_fa3()
    _current_kernel = kernel
    fn = make_flash_attention(kernel)
    for mod_name in ("wan.modules.attention", "wan.modules.model", "wan.distributed.ulysses"):
        mod = sys.modules.get(mod_name)
        if mod is not None and hasattr(mod, "flash_attention"):
            mod.flash_attention = fn
    return kernel


def current_attention() -> str:
    return _current_kernel
