"""Throughput of the product path: `launch.py --local` on real instances, read back from
the chunk records the workers write (not from timers of this script).

    python -m bench.throughput --bench-root DIR [--config F] [--parallel sp|cfg|dp|none]
        [--instances N] [--steps S] [--gpus G] [--repeat R] [--ckpt DIR] [--work DIR]
        [--out FILE] [--tiny] [key=value ...]
    python -m bench.throughput --copy-from BENCH --size 1248x704,1312x672 --instances 4 --copy-only --bench-root DIR
    python -m bench.throughput --checkpoint-only [--ckpt DIR]

One launch = one chunk of the first N instances of DIR (a copy of a few real WorldModelBench
instances: worldmodelbench.json + images/) on G local ranks. `--repeat 2` launches the same
chunk again into a fresh output folder: the second launch is a later chunk, with the
compile cache (generate.compile_cache_dir, under --work/logs) warm. Without --ckpt a
real-size random-weight checkpoint is written once (on the GPUs) under --work.

Prints one JSON object (also written to --out):
  load_s                   process start -> engine ready, slowest rank (chunk record `starts`)
  load_parts_s             each part of that load (read_t5_s, read_dit_s, ...), slowest rank
  compile_s                per output size: the first video's denoising time minus a later
                           one's of the same size on the same rank (fast path: torch.compile)
  steady_s_per_video_per_rank   median time between consecutive finished videos of a rank,
                           leaving out each rank's first video and every first video of a size
  videos_per_hour_per_job, gpu_hours_for_350
  scaled_to_full_steps     the same with the denoising scaled to --full-steps when --steps is
                           smaller (steady + (full - steps) x s/step)
This is a benchmark: it asserts nothing about time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BENCHMARK_VIDEOS = 350


def log(msg: str) -> None:
    print(f"[throughput {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the checkpoint --------------------------------------------------------------------

def ensure_checkpoint(ckpt: Path, tiny: bool, gpus: int) -> dict:
    """A tiny one, or a real-size random one written once, split over two GPUs if there are."""
    from wmsub.dev.checkpoints import (COMPLETE, REAL_PARTS, build_tiny_checkpoint,
                                       folder_bytes, mark_complete, write_real_size_checkpoint)
    t0 = time.time()
    if (ckpt / COMPLETE).is_file():
        return write_real_size_checkpoint(ckpt)  # reads the marker
    if tiny:
        build_tiny_checkpoint(ckpt, seed=0)
        return mark_complete(ckpt, {"tiny": True, "write_s": round(time.time() - t0, 2)})
    splits = [["dit", "vae", "tokenizer"], ["t5"]] if gpus > 1 else [list(REAL_PARTS)]
    procs = []
    for gpu, parts in enumerate(splits):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "wmsub.dev.checkpoints", str(ckpt), "--real-size",
             "--parts", ",".join(parts)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True))
    timings = {}
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"writing the real-size checkpoint failed (exit {proc.returncode})")
        timings.update(json.loads(out.strip().splitlines()[-1]))
    timings.pop("checkpoint_dir", None)
    return mark_complete(ckpt, {**timings, "write_s": round(time.time() - t0, 2),
                                "bytes_written": folder_bytes(ckpt)})


# ---- the instances ------------------------------------------------------------------------

def copy_instances(src: Path, dst: Path, n: int, sizes: str = "") -> Path:
    """Up to `n` instances of each output size in `sizes` ("WxH,WxH"; all sizes: the first
    `n`) of the benchmark at `src`, copied with their images into `dst` (official format)."""
    import shutil

    from PIL import Image

    from wmsub.benchmark.manifest import read_entries
    from wmsub.benchmark.sizes import i2v_size
    from wmsub.config import GenerateConfig
    area = GenerateConfig().max_area
    wanted = [s for s in sizes.split(",") if s]
    chosen, per_size = [], {}
    for entry in read_entries(src / "worldmodelbench.json"):
        key = ""
        if wanted:
            with Image.open(src / entry["first_frame"]) as im:
                key = "%dx%d" % i2v_size(*im.size, area)
            if key not in wanted:
                continue
        if per_size.get(key, 0) < n:
            per_size[key] = per_size.get(key, 0) + 1
            chosen.append(entry)
    missing = [s for s in wanted if not per_size.get(s)] or ([] if chosen else ["any"])
    if missing:
        raise SystemExit(f"--copy-from {src}: no instance of output size {', '.join(missing)}")
    for entry in chosen:
        (dst / entry["first_frame"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / entry["first_frame"], dst / entry["first_frame"])
    (dst / "worldmodelbench.json").write_text(json.dumps(chosen, indent=1, ensure_ascii=False))
    return dst


# ---- one launch --------------------------------------------------------------------------

def launch_overrides(args, work: Path, ckpt: Path, index: int) -> list[str]:
    over = {"model.checkpoint_dir": ckpt, "bench.root": args.bench_root,
            "bench.limit": args.instances, "plan.chunks": 1, "slurm.gpus_per_job": args.gpus,
            "slurm.executor": "local", "run.logs_dir": work / "logs",
            "run.name": f"throughput-{index}", "output.dir": work / f"outputs-{index}"}
    if args.parallel:
        over["generate.parallel"] = args.parallel
    if args.steps:
        over["generate.sampling_steps"] = args.steps
    return [f"{k}={v}" for k, v in over.items()] + list(args.overrides)


def launch(args, work: Path, overrides: list[str], index: int) -> dict:
    """`launch.py --local` as a user runs it; its output goes to work/launch-<i>.log."""
    log_path = work / f"launch-{index}.log"
    cmd = [sys.executable, "launch.py", "--config", args.config, "--local", *overrides]
    t0 = time.time()
    with open(log_path, "w") as out:
        try:
            proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=args.timeout_s)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    return {"command": " ".join(cmd), "exit": code, "wall_s": round(time.time() - t0, 1),
            "log": str(log_path), "log_tail": log_path.read_text()[-1500:] if code != 0 else ""}


# ---- reading the chunk records -------------------------------------------------------------

def read_run(run_dir: Path) -> tuple:
    from wmsub.score.run_facts import chunk_records
    from wmsub.state.runs import RunFolder
    cfg = RunFolder(run_dir).load_config()
    records, _ = chunk_records(run_dir)
    return cfg, records


def load_summary(records: list[dict]) -> dict:
    """Process start -> engine ready of the slowest rank, with that rank's parts."""
    starts = [s for rec in records for s in rec.get("starts", [])]
    if not starts:
        return {}

    def total(s):
        return (s.get("process_age_at_run_s") or 0.0) + s.get("ready_after_s", 0.0)
    slowest = max(starts, key=total)
    parts = {k: round(v, 2) for k, v in slowest.items()
             if k.endswith("_s") and isinstance(v, (int, float))}
    return {"load_s": round(total(slowest), 2), "load_parts_s": parts,
            "ranks": len({s.get("rank") for s in starts})}


