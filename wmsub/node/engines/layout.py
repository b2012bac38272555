"""The official Wan2.2-TI2V-5B checkpoint folder: file names, the DiT's dimensions, and a
check of a folder that reads only headers (no torch, no weights loaded).

The loader (checkpoint.py) and the login node's preflight both ask this module; it is the
one owner of the layout. tests/unit/test_checkpoint_layout.py checks the names and
dimensions against the official `wan.configs.wan_ti2v_5B`.

    config.json                                  DiT config (diffusers ConfigMixin)
    diffusion_pytorch_model*.safetensors         DiT weights (one file, or shards + index)
    models_t5_umt5-xxl-enc-bf16.pth              T5 encoder state dict (torch zip file)
    Wan2.2_VAE.pth                               VAE state dict (torch zip file)
    google/umt5-xxl/                             tokenizer folder
    wmsub_dims.json                              only in tiny test checkpoints: T5/VAE sizes
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from wmsub.problems import Problem, ProblemsError

DIT_CONFIG = "config.json"
DIT_WEIGHTS_GLOB = "diffusion_pytorch_model*.safetensors"
DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "google/umt5-xxl"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")  # either one loads
VAE_CHECKPOINT = "Wan2.2_VAE.pth"
DIMS_FILE = "wmsub_dims.json"

# The TI2V-5B DiT as its config.json states it. in_dim/out_dim are the VAE's z_dim (48).
OFFICIAL_DIT = {"model_type": "ti2v", "in_dim": 48, "out_dim": 48, "dim": 3072, "ffn_dim": 14336,
                "freq_dim": 256, "num_heads": 24, "num_layers": 30, "text_len": 512}
# What every checkpoint this engine loads must have, tiny ones included.
STRUCTURAL = ("model_type", "in_dim", "out_dim", "text_len")
PATCH_SIZE = (1, 2, 2)

KEY = "model.checkpoint_dir"
FIX = ("download Wan-AI/Wan2.2-TI2V-5B into it (huggingface-cli download Wan-AI/Wan2.2-TI2V-5B "
       "--local-dir DIR), or build a tiny random one for tests with "
       "`python -m wmsub.dev.checkpoints DIR`, and point model.checkpoint_dir at it")


class CheckpointError(ProblemsError, FileNotFoundError):
    """A checkpoint folder that is missing files, has truncated ones, or the wrong model."""


def read_dims(ckpt_dir: str | Path) -> dict:
    """The sizes recorded next to a non-official checkpoint ({} for the official one)."""
    problems: list[Problem] = []
    dims = _read_dims(Path(ckpt_dir), problems)
    if problems:
        raise CheckpointError(problems, f"checkpoint folder {ckpt_dir}")
    return dims


def check_checkpoint_dir(ckpt_dir: str | Path) -> Path:
    """The folder, or CheckpointError listing every problem of it."""
    problems, _ = inspect_checkpoint(ckpt_dir)
    if problems:
        raise CheckpointError(problems, f"checkpoint folder {ckpt_dir}")
    return Path(ckpt_dir)


def inspect_checkpoint(ckpt_dir: str | Path) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) of a checkpoint folder, reading headers only: every file exists
    and is complete (a safetensors header and its data size, a torch zip's directory),
    config.json parses, its dimensions are TI2V-5B's (or a tiny one's, with wmsub_dims.json),
    and the weights have the shapes config.json promises."""
    ckpt = Path(ckpt_dir)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if not ckpt.is_dir():
        what = "is a file, not a folder" if ckpt.exists() else "does not exist"
        return [Problem(KEY, f"{ckpt} {what}", FIX)], []
    config = _read_dit_config(ckpt, problems)
    dims = _read_dims(ckpt, problems)
    if config is not None:
        _check_dimensions(ckpt, config, official=not (ckpt / DIMS_FILE).is_file(),
                          problems=problems, warnings=warnings)
    tensors = _check_dit_weights(ckpt, problems)
    if config is not None and tensors:
        _check_weight_shapes(ckpt, config, tensors, problems)
    _check_text_and_vae(ckpt, VAE_CHECKPOINT, "VAE", FIX, problems)
    if dims:
        warnings.append(_tiny_warning(ckpt, "Wan2.2-TI2V-5B"))
    return problems, warnings


