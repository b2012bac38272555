"""Command line: `python launch.py [run] | plan | check | status | cancel | resubmit | report`.

Runs on a login node: nothing here imports torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wmsub.config import ConfigError, absolutize_paths, load_config

DEFAULT_CONFIG = "configs/wan22_ti2v_5b.yaml"
COMMANDS = ("run", "plan", "check", "status", "cancel", "resubmit", "report")

HELP = """\
wmsub: WorldModelBench video generation on Slurm.

  python launch.py [run] [--config FILE] [key=value ...] [--local] [--dry-run] [--wait]
  python launch.py plan [--config FILE] [key=value ...] [--json]
  python launch.py check [--config FILE] [key=value ...] [--json] [--local] [--on-node]
  python launch.py status [--run RUN] [--json] [--watch]
  python launch.py cancel [--run RUN]
  python launch.py resubmit [--run RUN] [--local] [--wait]
  python launch.py report [--run RUN | --results FILE] [--out DIR] [key=value ...]

Overrides are dotted config keys, e.g. bench.limit=10 output.dir=outputs generate.seed=42.
See README.md for every key.
"""


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"launch.py {command}", description=HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if command in ("run", "plan", "check", "report"):
        p.add_argument("--config", default=None,
                       help=f"YAML config (default {DEFAULT_CONFIG})")
        p.add_argument("overrides", nargs="*", help="key=value config overrides")
    if command in ("status", "cancel", "resubmit", "report"):
        p.add_argument("--run", default=None, help="run name or folder (default: the latest)")
        p.add_argument("--logs", default="logs", help="logs folder holding the runs")
    if command in ("run", "resubmit", "check"):
        p.add_argument("--local", action="store_true", help="run chunks with submitit's local executor")
        p.add_argument("--wait", action="store_true", help="wait until the generation jobs end")
    if command == "run":
        p.add_argument("--dry-run", action="store_true",
                       help="print the plan and the sbatch script; submit nothing")
    if command in ("plan", "status", "check"):
        p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    if command == "check":
        p.add_argument("--on-node", action="store_true",
                       help="also submit one short job shaped like a generation chunk and check the node")
        p.add_argument("--timeout", type=float, default=900.0,
                       help="--on-node: seconds to wait for the job (queue time included)")
    if command == "status":
        p.add_argument("--watch", action="store_true", help="refresh until the run ends")
        p.add_argument("--interval", type=float, default=5.0)
    if command == "report":
        p.add_argument("--results", default=None, help="an official results JSON file")
        p.add_argument("--out", default=None, help="report folder (default <run>/report)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(HELP)
        return 0
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "run"
    args = _parser(command).parse_intermixed_args(argv)  # flags may follow key=value pairs
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
    from wmsub.login.preflight import check_config, Context
    from wmsub.login.views import format_plan
    cfg, path = _load(args)
    values = check_config(cfg, Context(path))
    if values.problems:
        print("config refused:\n" + "\n".join(f"  - {p}" for p in values.problems), file=sys.stderr)
        return 1
    plan = _plan_or_exit(cfg)
    if plan is None:
        return 1
    print(json.dumps(plan.record().to_json()) if args.json else format_plan(plan, cfg))
    return 0


def _preflight(cfg, path, force_local: bool, resubmit: bool = False):
    """The checks `check` runs (login/preflight.py) but the benchmark's (the planner
    validates it); prints what they found."""
    from wmsub.login.preflight import run_checks
    report = run_checks(cfg, path, force_local=force_local, resubmit=resubmit, skip=("benchmark",))
    if report.problems:
        print(f"the setup was refused; nothing was submitted.\n{report.format(verbose=False)}",
              file=sys.stderr)
    elif report.warnings:
        print(report.format(verbose=False), file=sys.stderr)
    return report


ON_NODE_BLOCKERS = ("config", "executor", "paths", "slurm")


def cmd_check(args) -> int:
    from wmsub.login.preflight import run_checks
    cfg, path = _load(args)
    report = run_checks(cfg, path, force_local=args.local)
    # the node's own view is worth having even when the login node's differs (interpreter,
    # checkpoint, judge); a job that cannot be submitted as configured is not
    blocked = [r.name for r in report.results if r.problems and r.name in ON_NODE_BLOCKERS]
    blocked += [f"{r.name} ({r.skipped})" for r in report.results if r.name == "slurm" and r.skipped]
    if not args.json:
        print(f"checks of {path}:\n{report.format()}", flush=True)
        if args.on_node and blocked:
            print(f"--on-node: not submitted ({', '.join(blocked)}: the job cannot be submitted as set up)")
    on_node = None
    if args.on_node and not blocked:
        from wmsub.login.onnode import run_on_node_check
        on_node = run_on_node_check(cfg, timeout_s=args.timeout, echo=not args.json)
        if not args.json:
            print(on_node.format())
    ok = report.ok and (on_node is None or on_node.ok)
    if args.json:
        data = report.to_json()
        if on_node is not None:
            data["on_node"] = on_node.to_json()
        data["ok"] = ok
        print(json.dumps(data, indent=1))
    return 0 if ok else 1


def cmd_run(args) -> int:
    from wmsub.login import submission
    from wmsub.login.views import format_plan
    from wmsub.state.runs import create_run, discard_run, read_latest
    cfg, path = _load(args)
    report = _preflight(cfg, path, args.local)
    # the planner scans output.dir: one it cannot use is already reported
    plan = None if "output.dir" in {p.key for p in report.problems} else _plan_or_exit(cfg)
    if plan is not None:
        print(format_plan(plan, cfg))
        if args.dry_run:
            _print_dry_run(cfg, plan)
    if plan is None or not report.ok:
        return 1
    if args.dry_run:
        return 0
    if not plan.chunks:
        print("nothing to generate: every instance is done (or failed too often; see plan).")
        return 0
    kind = submission.executor_kind(cfg, args.local)
    latest = read_latest(cfg.run.logs_dir)
    fresh = not (cfg.run.name and (Path(cfg.run.logs_dir) / cfg.run.name).exists())
    run = create_run(cfg, path)
    try:
        run.save_plan(plan.record())
        workers = submission.chunk_workers(run, plan)
        entry, jobs = submission.submit_generation(cfg, run, workers, kind)
    except Exception as e:  # noqa: BLE001 - sbatch refused: leave no trace of the run
        discard_run(run, latest, remove_folder=fresh)
        print(f"submission failed; nothing was submitted ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
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


def _print_dry_run(cfg, plan) -> None:
    from wmsub.login import submission
    from wmsub.state.runs import RunFolder
    run = RunFolder(Path(cfg.run.logs_dir).resolve() / "DRY-RUN")
    print("\n# sbatch script for the generation array:\n")
    print(submission.sbatch_preview(cfg, run, len(plan.chunks)))
    if cfg.judge.enabled:
        print("\n# sbatch script for the judge array (after the generation array, afterany):\n")
        print(submission.sbatch_preview(cfg, run, cfg.judge.shards, "judge"))
        if cfg.judge.report:
            print("\n# sbatch script for the report job (after the judge array, afterany):\n")
            print(submission.sbatch_preview(cfg, run, 1, "report"))


def cmd_resubmit(args) -> int:
    from wmsub.login import submission
    from wmsub.state.runs import find_run
    run = find_run(args.logs, args.run)
    cfg = run.load_config()
    if not _preflight(cfg, str(run.path / "config.yaml"), args.local, resubmit=True).ok:
        return 1
    workers = submission.resubmit_workers(run, cfg)
    if not workers:
        print(f"run {run.name}: nothing missing or failed; nothing submitted")
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
    from wmsub.score.report import ReportDependencyError, require_report_modules, write_report
    from wmsub.state.runs import find_run
    try:
        require_report_modules()
    except ReportDependencyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.results:
        out = Path(args.out or "report")
        cfg = load_config(args.config, args.overrides) if (args.config or args.overrides) else None
        path = write_report(None, Path(args.results), out, cfg=cfg)
    else:
        run = find_run(args.logs, args.run)
        path = write_report(run.path, None, Path(args.out) if args.out else run.path / "report")
    print(f"report written: {path}")
    return 0
