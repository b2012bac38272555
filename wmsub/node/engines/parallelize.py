"""Parallelism applied to a plain official model by small named steps (as torchtitan's
parallelize.py does), so the sampler never wires FSDP or Ulysses inline.

`sp` is the seed's setup, `WanTI2V(t5_fsdp=True, dit_fsdp=True, use_sp=True)`: T5 and the
DiT sharded with the official `wan.distributed.fsdp.shard_model`, and the DiT's forward
and self-attention replaced by the official Ulysses sequence-parallel versions. `cfg`,
`dp` and `none` keep a whole model on each rank (parallel.py makes their groups).
"""
from __future__ import annotations

import types
from functools import partial

import torch
import torch.distributed as dist

from wmsub.node.engines.parallel import DistContext
from wmsub.node.engines.shims import sp_attention_fp32_output_on_cpu, wan_module


def _fsdp_device_id(device: torch.device):
    return device.index if device.type == "cuda" else torch.device("cpu")


def text_encoder_shard_fn(ctx: DistContext):
    """The official FSDP wrap for T5 under `sp` (t5_fsdp=True); None otherwise."""
    if ctx.mode != "sp":
        return None
    return partial(wan_module("distributed.fsdp").shard_model, device_id=_fsdp_device_id(ctx.device))


def apply_ulysses(model, device: torch.device):
    """Swap in the official sequence-parallel DiT forward and self-attention (use_sp)."""
    seq = wan_module("distributed.sequence_parallel")
    if device.type != "cuda":
        sp_attention_fp32_output_on_cpu()
    for block in model.blocks:
        block.self_attn.forward = types.MethodType(seq.sp_attn_forward, block.self_attn)
    model.forward = types.MethodType(seq.sp_dit_forward, model)
    return model


def apply_fsdp(model, device: torch.device, param_dtype: torch.dtype):
    """The official DiT FSDP wrap (dit_fsdp=True)."""
    # The seed's FSDP keeps bf16 params (MixedPrecision) under CUDA autocast. CPU has no
    # CUDA autocast, so bf16 params would meet fp32 activations; there we keep fp32
    # params, which is what `none` computes on CPU.
    on_cuda = device.type == "cuda"
    # FSDP1 refuses sync_module_states with CPU params; every rank loaded the same
    # checkpoint, so the broadcast it skips would copy equal values.
    return wan_module("distributed.fsdp").shard_model(
        model, device_id=_fsdp_device_id(device),
        param_dtype=param_dtype if on_cuda else torch.float32, sync_module_states=on_cuda)


def parallelize_dit(model, ctx: DistContext, param_dtype: torch.dtype):
    """The DiT as this rank runs it: Ulysses + FSDP under `sp`, else whole on the device
    (WanTI2V: init_on_cpu=False under FSDP/SP, else moved per call)."""
    if ctx.mode == "sp":
        apply_ulysses(model, ctx.device)
    if dist.is_initialized() and ctx.group is not None:
        dist.barrier(group=ctx.group)
    if ctx.mode == "sp":
        return apply_fsdp(model, ctx.device, param_dtype)
    return model.to(ctx.device)
