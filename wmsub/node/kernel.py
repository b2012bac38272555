"""Which attention kernel a chunk runs: `generate.attention` resolved on the compute node.

The login node cannot import torch and cannot see which kernels a node has installed, so
the kernel is resolved here, when a chunk starts, before anything is loaded; the output
store then pins each folder to the first kernel that writes into it and refuses another
(state/store.py, docs/ENGINE.md "The attention kernel and the fingerprint").

The seed ran the official `flash_attention`: FlashAttention 3 when installed, else
FlashAttention 2 (it asserts flash_attn). `official` names that choice; under
`generate.exact: true`, `auto` means `official` too, so an exact run never drifts to
another kernel (~2e-3 per forward) because a node happens to lack flash_attn. Any other
kernel under exact is the user's explicit choice (`generate.attention=cudnn`, ...).
"""
from __future__ import annotations

import socket

SEED_KERNELS = ("flash3", "flash2")  # what the official flash_attention runs


class KernelRefused(ValueError):
    """The kernel the config asks for cannot run on this node. The message says the fix."""


def follows_the_seed(gen) -> bool:
    """Whether `gen.attention` asks for the seed's kernel (official, or auto under exact)."""
    return gen.attention == "official" or (gen.attention == "auto" and gen.exact)


def node_kernel(gen, device) -> str:
    """The concrete kernel for `gen` (a GenerateConfig) on `device` of this node."""
    import torch
    from wmsub.node.engines.attention import resolve_attention

    on_cuda = torch.device(device).type == "cuda"
    if not follows_the_seed(gen):
        try:
            return resolve_attention(gen.attention, device)
        except ValueError as e:
            raise KernelRefused(f"{e} (on {socket.gethostname()})") from None
    kernel = resolve_attention("auto", device)
    if kernel in SEED_KERNELS or not on_cuda:  # CPU has one kernel family: math
        return kernel
    raise KernelRefused(
        f"generate.attention={gen.attention} with generate.exact=true runs the seed's kernel, the "
        "official flash_attention's (FlashAttention 3 when installed, else FlashAttention 2), but "
        f"{socket.gethostname()} has neither flash_attn_interface nor flash_attn — fix: install "
        "flash-attn in the job's environment (slurm.python), or name another kernel explicitly, "
        "e.g. generate.attention=cudnn (its numbers differ from the seed's by ~2e-3 per forward; "
        "the kernel is part of the fingerprint, so use an output.dir of its own)")
