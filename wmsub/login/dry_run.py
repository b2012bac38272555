"""`launch.py --dry-run`: the run a launch would make and every sbatch script it would
submit, with the real run name and paths, creating nothing."""
from __future__ import annotations

from wmsub.config import Config
from wmsub.login import submission
from wmsub.state.runs import RunFolder, planned_run_path


def dry_run_text(cfg: Config, config_path: str, plan) -> str:
    run = RunFolder(planned_run_path(cfg, config_path).resolve())
    parts = [
        "",
        f"run:        {run.name} (dry run: nothing created, nothing submitted)",
        f"run folder: {run.path}",
        f"outputs:    {cfg.output.dir}",
        f"job logs:   {run.submitit_dir}/<job id>_<chunk>_<rank>_log.{{out,err}}",
        "job names:  " + ", ".join(submission.job_name(run.name, stage) for stage in
                                   (("gen", "judge", "report") if cfg.judge.enabled else ("gen",))),
        "",
        "# sbatch script for the generation array:",
        "",
        submission.sbatch_preview(cfg, run, len(plan.chunks)),
    ]
    if cfg.judge.enabled:
        from wmsub.score.judge import shard_stems
        record = plan.record()
        shards = shard_stems(record.stems, cfg.judge.shards, record.domains or None)
        parts += [f"# sbatch script for the judge array ({len(shards)} shard(s)); <gen job id> "
                  "is the generation array's id once submitted:", "",
                  submission.sbatch_preview(cfg, run, len(shards), "judge",
                                            "afterany:<gen job id>")]
        if cfg.judge.report:
            parts += ["# sbatch script for the report job:", "",
                      submission.sbatch_preview(cfg, run, 0, "report",
                                                "afterany:<judge job id>")]
    return "\n".join(parts)


def print_dry_run(cfg: Config, config_path: str, plan) -> None:
    print(dry_run_text(cfg, config_path, plan))