def dit_config(ckpt_dir: str | Path) -> dict | None:
    """config.json of the DiT, or None when it is missing or unreadable."""
    return _read_dit_config(Path(ckpt_dir), [])


def weight_bytes(ckpt_dir: str | Path) -> int:
    """Bytes of the checkpoint's weight files (what loading moves into memory, roughly)."""
    ckpt = Path(ckpt_dir)
    files = [*ckpt.glob(DIT_WEIGHTS_GLOB), ckpt / T5_CHECKPOINT, ckpt / VAE_CHECKPOINT]
    return sum(f.stat().st_size for f in files if f.is_file())


# ---- the parts -------------------------------------------------------------------------

def _check_text_and_vae(ckpt: Path, vae_file: str, vae_what: str, fix: str,
                        problems: list[Problem]) -> None:
    """The T5 encoder, the VAE and the tokenizer folder, laid out alike in every Wan2.2
    checkpoint (layout_i2v.py asks here too)."""
    for name, what in ((T5_CHECKPOINT, "T5 encoder"), (vae_file, vae_what)):
        _check_torch_file(ckpt / name, what, problems)
    tokenizer = ckpt / T5_TOKENIZER
    if not tokenizer.is_dir():
        problems.append(Problem(KEY, f"{tokenizer}/ (the T5 tokenizer folder) is missing", fix))
    elif not any((tokenizer / f).is_file() for f in TOKENIZER_FILES):
        problems.append(Problem(KEY, f"{tokenizer}/ has neither {' nor '.join(TOKENIZER_FILES)}",
                                "download the tokenizer folder again (it comes with the checkpoint)"))


def _tiny_warning(ckpt: Path, model: str) -> Problem:
    return Problem(KEY, f"{ckpt} is not the official model: {DIMS_FILE} records "
                        "non-official sizes (a tiny test checkpoint)",
                   f"nothing, for tests; for the benchmark use {model}")


def _read_dit_config(ckpt: Path, problems: list[Problem]) -> dict | None:
    path = ckpt / DIT_CONFIG
    if not path.is_file():
        problems.append(Problem(KEY, f"{path} (the DiT config) is missing", FIX))
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(Problem(KEY, f"{path} is not valid JSON ({e})",
                                "download config.json again"))
        return None
    if not isinstance(config, dict):
        problems.append(Problem(KEY, f"{path} is not a JSON object", "download config.json again"))
        return None
    return config


def _read_dims(ckpt: Path, problems: list[Problem]) -> dict:
    path = ckpt / DIMS_FILE
    if not path.is_file():
        return {}
    rebuild = "rebuild it with `python -m wmsub.dev.checkpoints DIR`, or delete it"
    try:
        dims = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(Problem(KEY, f"{path} is not valid JSON ({e})", rebuild))
        return {}
    unknown = sorted(set(dims) - {"t5", "vae", "note"}) if isinstance(dims, dict) else ["(not an object)"]
    if unknown:
        problems.append(Problem(KEY, f"{path} has unknown entries {unknown}; expected t5, vae", rebuild))
        return {}
    return dims


def _check_dimensions(ckpt: Path, config: dict, official: bool, problems: list[Problem],
                      warnings: list[Problem]) -> None:
    path = ckpt / DIT_CONFIG
    names = OFFICIAL_DIT if official else {k: OFFICIAL_DIT[k] for k in STRUCTURAL}
    wrong = [f"{k}={config.get(k)!r} (TI2V-5B: {v!r})" for k, v in names.items() if config.get(k) != v]
    if wrong:
        problems.append(Problem(KEY, f"{path} is not the Wan2.2-TI2V-5B DiT: " + ", ".join(wrong),
                                FIX + " (another Wan2.2 model will not do: this engine runs TI2V-5B)"))
    dim, heads = config.get("dim"), config.get("num_heads")
    if isinstance(dim, int) and isinstance(heads, int) and (heads < 1 or dim % heads):
        problems.append(Problem(KEY, f"{path}: dim={dim} is not a multiple of num_heads={heads}", FIX))


