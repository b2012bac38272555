"""Load the official Wan2.2-I2V-A14B checkpoint folder with the official classes.

layout_i2v.py owns the folder's layout and its header-only check; this module loads it.
The T5 encoder and each expert load through checkpoint.py's helpers (`load_text_encoder`,
`dit_skeleton` + `fill_dit` on the expert's subfolder: the same module as
`WanModel.from_pretrained(ckpt, subfolder=...)`); the VAE is the Wan2.1 one
(`wan.modules.vae2_1.Wan2_1_VAE`, z_dim 16), loaded here.
"""
from __future__ import annotations

from pathlib import Path

import torch

from wmsub.node.engines.checkpoint import _patched
from wmsub.node.engines.layout_i2v import VAE_CHECKPOINT
from wmsub.node.engines.shims import wan_module

__all__ = ["i2v_config", "load_vae21"]


def i2v_config():
    """The official `wan.configs.wan_i2v_A14B.i2v_A14B` EasyDict."""
    return wan_module("configs.wan_i2v_A14B").i2v_A14B


def load_vae21(ckpt_dir, dims: dict, device, dtype=torch.float32):
    """The official Wan2_1_VAE as WanI2V builds it (`Wan2_1_VAE(vae_pth=..., device=...)`,
    float32); `dtype` is its autocast dtype. A tiny checkpoint's wmsub_dims.json "vae"
    entry (dim, num_res_blocks, ...) is passed through `_video_vae`."""
    vae2_1 = wan_module("modules.vae2_1")
    with _patched(vae2_1, "_video_vae", **dict(dims.get("vae", {}))):
        return vae2_1.Wan2_1_VAE(vae_pth=str(Path(ckpt_dir) / VAE_CHECKPOINT), dtype=dtype,
                                 device=device)
