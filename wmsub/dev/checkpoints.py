"""Random-weight checkpoints in the official Wan2.2-TI2V-5B folder layout: tiny ones for
the tests and the demo, real-size ones (on a GPU) for the benchmarks and GPU tools.

    python -m wmsub.dev.checkpoints OUT_DIR [--seed N]
    python -m wmsub.dev.checkpoints OUT_DIR --real-size [--parts dit,vae,tokenizer,t5]

The DiT, T5 and VAE are the official classes at tiny sizes; the tokenizer is a small
unigram model (like umt5's SentencePiece) that `AutoTokenizer.from_pretrained` loads
offline. `wmsub_dims.json` records the T5/VAE sizes the official layout leaves implicit.
The DiT's text_dim is not saved in its config.json by WanModel (ignore_for_config), so
it stays 4096 and the tiny T5 keeps dim 4096 with a tiny attention/FFN width.
"""
from __future__ import annotations

import argparse
import json
import string
import sys
import time
from pathlib import Path

import torch

from wmsub.node.engines.checkpoint import ti2v_config
from wmsub.node.engines.layout import DIMS_FILE, T5_CHECKPOINT, T5_TOKENIZER, VAE_CHECKPOINT
from wmsub.node.engines.shims import wan_module

TINY_DIT = dict(model_type="ti2v", patch_size=(1, 2, 2), text_len=512, in_dim=48, dim=64,
                ffn_dim=128, freq_dim=32, text_dim=4096, out_dim=48, num_heads=2, num_layers=2,
                window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
TINY_T5 = dict(vocab_size=160, dim=4096, dim_attn=32, dim_ffn=16, num_heads=2,
               encoder_layers=1, decoder_layers=1, num_buckets=32)
TINY_VAE = dict(c_dim=8, dec_dim=8, num_res_blocks=1)
# the official sizes (wan/configs/wan_ti2v_5B.py)
REAL_DIT = dict(model_type="ti2v", patch_size=(1, 2, 2), text_len=512, in_dim=48, dim=3072,
                ffn_dim=14336, freq_dim=256, text_dim=4096, out_dim=48, num_heads=24,
                num_layers=30, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True,
                eps=1e-6)
REAL_PARTS = ("dit", "vae", "tokenizer", "t5")
COMPLETE = ".complete"  # written last: a folder with it holds every part

_WORDS = ("a the of and to in on with is are from into over under while then moves "
          "falls rolls person car ball water hand robot arm camera video slowly quickly "
          "red blue green white black table floor street room tree dog cat").split()


def _build_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,!?'-")
    pieces = [(p, 0.0) for p in specials]
    pieces += [("\u2581" + w, -2.0) for w in _WORDS]
    pieces += [("\u2581", -3.0)] + [(c, -5.0) for c in chars]
    assert len(pieces) <= TINY_T5["vocab_size"], "the tiny T5 vocabulary must cover the tokenizer"
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    # umt5 appends </s> to every sequence (add_special_tokens=True in T5EncoderModel)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=512)
    fast.save_pretrained(str(out))


def _randomize(module: torch.nn.Module, generator: torch.Generator, std: float) -> None:
    # Official inits zero some outputs (the DiT head); a test model must not be trivial.
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, std, generator=generator)


