"""Command line: `python launch.py [run] | plan | status | cancel | resubmit | report`.

Runs on a login node: nothing here imports torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wmsub.config import ConfigError, absolutize_paths, load_config

DEFAULT_CONFIG = "configs/wan22_ti2v_5b.yaml"
COMMANDS = ("run", "plan", "status", "cancel", "resubmit", "report", "judge", "compare")

HELP = """\
wmsub: WorldModelBench video generation on Slurm.

  python launch.py [run] [--config FILE] [key=value ...] [--local] [--dry-run] [--wait]
  python launch.py plan [--config FILE] [key=value ...] [--json]
  python launch.py status [--run RUN] [--json] [--watch]
  python launch.py cancel [--run RUN]
  python launch.py resubmit [--run RUN] [--local] [--wait]
  python launch.py report [--run RUN | --results FILE] [--out DIR] [key=value ...]
  python launch.py judge [--run RUN] [--dry-run] [judge.key=value ...]
  python launch.py compare A B [--out DIR] [--config FILE] [key=value ...]

Overrides are dotted config keys, e.g. bench.limit=10 output.dir=outputs generate.seed=42.
See README.md for every key.
"""


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"launch.py {command}", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if command in ("run", "plan", "report"):
        p.add_argument("--config", default=None,
                       help=f"YAML config (default {DEFAULT_CONFIG})")
        p.add_argument("overrides", nargs="*", help="key=value config overrides")
    if command in ("status", "cancel", "resubmit", "report"):
        p.add_argument("--run", default=None, help="run name or folder (default: the latest)")
        p.add_argument("--logs", default="logs", help="logs folder holding the runs")
    if command in ("run", "resubmit"):
        p.add_argument("--local", action="store_true", help="run chunks with submitit's local executor")
        p.add_argument("--wait", action="store_true", help="wait until the generation jobs end")
    if command == "run":
        p.add_argument("--dry-run", action="store_true",
                       help="print the plan and the sbatch script; submit nothing")
    if command in ("plan", "status"):
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    if command == "status":
        p.add_argument("--watch", action="store_true", help="refresh until the run ends")
        p.add_argument("--interval", type=float, default=5.0)
    if command == "report":
        p.add_argument("--results", default=None, help="an official results JSON file")
        p.add_argument("--out", default=None, help="report folder (default <run>/report)")
    if command == "judge":
        _judge_arguments(p)
    if command == "compare":
        _compare_arguments(p)
    return p


JUDGE_HELP = "judge an existing run again where needed (failed, missing, stale shards), then report"
COMPARE_HELP = "B minus A (runs or results files): paired-bootstrap intervals, flipped verdicts"


def _judge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="run name or folder (default: the latest)")
    p.add_argument("--logs", default="logs", help="logs folder holding the runs")
    p.add_argument("--dry-run", action="store_true", help="say which shards would be judged; submit nothing")
    p.add_argument("overrides", nargs="*", help="judge.key=value overrides (judge.* only)")


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run A: a run name or folder, or a results JSON file")
    p.add_argument("b", help="run B (the difference is B minus A)")
    p.add_argument("--out", default="compare", help="output folder (default ./compare)")
    p.add_argument("--logs", default="logs", help="logs folder holding the runs")
    p.add_argument("--config", default=None, help="YAML config giving bench.root (prompts, domains)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. bench.root=...")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(HELP)
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    args = _parser(command).parse_args(argv)
    try:
        return globals()[f"cmd_{command}"](args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _load(args):
    path = args.config or DEFAULT_CONFIG
    return absolutize_paths(load_config(path, args.overrides)), path


def _plan_or_exit(cfg):
    from wmsub.benchmark.manifest import ManifestError
    from wmsub.login.planner import build_plan
    from wmsub.state.store import SettingsMismatch
    try:
        return build_plan(cfg)
    except ManifestError as e:
        print(f"benchmark validation failed; nothing was submitted.\n{e}", file=sys.stderr)
    except SettingsMismatch as e:
        print(f"output folder refused; nothing was submitted.\n{e}", file=sys.stderr)
    return None


def cmd_plan(args) -> int:
    from wmsub.login.views import format_plan
    cfg, _ = _load(args)
    plan = _plan_or_exit(cfg)
    if plan is None:
        return 1
    print(json.dumps(plan.record().to_json()) if args.json else format_plan(plan, cfg))
    return 0


def cmd_run(args) -> int:
    from wmsub.login import submission
    from wmsub.login.views import format_plan
    from wmsub.state.runs import create_run, RunFolder
    cfg, path = _load(args)
    plan = _plan_or_exit(cfg)
    if plan is None:
        return 1
    print(format_plan(plan, cfg))
    if cfg.judge.enabled:
        from wmsub.score.judge import JudgeError, check_judge_setup
        try:
            check_judge_setup(cfg, Path(path))
        except JudgeError as e:
            print(f"judge stage refused; nothing was submitted.\n{e}", file=sys.stderr)
            return 1
    if args.dry_run:
        run = RunFolder(Path(cfg.run.logs_dir).resolve() / "DRY-RUN")
        print("\n# sbatch script for the generation array:\n")
        print(submission.sbatch_preview(cfg, run, len(plan.chunks)))
        return 0
    if not plan.chunks:
        print("nothing to generate: every instance is done (or failed too often; see plan).")
        return 0
    run = create_run(cfg, path)
    run.save_plan(plan.record())
    kind = submission.executor_kind(cfg, args.local)
    workers = submission.chunk_workers(run, plan)
    entry, jobs = submission.submit_generation(cfg, run, workers, kind)
    print(f"\nrun {run.name}: {len(workers)} chunk(s) submitted ({kind}), job {entry['job_id']}")
    if cfg.judge.enabled and kind == "slurm":
        for e in submission.submit_judge_and_report(cfg, run, entry["job_id"]):
            print(f"  {e['stage']} job {e['job_id']} (after the previous stage, afterany)")
    print(f"run folder: {run.path}\nwatch it:   python launch.py status --run {run.name}")
    if kind == "slurm":
        print(f"or:         squeue -j {entry['job_id']} -r")
    if args.wait or kind == "local":
        return _wait(run, jobs, kind)
    return 0


def cmd_resubmit(args) -> int:
    from wmsub.login import submission
    from wmsub.state.runs import find_run
    run = find_run(args.logs, args.run)
    cfg = run.load_config()
    workers = submission.resubmit_workers(run, cfg)
    if not workers:
        print(f"run {run.name}: nothing missing or failed; nothing submitted "
              f"(to judge it again: python launch.py judge --run {run.name})")
        return 0
    kind = submission.executor_kind(cfg, args.local)
    entry, jobs = submission.submit_generation(cfg, run, workers, kind)
    n = sum(len(w.instances) for w in workers)
    print(f"run {run.name}: resubmitted {n} instance(s) in {len(workers)} chunk(s), job {entry['job_id']}")
    if cfg.judge.enabled and kind == "slurm":
        submission.submit_judge_and_report(cfg, run, entry["job_id"])
    return _wait(run, jobs, kind) if args.wait or kind == "local" else 0


def _wait(run, jobs, kind: str) -> int:
    """Wait for the generation jobs, then show the run (local runs always wait: their
    processes belong to this session)."""
    from wmsub.login import submission
    from wmsub.login.monitor import collect_status
    from wmsub.login.views import render_status
    print("waiting for the generation jobs ...", flush=True)
    submission.wait_for_jobs(jobs, kind)
    status = collect_status(run.path)
    print(render_status(status))
    totals = status.get("totals", {})
    return 0 if totals.get("done") == totals.get("total") else 1


def cmd_status(args) -> int:
    from wmsub.login.monitor import collect_status
    from wmsub.login.views import render_status, watch
    from wmsub.state.runs import find_run
    run = find_run(args.logs, args.run)
    if args.watch:
        watch(run.path, interval_s=args.interval)
        return 0
    status = collect_status(run.path)
    print(json.dumps(status, indent=1) if args.json else render_status(status))
    return 0


def cmd_cancel(args) -> int:
    from wmsub.login.submission import cancel_run
    from wmsub.state.runs import find_run
    run = find_run(args.logs, args.run)
    result = cancel_run(run.path)
    print(json.dumps(result, indent=1))
    return 0


def cmd_report(args) -> int:
    from wmsub.score.report import write_report
    from wmsub.state.runs import find_run
    if args.results:
        out = Path(args.out or "report")
        cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else None
        path = write_report(None, Path(args.results), out, cfg=cfg)
    else:
        run = find_run(args.logs, args.run)
        path = write_report(run.path, None, Path(args.out) if args.out else run.path / "report")
    print(f"report written: {path}")
    return 0


def _judge_preflight(cfg, config_path: Path) -> str | None:
    """The pre-submit checks of the judge stage; the problem text, or None."""
    from wmsub.score.judge import JudgeError, check_judge_setup
    try:
        check_judge_setup(cfg, config_path)
    except JudgeError as e:
        return str(e)
    return None


def cmd_judge(args) -> int:
    """Judge an existing run again where needed (failed, missing, stale shards), then report."""
    from wmsub.login import rejudge, submission
    from wmsub.state.runs import find_run
    run = find_run(args.logs, args.run)
    cfg = rejudge.judge_config(run, args.overrides)
    problem = _judge_preflight(cfg, run.path / "config.yaml")
    if problem:
        print(f"judge stage refused; nothing was submitted.\n{problem}", file=sys.stderr)
        return 1
    if not args.dry_run and submission.executor_kind(cfg) != "slurm":
        print("launch.py judge submits Slurm jobs: `sbatch` is not on PATH here", file=sys.stderr)
        return 1
    plan = rejudge.plan_rejudge(run, cfg)
    print(rejudge.describe(run, plan))
    if args.dry_run:
        return 0
    for e in rejudge.submit_rejudge(run, cfg, plan):
        tasks = f" (tasks {', '.join(e['tasks'].values())})" if e["tasks"] else ""
        print(f"  {e['stage']} job {e['job_id']}{tasks}")
    print(f"watch it: python launch.py status --run {run.name}")
    return 0


def cmd_compare(args) -> int:
    """Compare two runs (or results files) on their common instances."""
    from wmsub.score.compare import compare, resolve_side
    cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else None
    a, b = resolve_side(args.a, args.logs), resolve_side(args.b, args.logs)
    out = compare(a, b, Path(args.out), cfg=cfg)
    print(f"compare written: {out / 'compare.md'} (also compare.html, compare.json)")
    return 0
