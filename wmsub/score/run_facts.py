"""What a run did and cost, read from its files alone (no sacct): the report's
generation, judge and settings sections.

Sources: the chunk progress records (`<run>/chunks/*.json`: videos, timings,
requeues), the output folder's `.wmsub/settings.json` and sidecar records (through
`OutputStore`: fingerprint, settings, the engine that made each video) and the judge
shards' `status.json`.
"""
from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from wmsub.config import Config
from wmsub.score.judge import shard_dir, shards_path
from wmsub.state.jsonio import read_json_object
from wmsub.state.runs import RunFolder
from wmsub.state.store import OutputStore


# printed by wmsub/dev/standin_judge (tests, `make demo`): its scores must say so
STANDIN_MARK = "STAND-IN for the VILA judge"
STANDIN_NOTE = ("judged by the STAND-IN for the VILA judge (wmsub/dev/standin_judge, for tests and "
                "`make demo`): its verdicts come from a hash of each stem; these are not real scores")


def chunk_records(run_dir: Path) -> tuple[list[dict], list[str]]:
    """(readable records, names of unreadable ones)."""
    records, unreadable = [], []
    for path in sorted(RunFolder(Path(run_dir)).chunks_dir.glob("*.json")):
        data = read_json_object(path)
        (records.append(data) if data is not None else unreadable.append(path.name))
    return records, unreadable


def generation_stats(run_dir: Path, cfg: Config | None) -> dict:
    """Numbers from the workers' progress records; tolerates missing and unreadable
    records (counted in `unreadable_records`)."""
    records, unreadable = chunk_records(run_dir)
    done, failed, seconds, steps = set(), {}, {}, []
    wall_s = 0.0
    for r in records:
        done.update(r.get("done") or [])
        failed.update(r.get("failed") or {})
        for v in r.get("videos") or []:
            if v.get("stem") is not None and v.get("seconds") is not None:
                seconds[v["stem"]] = float(v["seconds"])
                if v.get("s_per_step"):
                    steps.append(float(v["s_per_step"]))
        if r.get("started_at") and r.get("updated_at"):
            wall_s += max(0.0, float(r["updated_at"]) - float(r["started_at"]))
    gpus = cfg.slurm.gpus_per_job if cfg else None
    per_video = list(seconds.values())
    states = Counter(r.get("state", "unknown") for r in records)
    return {
        "chunk_records": len(records), "unreadable_records": unreadable, "chunk_states": dict(states),
        "videos": len(done), "failures": len([s for s in failed if s not in done]),
        "failed": {s: why for s, why in failed.items() if s not in done},
        "timed_videos": len(per_video),
        "seconds_per_video_mean": statistics.fmean(per_video) if per_video else None,
        "seconds_per_video_median": statistics.median(per_video) if per_video else None,
        "seconds_per_step_mean": statistics.fmean(steps) if steps else None,
        "gpus_per_job": gpus,
        # generating time only (excludes model loading and waiting) vs chunk wall time
        "gpu_hours_generating": sum(per_video) * gpus / 3600 if gpus else None,
        "gpu_hours_chunk_wall": wall_s * gpus / 3600 if gpus else None,
        "requeues": sum(int(r.get("restarts") or 0) for r in records),
        "timeouts": sum(int(r.get("timeouts") or 0) for r in records),
        "preemptions": sum(int(r.get("preemptions") or 0) for r in records),
        "adopted": adopted_videos(run_dir, cfg),
    }


def adopted_videos(run_dir: Path, cfg: Config | None) -> int:
    """How many of the run's videos `launch.py adopt` took in (made elsewhere)."""
    if cfg is None:
        return 0
    run = RunFolder(run_dir)
    store = OutputStore.for_config(cfg, run.output_dir(cfg))
    return len(store.listed_adopted() & set(run.load_plan().stems))


