"""The official Wan2.2-I2V-A14B checkpoint folder: file names, the experts' dimensions, and a
check of a folder that reads only headers (no torch, no weights loaded).

    high_noise_model/                            the expert for t >= boundary * 1000 (900)
        config.json                              DiT config (diffusers ConfigMixin)
        diffusion_pytorch_model*.safetensors     weights (one file, or shards + index)
    low_noise_model/                             the expert for t < 900, same layout
    models_t5_umt5-xxl-enc-bf16.pth              T5 encoder state dict (torch zip file)
    Wan2.1_VAE.pth                               the Wan2.1 VAE (z_dim 16) state dict
    google/umt5-xxl/                             tokenizer folder
    wmsub_dims.json                              only in tiny test checkpoints: T5/VAE sizes

Names and sizes are those of `wan/configs/wan_i2v_A14B.py` (tests/unit/
test_engine_i2v_official.py checks them against it): dim 5120, ffn 13824, 40 heads,
40 layers, model_type "i2v", in_dim 36 (16 noise + 4 mask + 16 image latent channels),
out_dim 16. The engine spec names `inspect_checkpoint` as the login node's preflight check.
"""
from __future__ import annotations

from pathlib import Path

from wmsub.node.engines import layout as _layout
from wmsub.node.engines.layout import (DIMS_FILE, T5_CHECKPOINT, T5_TOKENIZER,
                                       CheckpointError)
from wmsub.problems import Problem

HIGH_NOISE = "high_noise_model"  # i2v_A14B.high_noise_checkpoint
LOW_NOISE = "low_noise_model"    # i2v_A14B.low_noise_checkpoint
EXPERTS = (HIGH_NOISE, LOW_NOISE)
VAE_CHECKPOINT = "Wan2.1_VAE.pth"

OFFICIAL_DIT = {"model_type": "i2v", "in_dim": 36, "out_dim": 16, "dim": 5120, "ffn_dim": 13824,
                "freq_dim": 256, "num_heads": 40, "num_layers": 40, "text_len": 512}
STRUCTURAL = ("model_type", "in_dim", "out_dim", "text_len")

KEY = "model.checkpoint_dir"
FIX = ("download Wan-AI/Wan2.2-I2V-A14B into it (huggingface-cli download Wan-AI/Wan2.2-I2V-A14B "
       "--local-dir DIR), or build a tiny random one for tests with "
       "`python -m wmsub.dev.checkpoints DIR --i2v-a14b`, and point model.checkpoint_dir at it")

__all__ = ["HIGH_NOISE", "LOW_NOISE", "EXPERTS", "VAE_CHECKPOINT", "T5_CHECKPOINT", "T5_TOKENIZER",
           "DIMS_FILE", "OFFICIAL_DIT", "CheckpointError", "inspect_checkpoint",
           "check_checkpoint_dir", "dit_config", "weight_bytes"]


def check_checkpoint_dir(ckpt_dir: str | Path, experts: bool = True) -> Path:
    """The folder, or CheckpointError listing every problem of it. experts=False skips the
    two expert folders (a tool that builds the experts in memory)."""
    problems, _ = inspect_checkpoint(ckpt_dir, experts=experts)
    if problems:
        raise CheckpointError(problems, f"checkpoint folder {ckpt_dir}")
    return Path(ckpt_dir)


def inspect_checkpoint(ckpt_dir: str | Path, experts: bool = True
                       ) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) of an I2V-A14B folder, reading headers only: both experts'
    config.json parse and state the A14B dimensions (a tiny one's with wmsub_dims.json),
    the two experts are the same architecture, every weight file is complete and has the
    shapes its config promises, the T5 and Wan2.1 VAE files are complete torch files and
    the tokenizer folder is there."""
    ckpt = Path(ckpt_dir)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if not ckpt.is_dir():
        what = "is a file, not a folder" if ckpt.exists() else "does not exist"
        return [Problem(KEY, f"{ckpt} {what}", FIX)], []
    dims = _layout._read_dims(ckpt, problems)
    official = not (ckpt / DIMS_FILE).is_file()
    configs = {}
    for name in EXPERTS:
        sub = ckpt / name
        if not sub.is_dir():
            problems.append(Problem(KEY, f"{sub}/ (the {name.replace('_', ' ')} expert) is missing", FIX))
            continue
        config = _layout._read_dit_config(sub, problems)
        if config is None:
            continue
        configs[name] = config
        _check_dimensions(sub, config, official, problems)
        if experts:
            tensors = _layout._check_dit_weights(sub, problems)
            if tensors:
                _layout._check_weight_shapes(sub, config, tensors, problems)
    if len(configs) == 2:
        keys = sorted(set(OFFICIAL_DIT) | {"patch_size", "qk_norm", "cross_attn_norm", "eps"})
        differ = [k for k in keys if configs[HIGH_NOISE].get(k) != configs[LOW_NOISE].get(k)]
        if differ:
            problems.append(Problem(KEY, f"{ckpt}: the two experts' config.json differ in {differ}: "
                                         "they are not one A14B checkpoint",
                                    "download the checkpoint folder again, as one piece"))
    _layout._check_text_and_vae(ckpt, VAE_CHECKPOINT, "Wan2.1 VAE", FIX, problems)
    if dims:
        warnings.append(_layout._tiny_warning(ckpt, "Wan2.2-I2V-A14B"))
    return problems, warnings


def dit_config(ckpt_dir: str | Path) -> dict | None:
    """config.json of the high-noise expert (both have the same), or None when unreadable.
    Preflight reads num_heads from it (sp's ranks must divide the heads)."""
    return _layout._read_dit_config(Path(ckpt_dir) / HIGH_NOISE, [])


def weight_bytes(ckpt_dir: str | Path) -> int:
    """Bytes of the weight files (what loading moves into memory, roughly)."""
    ckpt = Path(ckpt_dir)
    files = [f for name in EXPERTS for f in (ckpt / name).glob(_layout.DIT_WEIGHTS_GLOB)]
    files += [ckpt / T5_CHECKPOINT, ckpt / VAE_CHECKPOINT]
    return sum(f.stat().st_size for f in files if f.is_file())


def _check_dimensions(sub: Path, config: dict, official: bool, problems: list[Problem]) -> None:
    path = sub / _layout.DIT_CONFIG
    names = OFFICIAL_DIT if official else {k: OFFICIAL_DIT[k] for k in STRUCTURAL}
    wrong = [f"{k}={config.get(k)!r} (I2V-A14B: {v!r})" for k, v in names.items()
             if config.get(k) != v]
    if wrong:
        problems.append(Problem(KEY, f"{path} is not a Wan2.2-I2V-A14B expert: " + ", ".join(wrong),
                                FIX + " (another Wan2.2 model will not do: this engine runs I2V-A14B)"))
    dim, heads = config.get("dim"), config.get("num_heads")
    if isinstance(dim, int) and isinstance(heads, int) and (heads < 1 or dim % heads):
        problems.append(Problem(KEY, f"{path}: dim={dim} is not a multiple of num_heads={heads}", FIX))
