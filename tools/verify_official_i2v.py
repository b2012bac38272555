"""Check that our Wan2.2-I2V-A14B sampler equals the official `wan.WanI2V.generate`
(lightning=False), bit for bit, and time it.

One GPU (nvidia-h200):
    python tools/verify_official_i2v.py --steps 3 --out result.json
builds the two 14B experts with REAL-SIZE random weights in GPU memory (seeded; 2 x 57 GB
fp32 do not fit a 64 GB disk as files) and hands the SAME module objects to the official
WanI2V (its `WanModel.from_pretrained` patched to return them; its own __init__ otherwise,
`lightning=False`, `init_on_cpu=False`) and to our engine. The rest of the folder (a real-size
random T5 .pth, a real-size random Wan2.1 VAE .pth, a stand-in tokenizer and the experts'
config.json) is written to --ckpt. The official T5EncoderModel is the engine's (the same
object: one 11 GB copy on the GPU). It compares the final latent and the video at 480p
(--compare-area) over --steps steps, then times our engine, exact and fast, at each
--timing-area (decode left out of those runs), and prints JSON.

Two GPUs (nvidia-h200-x2):
    torchrun --nproc_per_node 2 tools/verify_official_i2v.py --two-gpu --steps 3 --out r.json
runs the official WanI2V(t5_fsdp=True, dit_fsdp=True, use_sp=True) and our `sp` on the same
random experts (each side builds its own copy: FSDP wraps modules in place), compares rank
0's latent and video, then times `cfg` and `dp` (whole experts on each GPU). videos/h per
2-GPU job = 3600 / (40 * s_per_step + fixed seconds per video) for sp and cfg (one video
at a time per job), twice 3600 / (40 * s_per_step + fixed) for dp (one video per GPU).

On CPU the official class cannot be built (WanI2V.__init__ hard-codes cuda:N); the test
tests/unit/test_engine_i2v_official.py runs WanI2V.generate's own source on modules our
engine loaded (`official_i2v_sharing_modules`).
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from wmsub.node.engines.shims import wan_module  # noqa: E402

PROMPT = "A red ball rolls across a wooden table and falls onto the floor."
HIGH, LOW = "high_noise_model", "low_noise_model"


def _verify_official():
    """tools/verify_official.py (the 5B tool) as a module: its helpers are shared."""
    name = "wmsub_verify_official"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "verify_official.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def import_official_i2v_module():
    """wan/image2video.py (the official WanI2V), imported without wan/__init__.py."""
    with _verify_official()._torchvision_stand_in():
        return wan_module("image2video")


def official_i2v_sharing_modules(engine):
    """A WanI2V whose __init__ is skipped and whose modules are the engine's own: the
    attributes __init__ sets for lightning=False, init_on_cpu=False, no FSDP/SP. For CPU,
    where WanI2V.__init__ cannot run (it builds cuda:N devices)."""
    WanI2V = import_official_i2v_module().WanI2V
    official = WanI2V.__new__(WanI2V)
    cfg = engine.wan_cfg
    official.lightning = False
    official.device = engine.device
    official.config = cfg
    official.rank = 0
    official.t5_cpu = False
    official.init_on_cpu = False
    official.num_train_timesteps = cfg.num_train_timesteps
    official.boundary = cfg.boundary
    official.param_dtype = cfg.param_dtype
    official.text_encoder = (engine.text_encoder if engine.device.type == "cuda"
                             else _verify_official()._CpuTextEncoder(engine.text_encoder))
    official.vae_stride = cfg.vae_stride
    official.patch_size = cfg.patch_size
    official.vae = engine.vae
    official.low_noise_model = engine.experts[LOW]
    official.high_noise_model = engine.experts[HIGH]
    official.sp_size = 1
    official.sample_neg_prompt = cfg.sample_neg_prompt
    return official


class _Recording:
    """Stands in for one expert inside the official object: records each call's `y`."""

    def __init__(self, name, model, log):
        self.name, self.model, self.log = name, model, log

    def __call__(self, *args, **kwargs):
        self.log.append((self.name, kwargs.get("y")[0].detach().clone() if kwargs.get("y") else None))
        return self.model(*args, **kwargs)

    def __getattr__(self, item):
        return getattr(self.model, item)


