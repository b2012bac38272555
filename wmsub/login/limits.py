"""The values a config may take: a range for every numeric key, and the rules between keys.

`config.load_config` checks types and choices; this module checks that the values make
sense for a run (a 0-minute time limit, -1 GB of memory, 350 one-video chunks), before
anything is submitted. tests/unit/test_preflight.py checks that every numeric key of
`Config` has a range here.
"""
from __future__ import annotations

from dataclasses import dataclass

from wmsub.config import Config, get_key
from wmsub.problems import Problem
from wmsub.state.runs import check_run_name


@dataclass(frozen=True)
class Range:
    """The sensible values of one numeric key."""
    low: float  # smallest allowed value
    high: float  # largest allowed value
    why: str  # what the bounds protect against, shown with the fix


MAX_GPUS_PER_NODE = 16  # a chunk is one node (nodes=1)

RANGES: dict[str, Range] = {
    "bench.limit": Range(0, 100_000, "0 means every instance"),
    "output.max_attempts": Range(1, 20, "attempts per instance before it is reported failed"),
    "output.claim_ttl_s": Range(60, 7 * 86400, "a live claim is refreshed every claim_ttl_s/4"),
    "generate.max_area": Range(32 * 32, 1920 * 1088, "the seed uses 704*1280; write it as a product"),
    "generate.frame_num": Range(1, 241, "4n+1 frames; the seed uses 81"),
    "generate.sampling_steps": Range(1, 1000, "the seed uses 50"),
    "generate.shift": Range(0.01, 100, "the seed uses 5.0"),
    "generate.guide_scale": Range(0, 50, "the seed uses 5.0; 1.0 means no guidance"),
    "generate.fps": Range(1, 120, "the seed uses 24"),
    "generate.seed": Range(0, 2**63 - 1, "a negative seed means a random one upstream: not reproducible"),
    "generate.dist_timeout_s": Range(10, 86400, "a dead peer ends the job after this long"),
    "plan.chunks": Range(0, 10_000, "0 derives the count from plan.target_chunk_minutes"),
    "plan.target_chunk_minutes": Range(1, 7 * 24 * 60, "how long one chunk job should run"),
    "plan.seconds_per_video": Range(0.1, 86400, "the seed took ~90 s per video"),
    "slurm.gpus_per_job": Range(1, MAX_GPUS_PER_NODE, "GPUs of one node"),
    "slurm.cpus_per_task": Range(1, 512, "CPUs of each rank"),
    "slurm.mem_gb": Range(1, 4096, "memory of one job in GB"),
    "slurm.time_min": Range(1, 30 * 24 * 60, "0 would mean no limit, which no timeout requeue can follow"),
    "slurm.array_parallelism": Range(1, 100_000, "chunks running at once"),
    "slurm.signal_delay_s": Range(1, 24 * 3600, "USR2 this long before the time limit"),
    "slurm.max_timeout_requeues": Range(0, 100, "timeout requeues per chunk"),
    "judge.shards": Range(1, 1000, "judge jobs, one GPU each"),
    "judge.time_min": Range(1, 30 * 24 * 60, "time limit of each judge job"),
    "judge.cpus": Range(1, 512, "CPUs of each judge job"),
    "judge.mem_gb": Range(1, 4096, "memory of each judge job in GB"),
}

SIGNAL_MIN_S = 30  # the worker's checkpoint releases claims and writes its record


def value_problems(cfg: Config) -> list[Problem]:
    """Every numeric key outside its range."""
    problems = []
    for key, r in RANGES.items():
        value = get_key(cfg, key)
        values = value if isinstance(value, list) else [value]  # a guide-scale pair
        if not all(r.low <= v <= r.high for v in values):
            problems.append(Problem(key, f"{key}={value!r} is outside {_fmt(r.low)}..{_fmt(r.high)}",
                                    f"set {key} within {_fmt(r.low)}..{_fmt(r.high)} ({r.why})"))
    return problems


def rule_problems(cfg: Config) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) between keys, and of the text keys that name things."""
    s, p, g = cfg.slurm, cfg.plan, cfg.generate
    problems, warnings = [], []
    limit_s = s.time_min * 60
    if s.time_min >= 1 and s.signal_delay_s >= limit_s:
        problems.append(Problem(
            "slurm.signal_delay_s", f"USR2 is due {s.signal_delay_s} s before a {s.time_min}-minute "
            "time limit, i.e. before the job starts", "make slurm.signal_delay_s shorter than "
            f"slurm.time_min*60={limit_s} s (the seed uses 120 s of a 240-minute limit)"))
    elif 1 <= s.signal_delay_s < SIGNAL_MIN_S:
        warnings.append(Problem(
            "slurm.signal_delay_s", f"{s.signal_delay_s} s may be too short for a chunk to release "
            "its claims and write its record before Slurm kills it", f"use at least {SIGNAL_MIN_S} s"))
    work_min = (limit_s - s.signal_delay_s) / 60
    if p.chunks == 0 and 0 < work_min < p.target_chunk_minutes:
        warnings.append(Problem(
            "plan.target_chunk_minutes", f"chunks are planned for ~{p.target_chunk_minutes:g} min but a "
            f"job works at most {work_min:.0f} min (slurm.time_min - slurm.signal_delay_s): every chunk "
            f"will time out and requeue (up to slurm.max_timeout_requeues={s.max_timeout_requeues})",
            "lower plan.target_chunk_minutes or raise slurm.time_min"))
    if g.parallel == "none" and s.gpus_per_job > 1:
        warnings.append(Problem(
            "generate.parallel", f"parallel=none uses one of the job's {s.gpus_per_job} GPUs; the "
            "others idle", "use parallel=sp, cfg or dp, or slurm.gpus_per_job=1"))
    for key in ("slurm.gpu_type", "judge.gpu_type"):
        value = get_key(cfg, key)
        if any(c in value for c in ":, \n"):
            problems.append(Problem(key, f"{key}={value!r} is not a GPU type name",
                                    "give the type alone, e.g. h100 (sinfo -o '%G' lists them)"))
    if cfg.run.name:
        why = check_run_name(cfg.run.name)
        if why:
            what, _, fix = why.partition(" — fix: ")
            problems.append(Problem("run.name", what, fix))
    return problems, warnings


def _fmt(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() else f"{x:g}"