def build_tiny_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random checkpoint folder in the official layout; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wan_cfg = ti2v_config()
    model_mod = wan_module("modules.model")
    t5_mod = wan_module("modules.t5")
    vae_mod = wan_module("modules.vae2_2")
    gen = torch.Generator().manual_seed(seed)

    torch.manual_seed(seed)
    dit = model_mod.WanModel(**TINY_DIT)
    _randomize(dit, gen, 0.05)
    dit.save_pretrained(str(out), safe_serialization=True)

    torch.manual_seed(seed + 1)
    t5 = t5_mod.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=wan_cfg.t5_dtype,
                         device="cpu", **TINY_T5)
    torch.save(t5.state_dict(), out / T5_CHECKPOINT)

    torch.manual_seed(seed + 2)
    vae_kwargs = dict(dim=TINY_VAE["c_dim"], dec_dim=TINY_VAE["dec_dim"], z_dim=48,
                      dim_mult=[1, 2, 4, 4], num_res_blocks=TINY_VAE["num_res_blocks"],
                      attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    vae = vae_mod.WanVAE_(**vae_kwargs)
    torch.save(vae.state_dict(), out / VAE_CHECKPOINT)

    _build_tokenizer(out / T5_TOKENIZER)
    t5_dims = dict(TINY_T5)
    dims = {"note": "tiny random weights built by wmsub.dev.checkpoints (not a real model)",
            "t5": t5_dims, "vae": dict(TINY_VAE)}
    (out / DIMS_FILE).write_text(json.dumps(dims, indent=1) + "\n")
    return out


def random_dit(dims: dict, device, dtype, seed: int = 0):
    """The official WanModel at `dims`, random weights (the head too: the official init
    zeroes it, which would make every output its bias), built on `device`."""
    model_mod = wan_module("modules.model")
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_mod.WanModel(**dims)
    torch.nn.init.xavier_uniform_(model.head.head.weight)
    return model.to(dtype).eval().requires_grad_(False)


def write_real_size_parts(out: str | Path, parts=REAL_PARTS, device="cuda", seed: int = 0) -> dict:
    """Write the named parts of a real-size random checkpoint (official sizes, layout and
    dtypes: float32 DiT safetensors, bf16 T5, float32 VAE); returns seconds per part.

    Two processes on two GPUs may write disjoint parts of one folder at once.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wan_cfg = ti2v_config()  # the T5 dtype
    timings = {}
    for part in parts:
        t0 = time.perf_counter()
        if part == "dit":
            dit = random_dit(REAL_DIT, device, torch.float32, seed)
            dit.save_pretrained(str(out), safe_serialization=True)
            del dit
        elif part == "vae":
            torch.manual_seed(seed + 2)
            with torch.device(device):
                vae = wan_module("modules.vae2_2").WanVAE_(
                    dim=160, dec_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                    attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
            torch.save({k: v.cpu() for k, v in vae.state_dict().items()},
                       out / VAE_CHECKPOINT)
            del vae
        elif part == "t5":
            torch.manual_seed(seed + 1)
            t5 = wan_module("modules.t5").umt5_xxl(encoder_only=True, return_tokenizer=False,
                                                   dtype=wan_cfg.t5_dtype, device=device)
            torch.save({k: v.cpu() for k, v in t5.state_dict().items()},
                       out / T5_CHECKPOINT)
            del t5
        elif part == "tokenizer":
            # google/umt5-xxl cannot be fetched on the GPU machines: a small stand-in
            _build_tokenizer(out / T5_TOKENIZER)
        else:
            raise ValueError(f"unknown checkpoint part {part!r}; parts: {', '.join(REAL_PARTS)}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        timings[f"write_{part}_s"] = round(time.perf_counter() - t0, 2)
    return timings


def folder_bytes(path: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def mark_complete(out: str | Path, info: dict) -> dict:
    info = {**info, "bytes": folder_bytes(out)}
    (Path(out) / COMPLETE).write_text(json.dumps(info) + "\n")
    return info


def write_real_size_checkpoint(out: str | Path, device="cuda", seed: int = 0) -> dict:
    """Every part, once: a folder already marked complete is reused as it is."""
    done = Path(out) / COMPLETE
    if done.is_file():
        try:
            info = json.loads(done.read_text())
        except json.JSONDecodeError:  # an older marker ("ok")
            info = {}
        return {**(info if isinstance(info, dict) else {}), "reused": True}
    return mark_complete(out, write_real_size_parts(out, REAL_PARTS, device, seed))


# ---- Wan2.2-I2V-A14B (wan.WanI2V): two experts, the Wan2.1 VAE -------------------------

TINY_I2V_DIT = dict(TINY_DIT, model_type="i2v", in_dim=36, out_dim=16)
TINY_VAE21 = dict(dim=8, num_res_blocks=1)  # _video_vae's keyword arguments (official: dim 96, 2)
# the official sizes (wan/configs/wan_i2v_A14B.py)
REAL_I2V_DIT = dict(REAL_DIT, model_type="i2v", in_dim=36, out_dim=16, dim=5120, ffn_dim=13824,
                    num_heads=40, num_layers=40)


def build_tiny_i2v_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Wan2.2-I2V-A14B folder in the official layout (two experts with
    different random weights, the Wan2.1 VAE, T5 and tokenizer as build_tiny_checkpoint);
    returns its path."""
    from wmsub.node.engines.layout_i2v import EXPERTS
    from wmsub.node.engines.layout_i2v import VAE_CHECKPOINT as VAE21_CHECKPOINT
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wan_cfg = ti2v_config()  # T5 dtype and text_len: the same in wan_i2v_A14B
    model_mod = wan_module("modules.model")
    t5_mod = wan_module("modules.t5")
    vae_mod = wan_module("modules.vae2_1")
    for i, name in enumerate(EXPERTS):  # different seeds: the experts must differ
        torch.manual_seed(seed + 10 + i)
        dit = model_mod.WanModel(**TINY_I2V_DIT)
        _randomize(dit, torch.Generator().manual_seed(seed + 10 + i), 0.05)
        dit.save_pretrained(str(out / name), safe_serialization=True)

    torch.manual_seed(seed + 1)
    t5 = t5_mod.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=wan_cfg.t5_dtype,
                         device="cpu", **TINY_T5)
    torch.save(t5.state_dict(), out / T5_CHECKPOINT)

    torch.manual_seed(seed + 2)
    vae = vae_mod.WanVAE_(z_dim=16, dim_mult=[1, 2, 4, 4], attn_scales=[],
                          temperal_downsample=[False, True, True], dropout=0.0, **TINY_VAE21)
    torch.save(vae.state_dict(), out / VAE21_CHECKPOINT)

    _build_tokenizer(out / T5_TOKENIZER)
    dims = {"note": "tiny random Wan2.2-I2V-A14B weights built by wmsub.dev.checkpoints "
                    "(not a real model)", "t5": dict(TINY_T5), "vae": dict(TINY_VAE21)}
    (out / DIMS_FILE).write_text(json.dumps(dims, indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wmsub.dev.checkpoints",
                                     description="write a tiny random Wan2.2-TI2V checkpoint")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-size", action="store_true",
                        help="the official sizes, random weights, built on the GPU")
    parser.add_argument("--parts", default=",".join(REAL_PARTS),
                        help="with --real-size: which parts to write (two processes may split them)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--i2v-a14b", action="store_true",
                        help="a tiny Wan2.2-I2V-A14B folder (two experts, Wan2.1 VAE) instead")
    args = parser.parse_args(argv)
    if args.i2v_a14b:
        if args.real_size:
            parser.error("--i2v-a14b --real-size: the experts (2 x 57 GB) are built in memory "
                         "by tools/verify_official_i2v.py, not written")
        path = build_tiny_i2v_checkpoint(args.out_dir, seed=args.seed)
        print(json.dumps({"checkpoint_dir": str(path), "bytes": folder_bytes(path)}))
        return 0
    if args.real_size:
        parts = [p for p in args.parts.split(",") if p]
        timings = write_real_size_parts(args.out_dir, parts, args.device, args.seed)
        print(json.dumps({"checkpoint_dir": args.out_dir, **timings}))
        return 0
    path = build_tiny_checkpoint(args.out_dir, seed=args.seed)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(json.dumps({"checkpoint_dir": str(path), "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
