"""The 2-GPU chunk job under NCCL: fidelity of sp and cfg, and per-job throughput.

    torchrun --nproc_per_node 2 tools/two_gpu.py --ckpt /local/disk/ckpt --skip-cfg --out sp.json
    torchrun --nproc_per_node 2 tools/two_gpu.py --ckpt /local/disk/ckpt --skip-sp --fast --out cfg.json

Two invocations: in one process, the cfg engine's load ran out of GPU memory after the
official and our sp models had been dropped (2x H100 80GB, 2026-11-25: not all their memory
came back), so each group of phases gets a process of its own.

Real-size random weights (written once into --ckpt, the two ranks share the writing), the
seed's settings at 704x1280x81, `--steps` denoising steps per video. Prints one JSON object
and rewrites --out after every phase:

1. `sp` fidelity: the official `wan.WanTI2V(t5_fsdp=True, dit_fsdp=True, use_sp=True)` (its
   own __init__ and generate, the seed's setup) against our engine with
   `generate.parallel=sp`, same image, prompt, seed and attention kernel: bitwise?
2. `cfg` fidelity: our engine with `parallel=cfg` (the two forwards on two ranks) against
   the same engine as `none` on one GPU (the single-GPU exact path): bitwise?
3. throughput of `sp`, `cfg` and `dp` (exact): seconds per stage of one video, s/step, and
   videos per hour per 2-GPU job with the steps scaled to --full-steps (50).
4. optional `dp` on the fast path (`--fast`; compile paid in a first video).

`--tiny` runs phases 2-4 on CPU with gloo (a smoke test of this script; the official class
cannot be built without CUDA). The failure run (one rank raising mid-video in the chunk
worker) is `python tools/two_gpu.py --failure`, a separate pair of processes; it prints
`hung`, the return codes, the chunk's bound (`bound_s`) and the measured `measured_s`.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from tools.verify_official import (PROMPT, compare, import_official_ti2v,  # noqa: E402
                                   run_official, synthetic_image)

SEED_S_PER_STEP = 1.44  # the seed: 2x H100 NVL, FSDP + Ulysses, 704x1280x81


def log(msg: str) -> None:
    print(f"[two_gpu r{os.environ.get('RANK', '0')} {time.strftime('%H:%M:%S')}] {msg}",
          file=sys.stderr, flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def no_random_init():
    """Skip torch.nn.init while the official class builds T5 on the CPU: its ~60 s of random
    init is overwritten by the strict load_state_dict that follows, value for value."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def write_checkpoint(ckpt: Path, rank: int, tiny: bool) -> dict:
    """Rank 0 writes DiT, VAE and tokenizer, rank 1 the T5 (the largest file) meanwhile."""
    from wmsub.dev.checkpoints import build_tiny_checkpoint, folder_bytes, write_real_size_parts
    t0 = time.perf_counter()
    done = ckpt / ".complete"
    if not done.exists():
        ckpt.mkdir(parents=True, exist_ok=True)
        if tiny:
            if rank == 0:
                build_tiny_checkpoint(ckpt, seed=0)
        elif rank == 0:
            write_real_size_parts(ckpt, ("dit", "vae", "tokenizer"), f"cuda:{rank}")
        else:
            write_real_size_parts(ckpt, ("t5",), f"cuda:{rank}")
        dist.barrier()
        if rank == 0:
            done.write_text("ok\n")
    dist.barrier()
    return {"write_s": round(time.perf_counter() - t0, 2), "bytes": folder_bytes(ckpt)}


def make_cfg(args, mode: str):
    from wmsub.config import load_config
    keys = {"model.checkpoint_dir": args.ckpt, "generate.parallel": mode,
            "generate.sampling_steps": args.steps, "generate.frame_num": args.frames,
            "generate.max_area": args.max_area, "generate.attention": args.attention,
            "generate.device": "cpu" if args.tiny else "cuda", "generate.offload_t5": "false",
            "generate.dist_timeout_s": 180}
    return load_config(None, [f"{k}={v}" for k, v in keys.items()])


def video_time(timings: dict, full_steps: int) -> dict:
    """One video's GPU stages, with the denoising scaled from `steps` to `full_steps`."""
    steps_s = timings["s_per_step"] * full_steps
    total = timings["text_s"] + timings["image_s"] + steps_s + timings["decode_s"]
    return {"s_per_step": round(timings["s_per_step"], 4), "text_s": round(timings["text_s"], 3),
            "image_s": round(timings["image_s"], 3), "decode_s": round(timings["decode_s"], 3),
            f"steps_{full_steps}_s": round(steps_s, 2), "video_s": round(total, 2)}


