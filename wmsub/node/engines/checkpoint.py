"""Load the official Wan2.2-TI2V-5B checkpoint folder with the official classes.

The folder's layout (file names, dimensions, the header-only check) belongs to layout.py,
which the login node reads too; this module loads what layout.py has checked. An absent
wmsub_dims.json means the official sizes, so real and tiny checkpoints load through the
same code below.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

from wmsub.node.engines.layout import (DIMS_FILE, KEY, T5_CHECKPOINT, T5_TOKENIZER,
                                       VAE_CHECKPOINT, CheckpointError, check_checkpoint_dir,
                                       dit_weight_files, read_dims)
from wmsub.problems import Problem
from wmsub.node.engines.shims import wan_module

log = logging.getLogger("wmsub.node.engines.checkpoint")

__all__ = ["DIMS_FILE", "CheckpointError", "check_checkpoint_dir", "read_dims", "ti2v_config",
           "load_text_encoder", "load_vae", "load_dit", "dit_skeleton", "fill_dit",
           "dit_weight_files"]


def ti2v_config():
    """The official `wan.configs.wan_ti2v_5B.ti2v_5B` EasyDict."""
    return wan_module("configs.wan_ti2v_5B").ti2v_5B


@contextlib.contextmanager
def _patched(module, name: str, **kwargs):
    # The official constructors hard-code the model sizes (umt5_xxl's cfg, _video_vae's
    # dec_dim); for a non-official size we pass the recorded sizes through them.
    if not kwargs:
        yield
        return
    original = getattr(module, name)
    setattr(module, name, functools.partial(original, **kwargs))
    try:
        yield
    finally:
        setattr(module, name, original)


def load_text_encoder(ckpt_dir, wan_cfg, dims: dict, shard_fn=None):
    """The official T5EncoderModel, with the weights on the CPU (the sampler moves it).

    `T5EncoderModel.__init__` builds umt5-xxl (5.7B parameters) with a random init on the
    CPU before loading the weights over it: ~60 s of every chunk start. We do the same
    steps with the module built on the meta device and the weights assigned, then cast to
    the official dtype exactly as `.to(dtype)` in the official constructor does.
    """
    t5 = wan_module("modules.t5")
    ckpt = Path(ckpt_dir)
    enc = t5.T5EncoderModel.__new__(t5.T5EncoderModel)
    enc.text_len, enc.dtype, enc.device = wan_cfg.text_len, wan_cfg.t5_dtype, torch.device("cpu")
    enc.checkpoint_path = str(ckpt / T5_CHECKPOINT)
    enc.tokenizer_path = str(ckpt / T5_TOKENIZER)
    with _patched(t5, "umt5_xxl", **dims.get("t5", {})):
        model = t5.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=enc.dtype,
                            device="meta").eval().requires_grad_(False)
    log.info("loading %s", enc.checkpoint_path)
    model.load_state_dict(_torch_load_mapped(enc.checkpoint_path), assign=True)
    model = model.to(dtype=enc.dtype).requires_grad_(False)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{enc.checkpoint_path}: no weights for {left[:5]} (of {len(left)}); "
                           f"is this the official umt5-xxl encoder file?")
    enc.model = shard_fn(model, sync_module_states=False) if shard_fn is not None else model
    enc.tokenizer = t5.HuggingfaceTokenizer(name=enc.tokenizer_path, seq_len=enc.text_len,
                                            clean="whitespace")
    return enc


def load_vae(ckpt_dir, wan_cfg, dims: dict, device, dtype=torch.float32):
    """The official Wan2_2_VAE. `dtype` is its autocast dtype (float32 is official)."""
    vae2_2 = wan_module("modules.vae2_2")
    vae_dims = dict(dims.get("vae", {}))
    c_dim = vae_dims.pop("c_dim", 160)
    dim_mult = vae_dims.pop("dim_mult", [1, 2, 4, 4])
    with _patched(vae2_2, "_video_vae", **vae_dims):
        return vae2_2.Wan2_2_VAE(z_dim=48, c_dim=c_dim, dim_mult=dim_mult,
                                 vae_pth=str(Path(ckpt_dir) / VAE_CHECKPOINT),
                                 dtype=dtype, device=device)


def _torch_load_mapped(path: str) -> dict:
    """torch.load onto the CPU, memory-mapped: the 11 GB T5 file is not copied once more
    before its tensors move to the GPU (the same bytes either way)."""
    try:
        return torch.load(path, map_location="cpu", mmap=True)
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be mapped
        return torch.load(path, map_location="cpu")


@contextlib.contextmanager
def _parameters_on_meta():
    # Parameters are made on the meta device (no allocation, no random init) while plain
    # tensors built in __init__ (WanModel.freqs) stay real, as with diffusers'
    # low_cpu_mem_usage loading. This patches nn.Module for the whole process: no other
    # thread may build modules meanwhile (the engine builds the skeleton first).
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def dit_skeleton(ckpt_dir):
    """The official WanModel built from the folder's config.json, parameters on meta."""
    model_mod = wan_module("modules.model")
    with _parameters_on_meta():
        return model_mod.WanModel.from_config(model_mod.WanModel.load_config(str(ckpt_dir)))


def fill_dit(model, ckpt_dir, device: torch.device | str = "cpu"):
    """Read the DiT's safetensors straight onto `device` into a `dit_skeleton`.

    Each stored tensor is cast to the dtype of the parameter it fills (float32 unless the
    config says otherwise), as load_state_dict's copy does.
    """
    from safetensors.torch import load_file
    ckpt = Path(ckpt_dir)
    expected = model.state_dict()
    state = {}
    for path in dit_weight_files(ckpt):
        state.update(load_file(str(path), device=str(device)))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError([Problem(
            KEY, f"the DiT weights do not match {ckpt / 'config.json'}: missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})",
            "download the checkpoint folder again")], f"checkpoint folder {ckpt}")
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()


def load_dit(ckpt_dir, device: torch.device | str = "cpu"):
    """The official WanModel from the diffusers-style folder, its weights read straight
    onto `device`.

    The same module as `WanModel.from_pretrained(ckpt_dir).to(device)` (the tests check it
    bitwise). What is skipped: the random init of 5B parameters on the CPU, a float32
    copy of them there, and the host-to-device copy of that copy.
    """
    return fill_dit(dit_skeleton(ckpt_dir), ckpt_dir, device)