def by_rank(records: list[dict]) -> dict[int, list[dict]]:
    ranks: dict[int, list[dict]] = {}
    for rec in records:
        for video in rec.get("videos", []):
            ranks.setdefault(int(video.get("rank", 0)), []).append(video)
    for videos in ranks.values():
        videos.sort(key=lambda v: v["finished_at"])
    return ranks


def _first_of_size(videos: list[dict]) -> set[int]:
    seen, first = set(), set()
    for i, video in enumerate(videos):
        if video.get("size") not in seen:
            seen.add(video.get("size"))
            first.add(i)
    return first


def steady_seconds(videos: list[dict]) -> float | None:
    """Median gap between consecutive finished videos of one rank, leaving out the first
    video and each first video of a size (load and compile are counted elsewhere)."""
    first = _first_of_size(videos)
    gaps = [videos[i]["finished_at"] - videos[i - 1]["finished_at"]
            for i in range(1, len(videos)) if i not in first]
    return statistics.median(gaps) if gaps else None


def steady_seconds_per_step(ranks: dict[int, list[dict]]) -> list[float]:
    """s/step of the steady videos: the first video of each size on a rank pays the
    compile inside its steps, and counting it inflated the 50-step scaling (seen on H200:
    1.85 s/step reported for a fast path that steps at ~0.97)."""
    steady, every = [], []
    for videos in ranks.values():
        first = _first_of_size(videos)
        for i, v in enumerate(videos):
            if v.get("s_per_step"):
                every.append(v["s_per_step"])
                if i not in first:
                    steady.append(v["s_per_step"])
    return steady or every


