"""DiT step, whole-video and chunk-start benchmark: official code path vs the fast path.

    python -m bench.speed [--quick] [--steps N] [--variants a,b] [--fidelity-steps N]
                          [--video] [--tiny] [--out FILE]

Prints one JSON document (also written to --out). Everything is measured in ONE process
on ONE device, so the ratios between the official variants and ours are trustworthy.
Real-size random weights (official dims from wan/configs/wan_ti2v_5B.py); `--tiny` runs
the same code at tiny sizes on the CPU in seconds (a smoke run: its times mean nothing).
This is a benchmark, not a test: it asserts nothing about time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F

if __package__ in (None, ""):  # `python bench/speed.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wmsub.node.engines import fast  # noqa: E402
from wmsub.node.engines.attention import install_attention  # noqa: E402
from wmsub.dev.checkpoints import (REAL_DIT, folder_bytes, random_dit,  # noqa: E402
                                   write_real_size_parts)
from wmsub.node.engines.shims import wan_module  # noqa: E402

TINY_DIT = dict(REAL_DIT, dim=128, ffn_dim=256, freq_dim=32, text_dim=64, num_heads=2,
                num_layers=2, text_len=32)

def _variant(fast_blocks=False, compiled=False, attention="cudnn", batch2=False, qkv=False,
             rope2=False, tune=False):
    return dict(fast_blocks=fast_blocks, compile=compiled, attention=attention, batch2=batch2,
                qkv=qkv, rope2=rope2, tune=tune)


VARIANTS = {
    "official_flash": _variant(attention="flash"),  # the seed's stand-in (no flash_attn)
    "official_cudnn": _variant(),
    "official_compile": _variant(compiled=True),     # GUIDE's 1.28 s anchor
    "fast_eager": _variant(fast_blocks=True),
    "fast_compile_flash": _variant(fast_blocks=True, compiled=True, attention="flash"),
    "fast_compile": _variant(fast_blocks=True, compiled=True),
    "fast_compile_b2": _variant(fast_blocks=True, compiled=True, batch2=True),
    "fast_compile_qkv": _variant(fast_blocks=True, compiled=True, qkv=True),
    "fast_compile_rope2": _variant(fast_blocks=True, compiled=True, rope2=True),
    # what apply_speedups gives for fast_blocks + compile
    "fast_full": _variant(fast_blocks=True, compiled=True, qkv=True, rope2=True),
    # FlashAttention 3 (official build or PyPI fa3-fwd; skipped when neither is installed)
    "official_flash3": _variant(attention="flash3"),
    "fast_full_flash3": _variant(fast_blocks=True, compiled=True, qkv=True, rope2=True,
                                 attention="flash3"),
    # last: coordinate-descent tuning is a process-wide inductor setting
    "fast_full_tuned": _variant(fast_blocks=True, compiled=True, qkv=True, rope2=True,
                                tune=True),
}
QUICK = ("official_flash", "official_cudnn", "fast_eager", "fast_full")
REFERENCE = "official_flash"
RECOMMENDED = "fast_full"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


# --------------------------------------------------------------------------------------
# inputs and model
# --------------------------------------------------------------------------------------

def build_model(dims: dict, device, dtype):
    return random_dit(dims, device, dtype)


def make_inputs(dims, frames, height, width, device, seed=1):
    g = torch.Generator().manual_seed(seed)
    f, h, w = (frames - 1) // 4 + 1, height // 16, width // 16
    noise = torch.randn(48, f, h, w, generator=g).to(device)
    z = (0.5 * torch.randn(48, f, h, w, generator=g)).to(device)  # stands in for the image latent
    mask2 = torch.ones_like(noise)
    mask2[:, 0] = 0
    seq_len = f * (h // 2) * (w // 2)
    text_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    context = (0.1 * torch.randn(120, dims["text_dim"], generator=g)).to(device, text_dtype)
    context_null = (0.1 * torch.randn(126, dims["text_dim"], generator=g)).to(device, text_dtype)
    if dims["text_len"] < 126:
        context, context_null = context[:dims["text_len"] // 2], context_null[:dims["text_len"] // 2]
    return dict(noise=noise, z=z, mask2=mask2, seq_len=seq_len, context=context,
                context_null=context_null)


def per_token_timestep(inputs, t):
    # exactly the official i2v construction (first latent frame at timestep 0)
    temp = (inputs["mask2"][0][:, ::2, ::2] * t).flatten()
    pad = temp.new_ones(inputs["seq_len"] - temp.size(0)) * t
    return torch.cat([temp, pad]).unsqueeze(0)


def configure(model, variant):
    spec = VARIANTS[variant]
    fast.restore_official(model)
    device = next(model.parameters()).device
    kernel = fast.resolve_kernel(spec["attention"], device)
    install_attention(kernel)
    if spec["fast_blocks"]:
        fast.apply_attention_kernel(model, kernel)
        fast.apply_fast_blocks(model)
        if spec["qkv"]:
            fast.apply_fused_qkv(model)
        if spec["rope2"]:
            fast.apply_interleaved_rope(model)
    if spec["compile"]:
        if spec["tune"]:
            torch._dynamo.reset()  # the inductor setting is not part of the graph cache key
        fast.apply_compile(model, tune_kernels=spec["tune"])
    return kernel


def guided(model, variant, x, timestep, inputs, guide_scale=5.0):
    """One denoising step's DiT work: cond + uncond forwards and the CFG mix."""
    batch2 = VARIANTS[variant]["batch2"]
    device = x.device
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                        enabled=device.type == "cuda"), torch.no_grad():
        if batch2:
            cond, uncond = model([x, x], t=timestep.expand(2, -1),
                                 context=[inputs["context"], inputs["context_null"]],
                                 seq_len=inputs["seq_len"])
        else:
            cond = model([x], t=timestep, context=[inputs["context"]],
                         seq_len=inputs["seq_len"])[0]
            uncond = model([x], t=timestep, context=[inputs["context_null"]],
                           seq_len=inputs["seq_len"])[0]
    return uncond + guide_scale * (cond - uncond), cond