def run_official_i2v(official, img, gen, prompt=PROMPT, guide_scale=None, record=False):
    """official.generate(...) as WanI2V runs it (offload_model=False); returns
    (video, final latent, s/step, experts used per forward, the y of the first forward).
    video and latent are None on ranks that do not decode."""
    log: list = []
    experts = {HIGH: official.high_noise_model, LOW: official.low_noise_model}
    if record:
        official.high_noise_model = _Recording(HIGH, experts[HIGH], log)
        official.low_noise_model = _Recording(LOW, experts[LOW], log)
    g = gen.guide_scale if guide_scale is None else guide_scale
    if not isinstance(g, (list, tuple)):
        g = float(g)  # WanI2V tests isinstance(guide_scale, float)
    verify = _verify_official()
    try:
        with verify.instrumented(official) as (captured, stamps):
            video = official.generate(
                prompt, img, max_area=gen.max_area, frame_num=gen.frame_num, shift=gen.shift,
                sample_solver=gen.sample_solver, sampling_steps=gen.sampling_steps,
                guide_scale=g, n_prompt=gen.negative_prompt, seed=gen.seed, offload_model=False)
    finally:
        official.high_noise_model, official.low_noise_model = experts[HIGH], experts[LOW]
    s_per_step = verify.seconds_per_step(stamps, gen.sampling_steps)
    used = [name for name, _ in log][::2]  # cond and uncond per step
    y = log[0][1] if log else None
    if video is None:
        return None, None, s_per_step, used, y
    return video.cpu(), captured["latent"].cpu(), s_per_step, used, y


DEVICE = "cuda"  # --tiny: "cpu" (a dry run of the tool's own code, CI-sized)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _reset_peak():
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib():
    return round(torch.cuda.max_memory_allocated() / 2**30, 1) if DEVICE == "cuda" else None