def sample(engine, img, seed):
    sync()
    t0 = time.perf_counter()
    video = engine.sample(PROMPT, img.copy(), seed=seed)
    sync()
    wall = time.perf_counter() - t0
    latent = engine.last_latent.detach().cpu() if engine.ctx.is_writer else None
    return video, latent, wall, dict(engine.last_timings)


def phase_official_sp(args, ctx, img):
    from wmsub.node.engines.checkpoint import ti2v_config
    from wmsub.node.engines.attention import install_attention
    WanTI2V = import_official_ti2v()
    t0 = time.perf_counter()
    with no_random_init():
        official = WanTI2V(ti2v_config(), str(args.ckpt), device_id=ctx.local_rank, rank=ctx.rank,
                           t5_fsdp=True, dit_fsdp=True, use_sp=True)
    install_attention(args.attention, "cuda")
    load_s = time.perf_counter() - t0
    cfg = make_cfg(args, "sp")
    video, latent, s_per_step = run_official(official, img.copy(), cfg.generate)
    del official
    free()
    return video, latent, {"load_s": round(load_s, 1), "s_per_step": s_per_step}


def phase_ours(args, mode, img):
    from wmsub.node.engines.parallel import init_distributed
    from wmsub.node.engines.wan_ti2v import load_engine
    cfg = make_cfg(args, mode)
    t0 = time.perf_counter()
    engine = load_engine(cfg, init_distributed(cfg.generate))
    load_s = time.perf_counter() - t0
    video, latent, wall, timings = sample(engine, img, cfg.generate.seed)
    return engine, video, latent, wall, timings, load_s


def as_mode(engine, mode: str, rank: int, world: int):
    """The loaded cfg engine as `none` (one GPU) or `dp` (every rank alone): the same
    unsharded modules, a context of one rank."""
    from wmsub.node.engines.parallel import DistContext
    engine.ctx = DistContext(rank, world, rank, engine.device, group_size=1, group_index=rank,
                             num_groups=world, group=None, control_group=None, is_writer=True,
                             mode=mode)
    engine.mode, engine.sp_size, engine._neg_cache = mode, 1, None
    return engine


def per_job(video_s: float, videos_at_once: int) -> float:
    return round(3600.0 * videos_at_once / video_s, 1)