# --------------------------------------------------------------------------------------
# step benchmark + one-forward fidelity
# --------------------------------------------------------------------------------------

def bench_step(model, variant, inputs, steps, flops_step):
    device = inputs["noise"].device
    kernel = configure(model, variant)
    t = torch.tensor(900.0, device=device)
    timestep = per_token_timestep(inputs, t)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    guided(model, variant, inputs["noise"], timestep, inputs)  # warm-up (compiles)
    sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        guided(model, variant, inputs["noise"], timestep, inputs)
        sync(device)
        times.append(time.perf_counter() - t0)
    _, cond = guided(model, variant, inputs["noise"], timestep, inputs)
    med = statistics.median(times)
    return dict(
        attention=kernel, s_per_step=med, steps_timed=[round(x, 4) for x in times],
        tflops=flops_step / med / 1e12, first_step_s=first,
        compile_s=max(first - med, 0.0) if VARIANTS[variant]["compile"] else 0.0,
        peak_gb=(torch.cuda.max_memory_allocated(device) / 2**30
                 if device.type == "cuda" else None)), cond.float().cpu()


# --------------------------------------------------------------------------------------
# kernel micro-benchmarks and a per-category profile of one step
# --------------------------------------------------------------------------------------

def _time_ms(fn, reps=10):
    fn()
    if not torch.cuda.is_available():
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) * 1e3 / reps
    start = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for a, b in zip(start, end):
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in zip(start, end))