def judge_stats(run_dir: Path) -> dict | None:
    """Per-shard numbers from `judge/shard-*/status.json` (one GPU per shard)."""
    shards_file = read_json_object(shards_path(run_dir))
    if shards_file is None:
        return None
    n_shards = len(shards_file.get("shards") or [])
    statuses = [st for i in range(n_shards)
                if (st := read_json_object(shard_dir(run_dir, i) / "status.json")) is not None]
    seconds = sum(float(st.get("seconds") or 0.0) for st in statuses)
    settings = [st["judge"] for st in statuses if st.get("judge")]
    logs = [shard_dir(run_dir, i) / "judge.log" for i in range(n_shards)]
    return {"shards": n_shards,
            "standin": any(p.is_file() and STANDIN_MARK in p.read_text(errors="replace") for p in logs),
            "shards_with_result": sum((shard_dir(run_dir, i) / "result.json").is_file() for i in range(n_shards)),
            "judge_seconds": seconds, "gpu_hours": seconds / 3600,
            "settings": settings[0] if settings and all(s == settings[0] for s in settings) else settings,
            "not_in_judge_list": sorted({s for st in statuses for s in st.get("not_in_judge_list", [])})}


def engines(store: OutputStore, stems) -> list[dict]:
    """The distinct engine fingerprints of the sidecars of `stems`, with how many videos
    each made (more than one: the videos were not all made alike, e.g. other GPUs)."""
    seen: Counter = Counter()
    for stem in stems:
        record = store.read_record(stem)
        if record and isinstance(record.get("engine"), dict):
            seen[json.dumps(record["engine"], sort_keys=True)] += 1
    return [{**json.loads(key), "videos": n} for key, n in seen.most_common()]


def run_settings(run_dir: Path, cfg: Config, generation: dict, judging: dict | None) -> dict:
    """The generation settings and the run's cost, for the report's `settings`."""
    run = RunFolder(run_dir)
    store = OutputStore.for_config(cfg, run.output_dir(cfg))
    saved = store.saved_settings() or {}
    plan = run.load_plan()
    made_by = engines(store, plan.stems or sorted(store.listed_done()))
    g = cfg.generate

    def engine_values(key: str) -> list:
        return sorted({str(e.get(key)) for e in made_by if e.get(key) is not None})

    chunk_jobs = len(plan.chunks)
    return {
        "engine": cfg.model.engine,
        "fingerprint": saved.get("fingerprint") or plan.fingerprint or None,
        "settings": saved.get("settings"),
        "mode": "exact" if g.exact else "fast",
        "attention": {"configured": g.attention, "used": engine_values("attention")},
        "parallel": {"configured": g.parallel, "used": engine_values("parallel")},
        "gpu_type": engine_values("gpu") or engine_values("device"),
        "gpus_per_job": cfg.slurm.gpus_per_job,
        "chunk_jobs": chunk_jobs,
        "gpus_total": cfg.slurm.gpus_per_job * chunk_jobs,
        "gpu_hours_generating": generation.get("gpu_hours_generating"),
        "gpu_hours_chunk_wall": generation.get("gpu_hours_chunk_wall"),
        "gpu_hours_judge": judging.get("gpu_hours") if judging else None,
        "requeues": generation.get("requeues"),
        "timeouts": generation.get("timeouts"),
        "preemptions": generation.get("preemptions"),
        "engines": made_by,
        "selection": selection(cfg),
    }


def selection(cfg: Config | None) -> list[str]:
    """The bench.* filters that made the run a subset, as key=value texts."""
    if cfg is None:
        return []
    b = cfg.bench
    out = [f"bench.limit={b.limit}"] if b.limit else []
    if b.stems:
        shown = ",".join(b.stems[:3]) + (f",... ({len(b.stems)} stems)" if len(b.stems) > 3 else "")
        out.append(f"bench.stems={shown}")
    if b.domains:
        out.append(f"bench.domains={','.join(b.domains)}")
    return out