def _empty_cache():
    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def _log(msg: str) -> None:
    rank = os.environ.get("RANK", "0")
    print(f"[verify-i2v r{rank} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- real-size parts --------------------------------------------------------------------

def write_folder_parts(ckpt: Path, seed: int = 0, small_t5: bool = False) -> dict:
    """Everything of an A14B folder but the expert weights: T5 (real-size random, bf16),
    the Wan2.1 VAE (real-size random), a stand-in tokenizer, the experts' config.json."""
    from wmsub.dev.checkpoints import REAL_I2V_DIT, write_real_size_parts
    from wmsub.node.engines.layout_i2v import VAE_CHECKPOINT
    done = ckpt / ".complete-i2v"
    if done.is_file():
        return json.loads(done.read_text())
    if DEVICE != "cuda":  # --tiny
        from wmsub.dev.checkpoints import build_tiny_i2v_checkpoint
        build_tiny_i2v_checkpoint(ckpt, seed)
        done.write_text("{}")
        return {}
    if small_t5:  # the tiny T5 (dim 4096 as the DiT's text_dim): no 11 GB file to write
        from wmsub.dev.checkpoints import TINY_T5
        from wmsub.node.engines.layout import DIMS_FILE, T5_CHECKPOINT
        ckpt.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed + 1)
        t5 = wan_module("modules.t5").umt5_xxl(encoder_only=True, return_tokenizer=False,
                                               dtype=torch.bfloat16, device="cpu", **TINY_T5)
        torch.save(t5.state_dict(), ckpt / T5_CHECKPOINT)
        (ckpt / DIMS_FILE).write_text(json.dumps({"note": "real-size experts and VAE, tiny T5",
                                                  "t5": dict(TINY_T5)}))
        timings = write_real_size_parts(ckpt, ("tokenizer",), "cuda", seed)
    else:
        timings = write_real_size_parts(ckpt, ("t5", "tokenizer"), "cuda", seed)
    t = time.perf_counter()
    torch.manual_seed(seed + 2)
    with torch.device("cuda"):
        vae = wan_module("modules.vae2_1").WanVAE_(
            dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
            temperal_downsample=[False, True, True], dropout=0.0)
    torch.save({k: v.cpu() for k, v in vae.state_dict().items()}, ckpt / VAE_CHECKPOINT)
    del vae
    timings["write_vae21_s"] = round(time.perf_counter() - t, 2)
    config = {"_class_name": "WanModel", **{k: (list(v) if isinstance(v, tuple) else v)
                                            for k, v in REAL_I2V_DIT.items()}}
    for name in (HIGH, LOW):
        (ckpt / name).mkdir(parents=True, exist_ok=True)
        (ckpt / name / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    done.write_text(json.dumps(timings))
    return timings


def build_experts(seed: int = 0, device="cuda") -> dict:
    """The two experts at the official size, random (different seeds), float32 as the
    official from_pretrained gives them, on `device`."""
    from wmsub.dev.checkpoints import REAL_I2V_DIT, TINY_I2V_DIT, random_dit
    dims = REAL_I2V_DIT if DEVICE == "cuda" else TINY_I2V_DIT
    return {HIGH: random_dit(dims, DEVICE, torch.float32, seed + 10),
            LOW: random_dit(dims, DEVICE, torch.float32, seed + 11)}


def _cfg(ckpt, area, steps, frames, mode, attention, shift, extra=()):
    from wmsub.config import load_config
    return load_config(None, ["model.engine=wan22-i2v-a14b", f"model.checkpoint_dir={ckpt}",
                              f"generate.max_area={area}", f"generate.frame_num={frames}",
                              f"generate.sampling_steps={steps}", f"generate.parallel={mode}",
                              f"generate.device={DEVICE}", f"generate.attention={attention}",
                              f"generate.shift={shift}", *extra])


def official_patched(ckpt, experts, text_encoder, **kwargs):
    """The official WanI2V through its own __init__, lightning=False, with its
    `WanModel.from_pretrained` returning `experts` and its T5EncoderModel `text_encoder`."""
    from wmsub.node.engines.checkpoint_i2v import i2v_config
    module = import_official_i2v_module()

    class _Experts:
        @staticmethod
        def from_pretrained(checkpoint_dir, subfolder):
            assert Path(checkpoint_dir) == Path(ckpt), checkpoint_dir  # not the lightning path
            return experts[subfolder]

    saved = module.WanModel, module.T5EncoderModel
    module.WanModel = _Experts
    if text_encoder is not None:
        module.T5EncoderModel = lambda **kw: text_encoder
    try:
        return module.WanI2V(i2v_config(), str(ckpt), lightning=False, **kwargs)
    finally:
        module.WanModel, module.T5EncoderModel = saved


class _OffloadingT5:
    """The engine's T5EncoderModel for the official object: on the device for each
    encoding, back on the CPU after it (offload_model's T5 step; the same numbers)."""

    def __init__(self, inner):
        self.inner = inner
        self.model = inner.model

    def __call__(self, texts, device):
        self.inner.model.to(device)
        try:
            return self.inner(texts, device)
        finally:
            self.inner.model.cpu()


def synthetic_frame(width=1280, height=720, seed=0):
    return _verify_official().synthetic_image(width, height, seed)


def _timed_sample(engine, img, seed, decode=False):
    """engine.sample with per-step stamps; decode replaced by a stub unless `decode`.
    Returns (row, video)."""
    stamps = []

    def on_step(step, steps):
        _sync()
        stamps.append(time.perf_counter())

    engine.step_callback = on_step
    real_decode = engine.vae.decode
    if not decode:
        engine.vae.decode = lambda zs: [torch.zeros(3, 1, 1, 1, device=zs[0].device)]
    try:
        _sync()
        t0 = time.perf_counter()
        video = engine.sample(PROMPT, img, seed)
    finally:
        engine.vae.decode = real_decode
        engine.step_callback = None
    steps = [round(s, 3) for s in _step_times(stamps, engine.last_timings)]
    # the first step of each expert carries its one-off costs (compiling, caches)
    firsts = {i for i, n in enumerate(engine.last_experts)
              if i == 0 or engine.last_experts[i - 1] != n}
    steady = [s for i, s in enumerate(steps) if i not in firsts]
    row = {"total_s": round(time.perf_counter() - t0, 2), "step_s": steps,
           "experts": engine.last_experts,
           "steady_s_per_step": round(sum(steady) / len(steady), 3) if steady else None,
           "timings": {k: round(v, 3) for k, v in engine.last_timings.items()}}
    return row, video


def _step_times(stamps, timings):
    # the first step starts steps_s before the last stamp
    if not stamps:
        return []
    start = stamps[-1] - timings.get("steps_s", 0.0)
    return [b - a for a, b in zip([start] + stamps[:-1], stamps)]


# ---- one GPU ------------------------------------------------------------------------------

def main_one_gpu(args) -> int:
    from wmsub.node.engines.attention import install_attention
    from wmsub.node.engines.parallel import init_distributed
    from wmsub.node.engines.wan_i2v import WanI2VEngine
    verify = _verify_official()
    result = {"machine": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu", "torch": str(torch.__version__),
              "steps": args.steps, "frames": args.frames, "compare_area": args.compare_area,
              "shift": args.shift, "attention": args.attention}
    out = Path(args.out) if args.out else None

    def save():
        if out:
            out.write_text(json.dumps(result, indent=1, default=str) + "\n")

    ckpt = Path(args.ckpt)
    t = time.perf_counter()
    result["folder"] = write_folder_parts(ckpt, args.seed, args.small_t5)
    result["write_folder_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    experts = build_experts(args.seed)
    _sync()
    result["build_experts_s"] = round(time.perf_counter() - t, 1)
    result["expert_params"] = sum(p.numel() for p in experts[HIGH].parameters())
    _log(f"experts built ({result['expert_params'] / 1e9:.2f}B params each); loading ours")
    save()

    # T5 leaves the GPU after encoding on both sides (the same numbers; 11 GB more room)
    cfg = _cfg(ckpt, args.compare_area, args.steps, args.frames, "none", args.attention,
               args.shift, ("generate.offload_t5=true",))
    t = time.perf_counter()
    engine = WanI2VEngine(cfg, init_distributed(cfg.generate), experts=experts)
    result["ours_load_s"] = round(time.perf_counter() - t, 1)
    result["attention_kernel"] = engine.attention
    img = synthetic_frame()
    if not args.skip_compare:
        t = time.perf_counter()
        if DEVICE == "cuda":
            official = official_patched(ckpt, experts, _OffloadingT5(engine.text_encoder),
                                        device_id=0, rank=0, init_on_cpu=False)
        else:  # --tiny: WanI2V.__init__ needs CUDA
            official = official_i2v_sharing_modules(engine)
        result["official_load_s"] = round(time.perf_counter() - t, 1)
        install_attention(args.attention, DEVICE)
        _reset_peak()
        t = time.perf_counter()
        video_off, latent_off, result["official_s_per_step"], used, _ = run_official_i2v(
            official, img.copy(), cfg.generate, record=True)
        result["official_total_s"] = round(time.perf_counter() - t, 1)
        result["official_experts"] = used
        result["official_peak_gib"] = _peak_gib()
        if official.vae is not engine.vae:
            official.vae.model.cpu()
        del official
        _empty_cache()
        save()
        _log(f"official done in {result['official_total_s']}s; ours")
        _reset_peak()
        t = time.perf_counter()
        video = engine.sample(PROMPT, img.copy(), cfg.generate.seed)
        result["ours_total_s"] = round(time.perf_counter() - t, 1)
        result["ours_s_per_step"] = engine.last_timings["s_per_step"]
        result["ours_timings"] = engine.last_timings
        result["ours_experts"] = engine.last_experts
        result["ours_peak_gib"] = _peak_gib()
        result["video_shape"] = list(video.shape)
        result.update(verify.compare(engine.last_latent.cpu(), video, latent_off, video_off))
        result["equal"] = result["equal_latent"] and result["equal_video"]
        result["latent_absmax"] = float(engine.last_latent.abs().max())
        del video, video_off
        save()
        _log(f"equal={result['equal']}")
    result["fingerprint"] = json.loads(json.dumps(engine.fingerprint()))  # a copy: the fast path edits it

    # timings: exact, then fast; T5 off the GPU between encodings (same numbers)
    engine.gen.offload_t5 = True
    engine.text_encoder.model.cpu()
    engine._t5_on_device = False
    _empty_cache()
    timing = result.setdefault("timing", {})
    for variant, area in _timing_runs(args):
        if variant == "fast" and not result.get("fast_fingerprint"):
            engine.gen.exact = False
            engine.gen.fast_blocks = True
            engine.gen.compile = True
            engine.gen.attention = args.fast_attention
            engine.apply_fast_path()
            result["fast_fingerprint"] = engine.fingerprint()
        engine.gen.max_area = int(eval(area))  # "720*1280"
        engine.gen.sampling_steps = args.timing_steps
        _reset_peak()
        _log(f"timing {variant} {area}")
        try:
            row, _ = _timed_sample(engine, img.copy(), cfg.generate.seed)
        except torch.OutOfMemoryError as e:
            row = {"error": f"out of memory: {str(e)[:200]}"}
            _empty_cache()
        row["peak_gib"] = _peak_gib()
        timing[f"{variant}_{area}"] = row
        save()
    text = json.dumps(result, indent=1, default=str)
    print(text)
    save()
    return 0 if result.get("equal", True) else 1


def _timing_runs(args) -> list:
    """(variant, area) pairs to time, exact ones first (the fast path cannot be undone):
    --timings "exact@720*1280,fast@480*832", else every --timing-area for exact and fast."""
    if args.timings:
        runs = [tuple(item.split("@", 1)) for item in args.timings.split(",") if item]
    else:
        areas = [a for a in args.timing_area.split(",") if a]
        runs = [("exact", a) for a in areas
                if not (a == args.compare_area and not args.skip_compare
                        and args.timing_steps == args.steps)]
        runs += [] if args.skip_fast else [("fast", a) for a in areas]
    bad = [v for v, _ in runs if v not in ("exact", "fast")]
    if bad:
        raise SystemExit(f"--timings: unknown variant(s) {bad}: use exact@AREA or fast@AREA")
    return sorted(runs, key=lambda run: run[0] != "exact")


# ---- two GPUs -----------------------------------------------------------------------------

def main_two_gpu(args) -> int:
    import torch.distributed as dist

    from wmsub.node.engines.attention import install_attention
    from wmsub.node.engines.parallel import init_distributed, shutdown
    from wmsub.node.engines.wan_i2v import WanI2VEngine
    verify = _verify_official()
    rank = int(os.environ.get("RANK", "0"))
    if DEVICE == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    machine = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (gloo)"
    result = {"machine": f"2x {machine}", "steps": args.steps,
              "frames": args.frames, "area": args.compare_area, "shift": args.shift,
              "attention": args.attention}
    out = Path(args.out) if args.out else None

    def save():
        if out and rank == 0:
            out.write_text(json.dumps(result, indent=1, default=str) + "\n")

    ckpt = Path(args.ckpt)
    cfg = _cfg(ckpt, args.compare_area, args.steps, args.frames, "sp", args.attention, args.shift)
    ctx = init_distributed(cfg.generate)
    if rank == 0:
        result["folder"] = write_folder_parts(ckpt, args.seed, args.small_t5)
    dist.barrier()
    img = synthetic_frame()
    video_off = latent_off = None
    if args.official_in:  # the official sp's result from an --official-out process
        saved = torch.load(args.official_in)
        video_off, latent_off = saved.pop("video"), saved.pop("latent")
        result.update(saved)
    elif not args.skip_compare:
        # the official sp: its own T5 (FSDP-sharded from the file), its own expert copies
        t = time.perf_counter()
        official = official_patched(ckpt, build_experts(args.seed), None, device_id=rank,
                                    rank=rank, t5_fsdp=True, dit_fsdp=True, use_sp=True)
        result["official_load_s"] = round(time.perf_counter() - t, 1)
        install_attention(args.attention, DEVICE)
        t = time.perf_counter()
        video_off, latent_off, result["official_s_per_step"], _, _ = run_official_i2v(
            official, img.copy(), cfg.generate)
        result["official_total_s"] = round(time.perf_counter() - t, 1)
        del official
        _empty_cache()
        dist.barrier()
        save()
        _log("official sp done")
        if args.official_out:
            # a process of its own: the official's FSDP experts were not all freed by `del`
            # (on 2 H200s ours then ran out of memory building its experts)
            if rank == 0:
                torch.save({"video": video_off, "latent": latent_off,
                            **{k: v for k, v in result.items() if k.startswith("official")}},
                           args.official_out)
            dist.barrier()
            shutdown(ctx)
            return 0
    modes = {}
    for mode in args.modes.split(","):
        t = time.perf_counter()
        cfg.generate.parallel = mode
        cfg.generate.offload_t5 = mode != "sp"  # whole experts on each GPU: T5 leaves it
        ctx = _context(ctx, mode)
        try:
            engine = WanI2VEngine(cfg, ctx, experts=build_experts(args.seed))
            row = {"load_s": round(time.perf_counter() - t, 1)}
            _reset_peak()
            timed, video = _timed_sample(engine, img.copy(), cfg.generate.seed,
                                         decode=(mode == "sp"))
            row.update(timed, peak_gib=_peak_gib())
        except torch.OutOfMemoryError as e:  # cfg/dp hold both whole experts on each GPU
            row, engine, video = {"error": f"out of memory: {str(e)[:160]}"}, None, None
        if mode == "sp" and rank == 0 and latent_off is not None and video is not None:
            row.update(verify.compare(engine.last_latent.cpu(), video, latent_off, video_off))
        del video
        modes[f"{mode}_r{rank}"] = row
        all_rows = [None, None]
        dist.all_gather_object(all_rows, row)
        result.setdefault("modes", {})[mode] = all_rows
        del engine
        _empty_cache()
        dist.barrier()
        save()
        _log(f"{mode} done: {row.get('steady_s_per_step')}")
    result["equal"] = result.get("modes", {}).get("sp", [{}])[0].get("equal_latent")
    if rank == 0:
        print(json.dumps(result, indent=1, default=str))
    save()
    shutdown(ctx)
    return 0


def _context(ctx, mode):
    """The DistContext of `mode` on the already initialised world (parallel.py's rules)."""
    from dataclasses import replace
    if mode in ("sp", "cfg"):
        import torch.distributed as dist
        return replace(ctx, mode=mode, group_size=ctx.world_size, group_index=0, num_groups=1,
                       group=dist.group.WORLD, is_writer=ctx.rank == 0)
    if mode == "dp":
        return replace(ctx, mode="dp", group_size=1, group_index=ctx.rank,
                       num_groups=ctx.world_size, group=None, is_writer=True)
    raise ValueError(mode)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default="/tmp/wan22_i2v_a14b_random",
                        help="local folder for T5, VAE, tokenizer and the experts' config.json")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--shift", type=float, default=5.0,
                        help="5.0 (the default config): 3 steps use high, high, low")
    parser.add_argument("--compare-area", default="480*832")
    parser.add_argument("--timing-area", default="480*832,720*1280")
    parser.add_argument("--timing-steps", type=int, default=3)
    parser.add_argument("--timings", default="",
                        help='one GPU: what to time, e.g. "exact@720*1280,fast@480*832" '
                             "(default: exact and fast at each --timing-area)")
    parser.add_argument("--attention", default="cudnn", help="the kernel both sides use")
    parser.add_argument("--fast-attention", default="auto")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-fast", action="store_true")
    parser.add_argument("--two-gpu", action="store_true", help="under torchrun, 2 ranks")
    parser.add_argument("--modes", default="sp,cfg,dp", help="--two-gpu: modes to time")
    parser.add_argument("--official-out", default="",
                        help="--two-gpu: run the official sp only, save its result here")
    parser.add_argument("--official-in", default="",
                        help="--two-gpu: compare with this --official-out file, not a new run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="")
    parser.add_argument("--small-t5", action="store_true",
                        help="a tiny T5 instead of writing the real-size 11 GB one")
    parser.add_argument("--tiny", action="store_true",
                        help="a CPU dry run of this tool at tiny sizes (no official __init__)")
    args = parser.parse_args(argv)
    if args.tiny:
        global DEVICE
        DEVICE = "cpu"
        if args.two_gpu:
            args.skip_compare = True  # the official sp needs CUDA (WanI2V.__init__)
            return main_two_gpu(args)
        return main_one_gpu(args)
    if not torch.cuda.is_available():
        print(json.dumps({"error": "needs CUDA (WanI2V hard-codes cuda:N); on CPU run "
                                   "tests/unit/test_engine_i2v_official.py"}))
        return 2
    _verify_official().deterministic_cuda()
    return main_two_gpu(args) if args.two_gpu else main_one_gpu(args)


if __name__ == "__main__":
    sys.exit(main())
