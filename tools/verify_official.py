"""Check that our sampler equals the official `wan.WanTI2V.i2v`, bit for bit.

On a CUDA box (the real check):
    python tools/verify_official.py --ckpt /local/disk/wan_random --steps 6 --out result.json
writes (once) a checkpoint folder with REAL-SIZE random weights in the official layout
(DiT fp32 safetensors, T5 bf16 .pth, VAE fp32 .pth, a small stand-in tokenizer: the real
umt5 tokenizer cannot be downloaded there), runs the official WanTI2V (its own __init__,
its own generate) and then our engine on the same image, prompt and seed at 704x1280x81,
both with the same attention kernel patched into wan.modules.model, and prints JSON:
{"equal_latent", "equal_video", "max_abs_diff_latent", "max_abs_diff_video",
 "official_s_per_step", "ours_s_per_step", ...}.

Without CUDA the official class cannot be built (it hard-codes cuda:N); the CPU test
tests/test_engine_official.py instead runs WanTI2V.i2v's own code on modules our engine
loaded (see `official_sharing_modules`).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from wmsub.node.engines.shims import wan_module  # noqa: E402

PROMPT = "A red ball rolls across a wooden table and falls onto the floor."


@contextlib.contextmanager
def _torchvision_stand_in():
    # wan/textimage2video.py imports torchvision only for TF.to_tensor (and wan.utils.utils
    # for save_video); there is no CPU torchvision build here, so a stand-in module with
    # our verified to_tensor is put in place for the import and removed afterwards.
    try:
        import torchvision.transforms.functional  # noqa: F401
        yield
        return
    except Exception:  # noqa: BLE001 - broken or absent torchvision
        pass
    from wmsub.node.engines.wan_ti2v import to_tensor
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    tv.transforms.functional.to_tensor = to_tensor
    tv.utils = types.ModuleType("torchvision.utils")
    for name, mod in (("torchvision", tv), ("torchvision.transforms", tv.transforms),
                      ("torchvision.transforms.functional", tv.transforms.functional),
                      ("torchvision.utils", tv.utils)):
        sys.modules[name] = mod
    try:
        yield
    finally:
        for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def import_official_ti2v():
    """The official `WanTI2V` class, imported without wan/__init__.py."""
    with _torchvision_stand_in():
        return wan_module("textimage2video").WanTI2V


class _CpuTextEncoder:
    """The official T5EncoderModel with our CPU context shim (bf16 -> fp32, lossless)."""

    def __init__(self, inner):
        self.inner = inner
        self.model = inner.model

    def __call__(self, texts, device):
        from wmsub.node.engines.shims import cpu_context
        return cpu_context(self.inner(texts, device))


def official_sharing_modules(engine):
    """A WanTI2V whose __init__ is skipped and whose modules are the engine's own.

    Only for CPU, where WanTI2V.__init__ cannot run (it builds cuda:N devices); the
    attributes are exactly those __init__ sets for init_on_cpu=False, no FSDP/SP.
    """
    WanTI2V = import_official_ti2v()
    official = WanTI2V.__new__(WanTI2V)
    cfg = engine.wan_cfg
    official.device = engine.device
    official.config = cfg
    official.rank = 0
    official.t5_cpu = False
    official.init_on_cpu = False
    official.num_train_timesteps = cfg.num_train_timesteps
    official.param_dtype = cfg.param_dtype
    official.text_encoder = (engine.text_encoder if engine.device.type == "cuda"
                             else _CpuTextEncoder(engine.text_encoder))
    official.vae_stride = cfg.vae_stride
    official.patch_size = cfg.patch_size
    official.vae = engine.vae
    official.model = engine.model
    official.sp_size = 1
    official.sample_neg_prompt = cfg.sample_neg_prompt
    return official


@contextlib.contextmanager
def instrumented(official):
    """While inside, `official` (WanTI2V or WanI2V) keeps its final latent in
    captured["latent"] (at decode) and stamps each denoising step in `stamps` (through the
    tqdm of its module, synchronised on CUDA); yields (captured, stamps)."""
    captured, stamps = {}, []
    module = sys.modules[type(official).__module__]
    decode, original_tqdm = official.vae.decode, module.tqdm

    def capturing_decode(zs):
        captured["latent"] = zs[0].detach().clone()
        return decode(zs)

    def timed(iterable):
        for item in iterable:
            if official.device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            yield item
        if official.device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    official.vae.decode = capturing_decode
    module.tqdm = timed
    try:
        yield captured, stamps
    finally:
        official.vae.decode = decode
        module.tqdm = original_tqdm


def deterministic_cuda() -> None:
    """Same kernels in both runs is the point; these make cuBLAS/cuDNN pick deterministic
    algorithms so that a difference can only come from the computation itself."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def seconds_per_step(stamps: list, steps: int) -> float | None:
    return (stamps[-1] - stamps[0]) / steps if len(stamps) > 1 else None