def main_phases(args) -> dict:
    from wmsub.node.engines.parallel import init_distributed
    t_start = time.time()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    ctx = init_distributed(make_cfg(args, "sp").generate)
    rank, world = ctx.rank, ctx.world_size
    assert world == 2, f"run with 2 ranks (torchrun --nproc_per_node 2), got {world}"
    res = {"torch": str(torch.__version__), "steps": args.steps, "frames": args.frames,
           "max_area": args.max_area, "attention": args.attention,
           "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
           if torch.cuda.is_available() else ["cpu"], "seed_s_per_step": SEED_S_PER_STEP}

    def save():
        if rank == 0 and args.out:
            Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")

    res["checkpoint"] = write_checkpoint(Path(args.ckpt), rank, args.tiny)
    log(f"checkpoint {res['checkpoint']}")
    save()
    img = synthetic_image()
    full = args.full_steps

    # 1. sp: the official class against ours
    if not args.skip_sp:
        latent_off = video_off = None
        if not args.tiny:
            try:
                video_off, latent_off, res["official_sp"] = phase_official_sp(args, ctx, img)
            except Exception as e:  # noqa: BLE001 - keep the other phases' numbers
                res["official_sp"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
                free()
            log(f"official sp {res['official_sp']}")
            save()
            dist.barrier()
        sp_phase(args, img, rank, full, latent_off, video_off, res)
        save()
    if not args.skip_cfg:
        cfg_phases(args, img, rank, world, full, res, save, t_start)
    res["total_s"] = round(time.time() - t_start, 1)
    save()
    return res


def sp_phase(args, img, rank, full, latent_off, video_off, res):
    engine, video, latent, wall, timings, load_s = phase_ours(args, "sp", img)
    res["sp"] = {"load_s": round(load_s, 1), "wall_s": round(wall, 2),
                 **video_time(timings, full)}
    res["sp"]["videos_per_hour_per_job"] = per_job(res["sp"]["video_s"], 1)
    if rank == 0 and latent_off is not None:
        res["sp_vs_official"] = {**compare(latent, video, latent_off, video_off),
                                 "latent_absmax": float(latent.abs().max())}
    log(f"ours sp {res['sp']} {res.get('sp_vs_official')}")
    del engine, video, latent
    free()


def cfg_phases(args, img, rank, world, full, res, save, t_start):
    # 2. cfg against none, and 3. dp, on one load of the unsharded modules
    engine, video_cfg, latent_cfg, wall, timings, load_s = phase_ours(args, "cfg", img)
    res["cfg"] = {"load_s": round(load_s, 1), "wall_s": round(wall, 2),
                  **video_time(timings, full)}
    res["cfg"]["videos_per_hour_per_job"] = per_job(res["cfg"]["video_s"], 1)
    save()
    dist.barrier()
    if rank == 0:
        as_mode(engine, "none", rank, world)
        video_none, latent_none, wall, timings = sample(engine, img, 42)
        res["none"] = {"wall_s": round(wall, 2), **video_time(timings, full)}
        res["cfg_vs_none"] = compare(latent_cfg, video_cfg, latent_none, video_none)
        log(f"cfg vs none {res['cfg_vs_none']}")
        save()
    dist.barrier()
    as_mode(engine, "dp", rank, world)

    def dp_round(name):
        _, _, wall, timings = sample(engine, img, 42 + rank)
        both = [None, None]
        dist.all_gather_object(both, {"wall_s": wall, **video_time(timings, full)})
        slowest = max(b["video_s"] for b in both)
        res[name] = {"ranks": both, "videos_per_hour_per_job": per_job(slowest, 2)}
        log(f"{name} {res[name]}")
        save()

    dp_round("dp")
    want_fast = [args.fast and time.time() - t_start < args.fast_if_before_s]
    dist.broadcast_object_list(want_fast, src=0)
    if want_fast[0]:
        from wmsub.node.engines.attention import install_attention
        engine.gen.exact, engine.gen.fast_blocks, engine.gen.compile = False, True, not args.tiny
        engine.gen.attention = "auto"
        engine.gen.cache_negative_prompt = True
        install_attention("auto", engine.device)
        engine.apply_fast_path()
        res["dp_fast_speedups"] = engine.speedups
        dp_round("dp_fast_compiling")  # the first video of each size pays the compile
        dp_round("dp_fast")


def failure_run(args) -> dict:
    """One rank raises mid-video in the real chunk worker (2 processes, NCCL on GPU). The
    JSON says whether anything hung, each rank's return code, the chunk's stated bound
    (node.ranks.failure_bound_s) and the measured time from the failure to each rank's end."""
    from tests.helpers.desync_scenario import launch, outcome, prepare
    from wmsub.dev.checkpoints import build_tiny_checkpoint
    from wmsub.dev.synthetic import write_synthetic_benchmark
    tmp = Path(args.failure_dir)
    if tmp.exists():  # a previous run's folder would already hold the desync run
        import shutil
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ckpt = build_tiny_checkpoint(tmp / "tiny_ckpt", seed=0)
    bench = write_synthetic_benchmark(tmp / "bench", n=2, seed=0)
    device = "cpu" if args.tiny else "cuda"
    spec = prepare(tmp, bench, ckpt, device=device, timeout_s=args.failure_timeout_s,
                   attention=args.attention, stuck_rank=0 if args.failure_stuck else None)
    result = launch(spec, startup_s=args.failure_startup_s)
    logs = result.pop("logs")
    result.update(outcome(spec), device=device, dist_timeout_s=args.failure_timeout_s,
                  stuck_peer=args.failure_stuck, log_tails=[text[-1500:] for text in logs])
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default="/tmp/wmsub_two_gpu_ckpt")
    p.add_argument("--steps", type=int, default=4, help="denoising steps measured per video")
    p.add_argument("--full-steps", type=int, default=50, help="steps a real video has (scaling)")
    p.add_argument("--frames", type=int, default=81)
    p.add_argument("--max-area", default="704*1280")
    p.add_argument("--attention", default="flash", help="SDPA kernel of the exact runs (seed: flash)")
    p.add_argument("--fast", action="store_true", help="also dp on the fast path")
    p.add_argument("--fast-if-before-s", type=float, default=240.0,
                   help="skip the fast dp phase when the run is already this old")
    p.add_argument("--tiny", action="store_true", help="CPU + gloo at tiny sizes")
    p.add_argument("--skip-sp", action="store_true", help="without phase 1 and sp's throughput")
    p.add_argument("--skip-cfg", action="store_true", help="without phases 2-4")
    p.add_argument("--failure", action="store_true", help="the one-rank failure run instead")
    p.add_argument("--failure-dir", default="/tmp/wmsub_two_gpu_failure")
    p.add_argument("--failure-timeout-s", type=int, default=20,
                   help="generate.dist_timeout_s of the failure run")
    p.add_argument("--failure-startup-s", type=float, default=300,
                   help="how long the failure run may take to reach the failure")
    p.add_argument("--failure-stuck", action="store_true",
                   help="the peer blocks in a C call instead of waiting in a collective")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    if args.tiny:
        args.max_area, args.frames, args.steps = "64*96", 5, 3
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.failure:
        res = failure_run(args)
        text = json.dumps(res, indent=1, default=str)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    res = main_phases(args)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(res, indent=1, default=str))
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