def micro(dims, tokens, device) -> dict:
    """Attention kernels and the block's GEMMs alone, at the real shape."""
    from torch.nn.attention import sdpa_kernel
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n, d, c, ffn = dims["num_heads"], dims["dim"] // dims["num_heads"], dims["dim"], dims["ffn_dim"]
    res = {"attention": {}, "gemm": {}}
    q, k, v = (torch.randn(1, tokens, n, d, device=device, dtype=dtype) for _ in range(3))
    flop = 4 * tokens * tokens * d * n
    for kernel in (["cudnn", "flash", "efficient"] if device.type == "cuda" else ["math"]):
        for layout in ("blhd_view", "bhld_contiguous"):
            qt, kt, vt = (u.transpose(1, 2) for u in (q, k, v))
            if layout == "bhld_contiguous":
                qt, kt, vt = qt.contiguous(), kt.contiguous(), vt.contiguous()

            def run():
                with sdpa_kernel([fast._sdpa_backend(kernel)]):
                    F.scaled_dot_product_attention(qt, kt, vt)
            try:
                ms = _time_ms(run)
                res["attention"][f"{kernel}_{layout}"] = {"ms": ms, "tflops": flop / ms / 1e9}
            except RuntimeError as e:
                res["attention"][f"{kernel}_{layout}"] = {"error": str(e)[:160]}
    kc, vc = (torch.randn(1, 512, n, d, device=device, dtype=dtype) for _ in range(2))
    cross_flop = 4 * tokens * 512 * d * n
    for kernel in (["cudnn", "flash", "efficient"] if device.type == "cuda" else ["math"]):
        try:
            ms = _time_ms(lambda: fast.attention_bhld(q, kc, vc, kernel))
            res["attention"][f"cross512_{kernel}"] = {"ms": ms, "tflops": cross_flop / ms / 1e9}
        except RuntimeError as e:
            res["attention"][f"cross512_{kernel}"] = {"error": str(e)[:160]}
    x = torch.randn(tokens, c, device=device, dtype=dtype)
    h = torch.randn(tokens, ffn, device=device, dtype=dtype)
    for name, inp, out_f in (("c_to_c", x, c), ("c_to_3c_qkv", x, 3 * c),
                             ("c_to_ffn", x, ffn), ("ffn_to_c", h, c)):
        w = torch.randn(out_f, inp.size(1), device=device, dtype=dtype) * 0.02
        b = torch.zeros(out_f, device=device, dtype=dtype)
        ms = _time_ms(lambda: F.linear(inp, w, b))
        res["gemm"][name] = {"ms": ms, "tflops": 2 * tokens * inp.size(1) * out_f / ms / 1e9}
    return res


def _category(name: str) -> str:
    low = name.lower()
    if low.startswith("triton"):  # inductor's fused kernels name the ops they fuse
        return "fused_elementwise"
    if any(s in low for s in ("fmha", "flash", "cudnn", "attention", "sdpa", "fprop")):
        return "attention"
    if any(s in low for s in ("gemm", "nvjet", "cutlass", "sm90_xmma", "matmul", "cublas")):
        return "gemm"
    return "other"


def profile_step(model, variant, inputs) -> dict:
    from torch.profiler import ProfilerActivity, profile
    configure(model, variant)
    device = inputs["noise"].device
    timestep = per_token_timestep(inputs, torch.tensor(900.0, device=device))
    guided(model, variant, inputs["noise"], timestep, inputs)
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        guided(model, variant, inputs["noise"], timestep, inputs)
        sync(device)
    # device-side kernel records only: key_averages() also lists each compiled op's CPU
    # record (with its kernels' device time) and driver calls, which double-count
    from torch.autograd import DeviceType
    totals = {}
    for ev in prof.events():
        if getattr(ev, "device_type", None) != DeviceType.CUDA:
            continue
        secs, calls = totals.get(ev.name, (0.0, 0))
        totals[ev.name] = (secs + ev.time_range.elapsed_us() / 1e6, calls + 1)
    cats, kernels = {}, []
    for name, (secs, calls) in totals.items():
        cats[_category(name)] = cats.get(_category(name), 0.0) + secs
        kernels.append((secs, calls, name[:110]))
    kernels.sort(reverse=True)
    return {"variant": variant, "seconds_by_category": cats,
            "top_kernels": [{"s": round(t, 4), "calls": c, "name": k} for t, c, k in kernels[:14]]}


# --------------------------------------------------------------------------------------
# N-step trajectories (latent fidelity)
# --------------------------------------------------------------------------------------

def trajectory(model, variant, inputs, steps, shift=5.0):
    unipc = wan_module("utils.fm_solvers_unipc")
    device = inputs["noise"].device
    configure(model, variant)
    sched = unipc.FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1,
                                              use_dynamic_shifting=False)
    sched.set_timesteps(steps, device=device, shift=shift)
    mask2, z = inputs["mask2"], inputs["z"]
    latent = (1. - mask2) * z + mask2 * inputs["noise"]
    sync(device)
    t0 = time.perf_counter()
    for t in sched.timesteps:
        timestep = per_token_timestep(inputs, torch.stack([t]).to(device))
        noise_pred, _ = guided(model, variant, latent, timestep, inputs)
        latent = sched.step(noise_pred.unsqueeze(0), t, latent.unsqueeze(0),
                            return_dict=False)[0].squeeze(0)
        latent = (1. - mask2) * z + mask2 * latent
    sync(device)
    return latent.float().cpu(), time.perf_counter() - t0