def run_official(official, img, gen, prompt=PROMPT):
    """official.generate(...) as the seed ran it; returns (video, final latent, s/step),
    video and latent None on the ranks that do not decode."""
    with instrumented(official) as (captured, stamps):
        video = official.generate(
            prompt, img=img, max_area=gen.max_area, frame_num=gen.frame_num, shift=gen.shift,
            sample_solver=gen.sample_solver, sampling_steps=gen.sampling_steps,
            guide_scale=gen.guide_scale, n_prompt=gen.negative_prompt, seed=gen.seed,
            offload_model=False)
    s_per_step = seconds_per_step(stamps, gen.sampling_steps)
    if video is None:  # ranks > 0 under FSDP/SP: the official decodes on rank 0 only
        return None, None, s_per_step
    return video.cpu(), captured["latent"].cpu(), s_per_step


def _log(msg: str) -> None:
    print(f"[verify {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit patterns (NaN == NaN if the bits agree)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def max_abs_diff(a, b) -> float:
    return float((a.double() - b.double()).abs().nan_to_num(float("inf")).max())


def compare(latent_a, video_a, latent_b, video_b) -> dict:
    """Bitwise equality and max abs difference of two runs' final latents and videos."""
    return {"equal_latent": bitwise_equal(latent_a, latent_b),
            "equal_video": bitwise_equal(video_a, video_b),
            "max_abs_diff_latent": max_abs_diff(latent_a, latent_b),
            "max_abs_diff_video": max_abs_diff(video_a, video_b)}


def synthetic_image(width=1600, height=880, seed=0):
    """A deterministic first frame (1600x880 -> resized and cropped to 1280x704)."""
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 200
    arr = np.clip(base + rng.randint(0, 56, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


# ---- the real-size random checkpoint --------------------------------------------------

REAL_DIT = dict(model_type="ti2v", patch_size=(1, 2, 2), text_len=512, in_dim=48, dim=3072,
                ffn_dim=14336, freq_dim=256, text_dim=4096, out_dim=48, num_heads=24,
                num_layers=30, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)


def write_real_size_checkpoint(out: Path, seed: int = 0) -> dict:
    """Random weights at the official sizes, official layout and dtypes. Skips if done."""
    from wmsub.node.engines.checkpoint import ti2v_config
    from wmsub.dev.checkpoints import _build_tokenizer, _randomize
    done = out / ".complete"
    if done.is_file():
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    wan_cfg = ti2v_config()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    timings = {}
    gen = torch.Generator(device=dev).manual_seed(seed)

    t = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device(dev):
        dit = wan_module("modules.model").WanModel(**REAL_DIT)
    _randomize(dit, gen, 0.02)  # the official init zeroes the head: outputs would be 0
    dit.save_pretrained(str(out), safe_serialization=True)  # fp32 as the official files
    del dit
    timings["write_dit_s"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(seed + 1)
    t5 = wan_module("modules.t5").umt5_xxl(encoder_only=True, return_tokenizer=False,
                                           dtype=wan_cfg.t5_dtype, device=dev)
    torch.save({k: v.cpu() for k, v in t5.state_dict().items()}, out / wan_cfg.t5_checkpoint)
    del t5
    timings["write_t5_s"] = time.perf_counter() - t

    t = time.perf_counter()
    torch.manual_seed(seed + 2)
    with torch.device(dev):
        vae = wan_module("modules.vae2_2").WanVAE_(
            dim=160, dec_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
            attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)
    torch.save({k: v.cpu() for k, v in vae.state_dict().items()}, out / wan_cfg.vae_checkpoint)
    del vae
    timings["write_vae_s"] = time.perf_counter() - t

    # the real google/umt5-xxl tokenizer cannot be fetched on the GPU box: a stand-in
    _build_tokenizer(out / wan_cfg.t5_tokenizer)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    timings["bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    done.write_text(json.dumps(timings))
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default="/tmp/wan22_ti2v_random", help="local folder for the random checkpoint")
    parser.add_argument("--steps", type=int, default=6, help="sampling steps (50 in the seed run)")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--max-area", default="704*1280")
    parser.add_argument("--attention", default="flash", help="SDPA kernel both runs use")
    parser.add_argument("--out", default="", help="also write the JSON here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"error": "needs a CUDA GPU (WanTI2V hard-codes cuda:N); "
                                   "on CPU run tests/unit/test_engine_official.py"}))
        return 2
    deterministic_cuda()

    from wmsub.config import load_config
    from wmsub.node.engines.checkpoint import ti2v_config
    from wmsub.node.engines.parallel import init_distributed
    from wmsub.node.engines.attention import install_attention
    from wmsub.node.engines.wan_ti2v import load_engine

    result = {"steps": args.steps, "frames": args.frames, "max_area": args.max_area,
              "attention": args.attention, "torch": str(torch.__version__),
              "gpu": torch.cuda.get_device_name(0)}
    ckpt = Path(args.ckpt)

    def save_partial():
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")

    _log(f"writing the real-size random checkpoint to {ckpt}")
    result["checkpoint"] = write_real_size_checkpoint(ckpt)
    save_partial()
    img = synthetic_image()
    cfg = load_config(None, [f"model.checkpoint_dir={ckpt}", f"generate.max_area={args.max_area}",
                             f"generate.frame_num={args.frames}", f"generate.sampling_steps={args.steps}",
                             "generate.parallel=none", "generate.device=cuda",
                             f"generate.attention={args.attention}", "generate.offload_t5=false"])

    # 1. the official class, its own __init__ and generate
    _log("loading the official WanTI2V")
    WanTI2V = import_official_ti2v()
    t = time.perf_counter()
    official = WanTI2V(ti2v_config(), str(ckpt), device_id=0, rank=0)
    result["official_load_s"] = time.perf_counter() - t
    result["attention_kernel"] = install_attention(args.attention, "cuda")
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    video_off, latent_off, result["official_s_per_step"] = run_official(official, img.copy(), cfg.generate)
    result["official_total_s"] = time.perf_counter() - t
    result["official_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    save_partial()
    _log(f"official done: {result['official_total_s']:.1f}s; loading ours")
    del official
    gc.collect()
    torch.cuda.empty_cache()

    # 2. ours
    t = time.perf_counter()
    engine = load_engine(cfg, init_distributed(cfg.generate))
    result["ours_load_s"] = time.perf_counter() - t
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    video_ours = engine.sample(PROMPT, img.copy(), seed=cfg.generate.seed)
    result["ours_total_s"] = time.perf_counter() - t
    result["ours_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    latent_ours = engine.last_latent.cpu()
    result["ours_s_per_step"] = engine.last_timings["s_per_step"]
    result["ours_timings"] = engine.last_timings
    result["fingerprint"] = engine.fingerprint()
    _log(f"ours done: {result['ours_total_s']:.1f}s; comparing")

    result["video_shape"] = list(video_ours.shape)
    result.update(compare(latent_ours, video_ours, latent_off, video_off))
    result["equal"] = result["equal_latent"] and result["equal_video"]
    result["latent_nan"] = int(latent_ours.isnan().sum())
    result["latent_absmax"] = float(latent_ours.abs().max())
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if result["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