def compile_seconds(ranks: dict[int, list[dict]]) -> dict:
    """Per size: first video's denoising seconds minus the median of the later ones."""
    per_size: dict[str, list[float]] = {}
    for videos in ranks.values():
        for size in {v.get("size") for v in videos}:
            same = [v for v in videos if v.get("size") == size and "steps_s" in v]
            if len(same) >= 2:
                later = statistics.median(v["steps_s"] for v in same[1:])
                per_size.setdefault(size, []).append(same[0]["steps_s"] - later)
    return {size: round(statistics.mean(vals), 2) for size, vals in per_size.items()}


def summarize_run(cfg, records: list[dict]) -> dict:
    ranks = by_rank(records)
    steady = {r: steady_seconds(v) for r, v in ranks.items()}
    known = [s for s in steady.values() if s is not None]
    sps = steady_seconds_per_step(ranks)
    first_video = min((v["finished_at"] for vs in ranks.values() for v in vs), default=None)
    started = min((rec.get("started_at", 0.0) for rec in records), default=None)
    return {
        **load_summary(records),
        "states": [rec.get("state") for rec in records],
        "videos": sum(len(v) for v in ranks.values()),
        "sizes": sorted({v.get("size") for vs in ranks.values() for v in vs}),
        "first_video_after_s": round(first_video - started, 2) if first_video and started else None,
        "compile_s": compile_seconds(ranks),
        "s_per_step": round(statistics.median(sps), 4) if sps else None,
        "steady_s_per_video_by_rank": {r: round(s, 2) if s else None for r, s in steady.items()},
        "steady_s_per_video_per_rank": round(statistics.median(known), 2) if known else None,
        "videos_per_hour_per_job": _per_hour(cfg, steady),
    }


def _per_hour(cfg, steady: dict) -> float | None:
    # dp: every rank makes its own videos; sp/cfg/none: one video at a time per job
    known = [s for s in steady.values() if s]
    if not known:
        return None
    if cfg.generate.parallel == "dp":
        return round(sum(3600.0 / s for s in known) * cfg.slurm.gpus_per_job / len(known), 1)
    return round(3600.0 / statistics.median(known), 1)