# --------------------------------------------------------------------------------------
# whole video + chunk start, through the engine (wmsub.node.engines.wan_ti2v)
# --------------------------------------------------------------------------------------

ENGINE_SETTINGS = {
    # the seed's computation on one GPU: exact, SDPA flash backend for flash_attn
    "official": ["generate.exact=true", "generate.attention=flash",
                 "generate.cache_negative_prompt=false", "generate.offload_t5=false",
                 "generate.vae_dtype=float32"],
    "fast": ["generate.exact=false", "generate.attention=cudnn", "generate.compile=true",
             "generate.fast_blocks=true", "generate.cache_negative_prompt=true",
             "generate.offload_t5=false", "generate.vae_dtype=bfloat16"],
}


def write_checkpoint(out: Path, tiny: bool) -> dict:
    """A checkpoint folder in the official layout: real sizes with random weights."""
    t0 = time.perf_counter()
    if tiny:
        from wmsub.dev.checkpoints import build_tiny_checkpoint
        build_tiny_checkpoint(out, seed=0)
    else:
        write_real_size_parts(out)
    return {"write_s": time.perf_counter() - t0, "bytes": folder_bytes(out)}


def chunk_run(args) -> dict:
    """Child process: process start -> engine loaded -> first step -> videos."""
    t_start = float(args.t0)
    t_imports = time.time()
    import numpy as np
    from PIL import Image

    from wmsub.config import load_config
    from wmsub.node.engines.parallel import init_distributed
    from wmsub.node.engines.wan_ti2v import load_engine
    from wmsub.node.worker import sample_instance
    res = {"mode": args.mode, "python_start_s": t_imports - t_start}
    overrides = [f"model.checkpoint_dir={args.chunk_run}", "generate.parallel=none",
                 f"generate.sampling_steps={args.video_steps}",
                 f"generate.max_area={args.height}*{args.width}",
                 f"generate.frame_num={args.frames}", *ENGINE_SETTINGS[args.mode]]
    if args.tiny:
        overrides += ["generate.device=cpu", "generate.compile=false"]
    cfg = load_config(None, overrides)
    res["imports_s"] = time.time() - t_imports
    t0 = time.time()
    engine = load_engine(cfg, init_distributed(cfg.generate))
    res["load_engine_s"] = time.time() - t0
    device = engine.device
    first_forward = {}
    forward = engine.model.forward

    def timed_forward(*a, **k):
        first_forward.setdefault("start", time.time())
        out = forward(*a, **k)
        if "end" not in first_forward and len(first_forward) == 1:
            sync(device)
            first_forward["end"] = time.time()
        return out
    engine.model.forward = timed_forward

    img_path = Path(args.chunk_run) / "bench_frame.png"
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:720, 0:1280]
    frame = np.stack([(xx // 5) % 256, (yy // 3) % 256, (xx + yy) % 256], -1)
    frame = np.clip(frame + rng.randint(0, 20, frame.shape), 0, 255).astype(np.uint8)
    Image.fromarray(frame).save(img_path)

    class Inst:  # field-compatible with wmsub.benchmark.manifest.Instance
        index, stem, domain, subdomain, image_size = 0, "bench", "bench", "bench", (1280, 720)
        prompt = "a robot arm slowly moves a red ball on the table"
        image = str(img_path)

    videos = []
    for i in range(args.videos):
        t0 = time.time()
        video = sample_instance(engine, Inst, engine.gen.seed)
        stage = dict(engine.last_timings)
        stage["generate_s"] = time.time() - t0
        if i == 0:
            res["first_step_at_s"] = first_forward.get("start", t0) - t_start
            res["first_forward_end_at_s"] = first_forward.get("end", t0) - t_start
        stage["mp4_s"], stage["mp4_error"] = _time_mp4(video, Path(args.chunk_run) / f"v{i}.mp4")
        videos.append(stage)
        log(f"[{args.mode}] video {i}: {json.dumps(stage)}")
        res["videos"] = videos
        if args.child_out:  # survives the parent being stopped at its time limit
            Path(args.child_out).write_text(json.dumps(res, indent=1))
    res["videos"] = videos
    res["latent_norm"] = float(engine.last_latent.float().norm())
    torch.save(engine.last_latent.float().cpu(), Path(args.chunk_run) / f"latent_{args.mode}.pt")
    if device.type == "cuda":
        res["peak_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        res.update(_t5_move_cost(engine))
        res.update(_vae_dtype_cost(engine))
    return res


def _time_mp4(video, path):
    try:
        from wmsub.state.video_io import frames_to_uint8, write_mp4
        t0 = time.time()
        write_mp4(path, frames_to_uint8(video), 24)
        return time.time() - t0, None
    except Exception as e:  # noqa: BLE001 - the GPU image may lack imageio-ffmpeg
        return None, f"{type(e).__name__}: {e}"[:200]


def _t5_move_cost(engine) -> dict:
    t5 = engine.text_encoder.model
    sync(engine.device)
    t0 = time.time()
    t5.cpu()
    t1 = time.time()
    t5.to(engine.device)
    sync(engine.device)
    return {"t5_to_cpu_s": t1 - t0, "t5_to_gpu_s": time.time() - t1}


def _vae_dtype_cost(engine) -> dict:
    out = {}
    decoded = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        engine.vae.dtype = dtype
        sync(engine.device)
        t0 = time.time()
        with torch.no_grad():
            decoded[name] = engine.vae.decode([engine.last_latent])[0]
        sync(engine.device)
        out[f"decode_{name}_s"] = time.time() - t0
    out["decode_bf16_rel_err"] = rel_err(decoded["bfloat16"], decoded["float32"])
    return out


def t5_construction_cost() -> dict:
    """What the engine's T5 load spends before reading any weight: the official
    T5EncoderModel builds umt5-xxl on the CPU in fp32 with its random init, then casts."""
    t5_mod = wan_module("modules.t5")
    t0 = time.perf_counter()
    model = t5_mod.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=torch.bfloat16,
                            device="cpu")
    built = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    del model
    t0 = time.perf_counter()
    with torch.device("meta"):
        t5_mod.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=torch.bfloat16,
                        device="meta")
    return {"t5_cpu_construct_s": built, "t5_meta_construct_s": time.perf_counter() - t0,
            "t5_params": params}


def bench_video(args) -> dict:
    ckpt = Path(args.ckpt_dir)
    res = {"checkpoint": write_checkpoint(ckpt, args.tiny)}
    log(f"checkpoint written: {res['checkpoint']}")
    for mode in ("fast", "official"):
        cmd = [sys.executable, "-m", "bench.speed", "--chunk-run", str(ckpt), "--mode", mode,
               "--videos", str(args.videos if mode == "fast" else 1),
               "--video-steps", str(args.video_steps), "--frames", str(args.frames),
               "--height", str(args.height), "--width", str(args.width),
               "--t0", repr(time.time())] + (["--tiny"] if args.tiny else [])
        if args.out:
            cmd += ["--child-out", str(Path(args.out).with_suffix(f".{mode}.json"))]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              cwd=str(Path(__file__).resolve().parents[1]))
        sys.stderr.write(proc.stderr[-4000:])
        sys.stderr.flush()
        try:
            res[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            res[mode] = {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    for mode in ("fast", "official"):
        vids = res[mode].get("videos") or []
        if vids:
            v = vids[-1]
            res[mode]["gpu_s_per_video"] = sum(v.get(k) or 0.0 for k in
                                               ("text_s", "image_s", "steps_s", "decode_s"))
    a, b = ckpt / "latent_fast.pt", ckpt / "latent_official.pt"
    if a.exists() and b.exists():
        res["final_latent_rel_err"] = rel_err(torch.load(a), torch.load(b))
    return res


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    p.add_argument("--variants", default="", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}, 2 steps")
    p.add_argument("--fidelity-steps", type=int, default=0,
                   help="N-step trajectories of the reference and the recommended variant")
    p.add_argument("--fidelity-variants", default=f"{REFERENCE},{RECOMMENDED},official_cudnn")
    p.add_argument("--no-step", action="store_true", help="skip the step benchmark")
    p.add_argument("--micro", action="store_true", help="attention and GEMM kernels alone")
    p.add_argument("--t5-cost", action="store_true", help="time the T5 construction (chunk start)")
    p.add_argument("--profile", default="", help="comma list of variants to profile one step of")
    p.add_argument("--video", action="store_true", help="whole video + chunk start via the engine")
    p.add_argument("--videos", type=int, default=2, help="videos in the fast chunk (first compiles)")
    p.add_argument("--video-steps", type=int, default=50)
    p.add_argument("--ckpt-dir", default="/tmp/wmsub_bench_ckpt")
    p.add_argument("--tiny", action="store_true", help="CPU smoke run at tiny sizes")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--height", type=int, default=704)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--out", default="", help="also write the JSON here (after each section)")
    p.add_argument("--chunk-run", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="fast", help=argparse.SUPPRESS)
    p.add_argument("--t0", default="0", help=argparse.SUPPRESS)
    p.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.frames, args.height, args.width = 5, 64, 96
        args.video_steps = min(args.video_steps, 3)
    return args


def env_info(device) -> dict:
    info = {"torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.chunk_run:
        print(json.dumps(chunk_run(args)))
        return 0
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    dims = TINY_DIT if args.tiny else REAL_DIT
    result = {"env": env_info(device), "shape": {"frames": args.frames, "height": args.height,
                                                 "width": args.width}}

    def emit():
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))

    need_model = not args.no_step or args.fidelity_steps or args.micro or args.profile
    if need_model:
        model = build_model(dims, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
        inputs = make_inputs(dims, args.frames, args.height, args.width, device)
        fwd = fast.forward_flops(inputs["seq_len"], dims["dim"], dims["ffn_dim"],
                                 dims["num_layers"], dims["text_len"])
        result["shape"].update(tokens=inputs["seq_len"], tflop_per_step=2 * fwd / 1e12)
    if args.micro:
        log("micro-benchmarks")
        result["micro"] = micro(dims, inputs["seq_len"], device)
        log(json.dumps(result["micro"]))
        emit()
    if not args.no_step:
        names = [v for v in args.variants.split(",") if v] or (
            list(QUICK) if args.quick else list(VARIANTS))
        unknown = [v for v in names if v not in VARIANTS]
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
        steps = 2 if args.quick else args.steps
        result["variants"], outputs = {}, {}
        for name in names:
            log(f"step benchmark: {name}")
            try:
                fast.resolve_kernel(VARIANTS[name]["attention"], device)
            except ValueError as e:  # flash3 without FA3 installed
                result["variants"][name] = {"skipped": str(e)}
                continue
            result["variants"][name], outputs[name] = bench_step(
                model, name, inputs, steps, 2 * fwd)
            log(json.dumps({name: result["variants"][name]}))
            emit()
        ref = outputs.get(REFERENCE)
        if ref is not None:
            for name, out in outputs.items():
                result["variants"][name]["forward_rel_err_vs_" + REFERENCE] = rel_err(out, ref)
        emit()
    if args.profile:
        result["profile"] = {}
        for name in args.profile.split(","):
            log(f"profile: {name}")
            result["profile"][name] = profile_step(model, name, inputs)
            log(json.dumps(result["profile"][name]))
            emit()
    if args.fidelity_steps:
        fid = {"steps": args.fidelity_steps, "trajectories": {}}
        latents = {}
        for name in [v for v in args.fidelity_variants.split(",") if v]:
            log(f"trajectory: {name}")
            latents[name], secs = trajectory(model, name, inputs, args.fidelity_steps)
            fid["trajectories"][name] = {"seconds": secs, "s_per_step": secs / args.fidelity_steps}
            if REFERENCE in latents and name != REFERENCE:
                fid["trajectories"][name]["final_latent_rel_err_vs_" + REFERENCE] = rel_err(
                    latents[name], latents[REFERENCE])
            result["fidelity"] = fid
            emit()
    if args.t5_cost and not args.tiny:
        log("T5 construction cost")
        result["t5_construction"] = t5_construction_cost()
        emit()
    if args.video:
        if need_model:
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        result["video"] = bench_video(args)
        emit()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
