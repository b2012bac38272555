"""`launch.py judge`: judge an existing run again, only where needed, then report.

After a broken judge environment is fixed, or to judge with other `judge.*` settings,
this submits the judge shards that are not complete and current (score/judge.shard_state:
no result, a failure, other judge settings, or videos that appeared since) and the report
after them. Generation is never touched. Login node: no torch.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from wmsub.config import Config, ConfigError, load_config
from wmsub.login import slurm_query as sq
from wmsub.score import judge
from wmsub.state.runs import RunFolder


@dataclass
class RejudgePlan:
    """What `launch.py judge` will submit for a run."""
    todo: dict[int, str] = field(default_factory=dict)  # shard index -> why it is judged again
    current: list[int] = field(default_factory=list)  # shards whose result is complete and current
    resharded: str | None = None  # where the old shard folders went when the shard count changed
    after: list[str] = field(default_factory=list)  # generation jobs of the run still queued


def judge_config(run: RunFolder, overrides: list[str]) -> Config:
    """The run's saved config with `judge.*` overrides applied, judge enabled.

    Any other key is refused: it would change what was generated, not how it is judged.
    """
    others = [o for o in overrides if not o.split("=", 1)[0].strip().startswith("judge.")]
    if others:
        raise ConfigError(
            f"launch.py judge takes judge.* overrides only; refused: {', '.join(others)} — fix: drop "
            "them (they change what was generated: start a new run with `python launch.py` instead)")
    cfg = load_config(run.path / "config.yaml", overrides)
    cfg.judge.enabled = True
    return cfg


def plan_rejudge(run: RunFolder, cfg: Config) -> RejudgePlan:
    """Decide the shards to judge; rewrites shards.json when the run has none or when
    judge.shards changed (the old shard folders are moved aside, never deleted)."""
    plan = RejudgePlan()
    record = run.load_plan()
    jdir = judge.judge_dir(run.path)
    shards = judge.read_shards_file(run.path) if judge.shards_path(run.path).is_file() else None
    if shards is None or len(shards["shards"]) != len(judge.shard_stems(record.stems, cfg.judge.shards)):
        if shards is not None:
            plan.resharded = str(_move_shards_aside(jdir))
        shards = judge.write_shards_file(run.path, cfg, record.stems, record.domains or None)
    for i in range(len(shards["shards"])):
        current, why = judge.shard_state(run.path, i, cfg, shards["video_dir"])
        if current:
            plan.current.append(i)
        else:
            plan.todo[i] = why
    plan.after = queued_generation_jobs(run)
    return plan


def _move_shards_aside(jdir: Path) -> Path:
    target = jdir / f"previous-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    target.mkdir(parents=True, exist_ok=True)
    for folder in sorted(jdir.glob("shard-*")):
        shutil.move(str(folder), target / folder.name)
    for name in ("shards.json", "results.json", "coverage.json"):
        if (jdir / name).exists():
            shutil.move(str(jdir / name), target / name)
    return target


def queued_generation_jobs(run: RunFolder) -> list[str]:
    """Generation jobs of the run still in the queue: the judge waits for them."""
    ids = [str(e["job_id"]) for e in run.jobs() if e.get("stage") == "gen" and e.get("job_id")
           and e.get("executor", "slurm") == "slurm"]
    if not ids:
        return []
    queue, error = sq.query_squeue(ids, all_states=False)
    return sorted({j.split("_")[0] for j in queue}) if error is None else []


def submit_rejudge(run: RunFolder, cfg: Config, plan: RejudgePlan) -> list[dict]:
    """Save the config (the judge jobs read it), then submit; returns the jobs.json entries."""
    from wmsub.login import submission
    run.save_config(cfg)
    after = ":".join(plan.after)
    return submission.submit_judge_and_report(cfg, run, after, shard_ids=sorted(plan.todo))


def describe(run: RunFolder, plan: RejudgePlan) -> str:
    lines = [f"run {run.name}: judge again {len(plan.todo)} shard(s), "
             f"{len(plan.current)} complete and current (kept)"]
    if plan.resharded:
        lines.append(f"  judge.shards changed: the old shard folders moved to {plan.resharded}")
    for i, why in sorted(plan.todo.items()):
        lines.append(f"  shard {i}: {why}")
    if plan.after:
        lines.append(f"  waits for generation job(s) {', '.join(plan.after)} (afterany)")
    return "\n".join(lines)