def headline(run: dict, cfg, steps: int, full_steps: int) -> dict:
    out = {k: run.get(k) for k in ("load_s", "load_parts_s", "compile_s", "s_per_step",
                                   "steady_s_per_video_per_rank", "videos_per_hour_per_job")}
    vph = run.get("videos_per_hour_per_job")
    out["gpu_hours_for_350"] = (round(BENCHMARK_VIDEOS / vph * cfg.slurm.gpus_per_job, 2)
                                if vph else None)
    if steps < full_steps and run.get("s_per_step") and run.get("steady_s_per_video_per_rank"):
        extra = (full_steps - steps) * run["s_per_step"]
        steady = run["steady_s_per_video_per_rank"] + extra
        groups = cfg.slurm.gpus_per_job if cfg.generate.parallel == "dp" else 1
        vph_full = 3600.0 * groups / steady
        out["scaled_to_full_steps"] = {
            "full_steps": full_steps, "steady_s_per_video_per_rank": round(steady, 2),
            "videos_per_hour_per_job": round(vph_full, 1),
            "gpu_hours_for_350": round(BENCHMARK_VIDEOS / vph_full * cfg.slurm.gpus_per_job, 2)}
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--bench-root", default="", help="worldmodelbench.json + images/ (a few instances)")
    p.add_argument("--copy-from", default="", help="make --bench-root (under --work) from this "
                   "benchmark: its first --instances instances of --size")
    p.add_argument("--size", default="", help="with --copy-from: up to --instances instances of "
                   "each of these output sizes, WxH[,WxH]")
    p.add_argument("--copy-only", action="store_true", help="with --copy-from: copy, run nothing")
    p.add_argument("--checkpoint-only", action="store_true", help="write the checkpoint, run nothing")
    p.add_argument("--config", default="configs/wan22_ti2v_5b.yaml")
    p.add_argument("--parallel", default="", help="generate.parallel (default: the config's)")
    p.add_argument("--instances", type=int, default=4, help="bench.limit: the first N instances")
    p.add_argument("--steps", type=int, default=0, help="generate.sampling_steps (0: the config's)")
    p.add_argument("--full-steps", type=int, default=50, help="steps of a real video, for scaling")
    p.add_argument("--gpus", type=int, default=2, help="slurm.gpus_per_job: local ranks")
    p.add_argument("--repeat", type=int, default=1, help="launches of the same chunk (2: a later chunk)")
    p.add_argument("--ckpt", default="", help="checkpoint folder (default: real-size random under --work)")
    p.add_argument("--work", default="/tmp/wmsub_throughput", help="logs, outputs, checkpoint")
    p.add_argument("--timeout-s", type=int, default=1800, help="per launch")
    p.add_argument("--tiny", action="store_true", help="a tiny checkpoint (CPU smoke runs)")
    p.add_argument("--out", default="")
    p.add_argument("overrides", nargs="*", help="more key=value config overrides")
    args = p.parse_args(argv)
    if not (args.bench_root or args.copy_from or args.checkpoint_only):
        p.error("give --bench-root DIR (or --copy-from DIR)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckpt = Path(args.ckpt).resolve() if args.ckpt else work / ("ckpt-tiny" if args.tiny else "ckpt")
    if args.copy_from:
        args.bench_root = str(copy_instances(Path(args.copy_from), Path(args.bench_root or work / "bench"),
                                             args.instances, args.size))
        if args.copy_only:
            print(json.dumps({"bench_root": args.bench_root}))
            return 0
    if args.checkpoint_only:
        print(json.dumps(ensure_checkpoint(ckpt, args.tiny, args.gpus)))
        return 0
    result = {"config": args.config, "parallel": args.parallel or "(config)", "gpus": args.gpus,
              "instances": args.instances, "bench_root": str(args.bench_root),
              "overrides": list(args.overrides), "runs": []}

    def emit():
        text = json.dumps(result, indent=1, default=str)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return text

    log(f"checkpoint {ckpt}")
    result["checkpoint"] = ensure_checkpoint(ckpt, args.tiny, args.gpus)
    cfg = None
    for index in range(args.repeat):
        overrides = launch_overrides(args, work, ckpt, index)
        log(f"launch {index}: {args.config} {' '.join(overrides)}")
        run = launch(args, work, overrides, index)
        run_dir = work / "logs" / f"throughput-{index}"
        if (run_dir / "config.yaml").is_file():
            cfg, records = read_run(run_dir)
            run.update(summarize_run(cfg, records))
        result["runs"].append(run)
        log(json.dumps({k: run.get(k) for k in ("exit", "wall_s", "load_s", "compile_s",
                                                "steady_s_per_video_per_rank")}, default=str))
        emit()
    if cfg is not None:
        steps = cfg.generate.sampling_steps
        result.update(parallel=cfg.generate.parallel, sampling_steps=steps,
                      exact=cfg.generate.exact, compile=cfg.generate.compile,
                      attention=_attention_used(cfg, work))
        if steps < args.full_steps:
            result["steps_note"] = (f"{steps} denoising steps per video, not {args.full_steps}: "
                                    "see scaled_to_full_steps")
        result.update(headline(result["runs"][0], cfg, steps, args.full_steps))
        if len(result["runs"]) > 1:
            result["later_chunk_compile_s"] = result["runs"][-1].get("compile_s")
            result["later_chunk_load_s"] = result["runs"][-1].get("load_s")
    print(emit())
    return 0 if all(r.get("exit") == 0 for r in result["runs"]) else 1


def _attention_used(cfg, work: Path):
    """The kernel the engine resolved, from a video's sidecar (OutputStore owns them)."""
    from wmsub.state.store import OutputStore
    store = OutputStore.for_config(cfg)
    for stem in sorted(store.listed_done()):
        record = store.read_record(stem) or {}
        return (record.get("engine") or {}).get("attention")
    return None


if __name__ == "__main__":
    sys.exit(main())