def _safetensors_header(path: Path) -> tuple[dict | None, str]:
    """(header, "") or (None, why the file is not a complete safetensors file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None, f"has {size} bytes: no safetensors header"
            n = struct.unpack("<Q", head)[0]
            if n + 8 > size:
                return None, f"is cut short: its header alone needs {n + 8} bytes, the file has {size}"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return None, f"has an unreadable safetensors header ({e})"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        return None, (f"is cut short: its header promises {expected} bytes, the file has {size} "
                      "(an interrupted download?)" if expected > size else
                      f"has {size - expected} bytes more than its header describes")
    return header, ""


def dit_weight_files(ckpt_dir: str | Path) -> list[Path]:
    """The DiT's safetensors files the loader reads: the shards its index lists, else the
    single file, else every file matching the name pattern."""
    ckpt = Path(ckpt_dir)
    index = ckpt / DIT_INDEX
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [ckpt / name for name in shards]
    single = ckpt / "diffusion_pytorch_model.safetensors"
    return [single] if single.is_file() else sorted(ckpt.glob(DIT_WEIGHTS_GLOB))


def _check_dit_weights(ckpt: Path, problems: list[Problem]) -> dict:
    """{tensor name: shape} over every DiT weight file; checks completeness on the way."""
    files = sorted(ckpt.glob(DIT_WEIGHTS_GLOB))
    index = ckpt / DIT_INDEX
    if index.is_file():
        try:
            wanted = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            problems.append(Problem(KEY, f"{index} is unreadable ({e})", "download it again"))
            wanted = []
        for name in wanted:
            if not (ckpt / name).is_file():
                problems.append(Problem(KEY, f"{ckpt / name} (named in {DIT_INDEX}) is missing",
                                        "download the missing shard"))
    if not files:
        problems.append(Problem(KEY, f"{ckpt}/{DIT_WEIGHTS_GLOB} (the DiT weights) is missing", FIX))
        return {}
    shapes: dict = {}
    for path in files:
        header, why = _safetensors_header(path)
        if header is None:
            problems.append(Problem(KEY, f"{path} {why}", "download this file again"))
            continue
        shapes.update({k: v.get("shape") for k, v in header.items() if k != "__metadata__"})
    return shapes


def _check_weight_shapes(ckpt: Path, config: dict, shapes: dict, problems: list[Problem]) -> None:
    dim, in_dim, layers = config.get("dim"), config.get("in_dim"), config.get("num_layers")
    patch = shapes.get("patch_embedding.weight")
    expected = [dim, in_dim, *PATCH_SIZE]
    if patch is not None and list(patch) != expected:
        problems.append(Problem(KEY, f"{ckpt}: patch_embedding.weight has shape {patch}, config.json "
                                     f"says {expected}: the weights and config.json are of different models",
                                "download the checkpoint folder again, as one piece"))
    blocks = {k.split(".")[1] for k in shapes if k.startswith("blocks.")}
    if isinstance(layers, int) and blocks and len(blocks) != layers:
        problems.append(Problem(KEY, f"{ckpt}: the weights hold {len(blocks)} blocks, config.json says "
                                     f"num_layers={layers}", "download the checkpoint folder again"))


def _check_torch_file(path: Path, what: str, problems: list[Problem]) -> None:
    if not path.is_file():
        problems.append(Problem(KEY, f"{path} (the {what}) is missing", FIX))
        return
    if path.stat().st_size == 0:
        problems.append(Problem(KEY, f"{path} (the {what}) is empty", "download it again"))
        return
    # torch.save writes a zip whose directory sits at the end: a cut-short file has none.
    # A file in torch's legacy format (a bare pickle) cannot be checked without loading it.
    try:
        with open(path, "rb") as f:
            if f.read(1) == b"\x80":
                return
        with zipfile.ZipFile(path) as z:
            z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        problems.append(Problem(KEY, f"{path} (the {what}) is not a complete torch file ({e})",
                                "download it again"))
