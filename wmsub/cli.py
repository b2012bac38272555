"""Command line: `python launch.py [COMMAND] ...`; COMMANDS below lists them.

Runs on a login node: nothing here imports torch.

Adding a command is one COMMANDS entry (its one-line help and a function adding its
arguments) plus one `cmd_<name>(args) -> int` function.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wmsub import CHECKOUT
from wmsub.config import ConfigError, absolutize_paths, load_config

DEFAULT_CONFIG = "configs/wan22_ti2v_5b.yaml"
DEFAULT_LOGS = "logs"
EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer killed by SIGPIPE (128 + 13)

INTRO = """\
wmsub: WorldModelBench video generation on Slurm.

COMMAND defaults to `run`. `python launch.py COMMAND --help` shows one command's options.
Overrides are dotted config keys, e.g. bench.limit=10 output.dir=outputs generate.seed=42;
README.md lists every key."""


# ---- shared argument groups ---------------------------------------------------------------

def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help=f"YAML config (default {DEFAULT_CONFIG}, or the config of the engine "
                        "a model.engine= override names; a relative path not found here is "
                        "looked up in the checkout)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="run name or folder (default: the latest)")
    p.add_argument("--logs", default=DEFAULT_LOGS,
                   help="folder holding the runs (default logs/ here, else the checkout's)")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _submit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local", action="store_true", help="run chunks with submitit's local executor")
    p.add_argument("--wait", action="store_true",
                   help="wait until every job of the run has ended, then show the status and "
                        "the report's path and total score")


def _run_arguments(p):
    add_config_args(p)
    _submit_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan and the sbatch scripts of every stage; submit nothing, "
                        "create nothing")


def _plan_arguments(p):
    add_config_args(p)
    add_json_arg(p)


def _check_arguments(p):
    add_config_args(p)
    add_json_arg(p)
    p.add_argument("--local", action="store_true",
                   help="check for a run with submitit's local executor (no sbatch needed)")
    p.add_argument("--on-node", action="store_true",
                   help="also submit one short job shaped like a generation chunk and check the node")
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                   help="--on-node: seconds to wait for the job (queue time included)")


def _status_arguments(p):
    add_run_args(p)
    add_json_arg(p)
    p.add_argument("--watch", action="store_true",
                   help="a live table, refreshed in place until every job of the run has ended")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between refreshes with --watch (default 5)")


def _cancel_arguments(p):
    add_run_args(p)
    add_json_arg(p)
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (asked only when --run is not given and "
                        "stdin is a terminal)")


def _resubmit_arguments(p):
    add_run_args(p)
    _submit_args(p)


def _report_arguments(p):
    add_run_args(p)
    p.add_argument("--results", default=None, help="an official results JSON file")
    p.add_argument("--out", default=None, help="report folder (default <run>/report)")
    add_config_args(p)


def _runs_arguments(p):
    p.add_argument("--logs", default=DEFAULT_LOGS,
                   help="folder holding the runs (default logs/ here, else the checkout's)")
    add_json_arg(p)


def _logs_arguments(p):
    add_run_args(p)
    p.add_argument("--chunk", type=int, default=None,
                   help="chunk index (default: the first running chunk, else the first that failed, else 0)")
    p.add_argument("--rank", type=int, default=0, help="rank (task) within the chunk's job (default 0)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing what is appended until the job ends (or Ctrl-C)")


JUDGE_HELP = "judge an existing run again where needed (failed, missing, stale shards), then report"
COMPARE_HELP = "B minus A (runs or results files): paired-bootstrap intervals, flipped verdicts"


def _judge_arguments(p: argparse.ArgumentParser) -> None:
    add_run_args(p)
    p.add_argument("--dry-run", action="store_true", help="say which shards would be judged; submit nothing")
    p.add_argument("overrides", nargs="*", help="judge.key=value overrides (judge.* only)")


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run A: a run name or folder, or a results JSON file")
    p.add_argument("b", help="run B (the difference is B minus A)")
    p.add_argument("--out", default="compare", help="output folder (default ./compare)")
    p.add_argument("--logs", default=DEFAULT_LOGS,
                   help="folder holding the runs (default logs/ here, else the checkout's)")
    p.add_argument("--config", default=None, help="YAML config giving bench.root (prompts, domains)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. bench.root=...")


def _adopt_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--from", dest="source", default=None, metavar="DIR",
                   help="a folder of <stem>.mp4 made elsewhere, copied in when valid "
                        "(default: the mp4s without a sidecar already in output.dir)")


@dataclass(frozen=True)
class Command:
    help: str                                              # one line: the command list and its --help
    add_arguments: Callable[[argparse.ArgumentParser], None]  # adds the command's own arguments


COMMANDS: dict[str, Command] = {
    "run": Command("validate, plan, submit the generation array (+ judge/report jobs when "
                   "judge.enabled)", _run_arguments),
    "plan": Command("validate + scan the outputs + plan; submit nothing", _plan_arguments),
    "check": Command("every check a run makes before the queue, all problems at once "
                     "(--on-node: also a short job on a compute node)", _check_arguments),
    "status": Command("per-chunk state, done counts, failures with their log lines, totals, ETA",
                      _status_arguments),
    "runs": Command("every run under the logs folder: config, state, done/total, GPU-hours, score",
                    _runs_arguments),
    "logs": Command("print one chunk's submitit log (-f: follow it live)", _logs_arguments),
    "cancel": Command("cancel every job of a run (all stages); finished videos stay",
                      _cancel_arguments),
    "resubmit": Command("submit only what is missing or failed in a run, same settings and folder",
                        _resubmit_arguments),
    "report": Command("scores with 95% intervals, coverage, leaderboard, per-domain table, charts, "
                      "HTML explorer", _report_arguments),
    "judge": Command(JUDGE_HELP, _judge_arguments),
    "compare": Command(COMPARE_HELP, _compare_arguments),
    "adopt": Command("check mp4s made without wmsub (output.dir, or --from DIR) and adopt the "
                     "valid ones; quarantine the rest", _adopt_arguments),
}


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command; its --help shows that command alone."""
    p = argparse.ArgumentParser(prog=f"launch.py {name}", description=COMMANDS[name].help)
    COMMANDS[name].add_arguments(p)
    return p


def global_help() -> str:
    width = max(map(len, COMMANDS))
    lines = [INTRO, "", "commands:"]
    lines += [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items()]
    lines += ["", "usage:"]
    lines += ["  python " + " ".join(command_parser(name).format_usage().split()[1:])
              for name in COMMANDS]
    return "\n".join(lines)


def _unknown_command(word: str) -> str:
    close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.6)
    hint = f"did you mean `{close[0]}`? " if close else ""
    return (f"launch.py: unknown command {word!r}; {hint}commands: {', '.join(COMMANDS)} "
            f"(config overrides look like key=value)")


def _looks_like_a_command(word: str) -> bool:
    return not word.startswith("-") and "=" not in word


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except BrokenPipeError:
        # `status | head`: the reader left. Point stdout at /dev/null so that the
        # interpreter's final flush does not raise again, and end like a SIGPIPE'd tool.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(global_help())
        return 0
    if argv and argv[0] in COMMANDS:
        command = argv.pop(0)
    elif argv and _looks_like_a_command(argv[0]):
        print(_unknown_command(argv[0]), file=sys.stderr)
        return 2
    else:
        command = "run"
    args = command_parser(command).parse_intermixed_args(argv)  # flags may follow key=value
    try:
        rc = globals()[f"cmd_{command}"](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler above
        return rc
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# ---- paths --------------------------------------------------------------------------------

def checkout_path(value: str | Path) -> Path:
    """A relative path as given when it exists here, else the checkout's when that exists:
    `python /path/to/launch.py status` works from any folder."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    in_checkout = CHECKOUT / path
    return in_checkout if in_checkout.exists() else path


def _logs(args) -> Path:
    return checkout_path(args.logs)


def _find_run(args):
    from wmsub.state.runs import find_run
    return find_run(_logs(args), args.run)


def status_hint(run) -> str:
    """The shell-quoted command that shows this run's status from where we are now."""
    launch = "launch.py" if Path.cwd().resolve() == CHECKOUT else str(CHECKOUT / "launch.py")
    argv = ["python", launch, "status", "--run", run.name]
    if checkout_path(DEFAULT_LOGS).resolve() != run.path.parent.resolve():
        argv += ["--logs", str(run.path.parent)]
    return shlex.join(argv)


def _load(args):
    path = default_config_path(args.overrides) if args.config is None else str(checkout_path(args.config))
    return absolutize_paths(load_config(path, args.overrides)), path


def default_config_path(overrides) -> str | None:
    """The config file without --config: DEFAULT_CONFIG, or the config of the engine a
    `model.engine=` override names (None for an engine without one: its defaults alone), so
    `launch.py model.engine=wan22-i2v-a14b` never runs the 5B's settings."""
    engines = [o.split("=", 1)[1].strip() for o in overrides if o.split("=", 1)[0].strip() == "model.engine"]
    if not engines:
        return str(checkout_path(DEFAULT_CONFIG))
    from wmsub.engine_specs import EngineSpecError, engine_spec
    try:
        spec = engine_spec(engines[-1])
    except EngineSpecError as e:
        raise ConfigError(str(e)) from None
    return str(checkout_path(spec.config)) if spec.config else None


def _plan_or_exit(cfg, preview: bool):
    from wmsub.benchmark.manifest import ManifestError
    from wmsub.login.planner import build_plan
    from wmsub.state.store import SettingsMismatch
    try:
        return build_plan(cfg, preview=preview)
    except ManifestError as e:
        print(f"benchmark validation failed; nothing was submitted.\n{e}", file=sys.stderr)
    except SettingsMismatch as e:
        print(f"output folder refused; nothing was submitted.\n{e}", file=sys.stderr)
    return None


# ---- commands -----------------------------------------------------------------------------

def cmd_plan(args) -> int:
    from wmsub.login.preflight import Context, check_config
    from wmsub.login.views import format_plan
    cfg, path = _load(args)
    values = check_config(cfg, Context(path))
    if values.problems:
        print("config refused:\n" + "\n".join(f"  - {p}" for p in values.problems), file=sys.stderr)
        return 1
    plan = _plan_or_exit(cfg, preview=True)
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
    if report.ok and not args.dry_run and submission.executor_kind(cfg, args.local) == "slurm":
        released = submission.release_claims_of_ended_jobs(cfg)
        if released:
            print(f"released {len(released)} claim(s) of Slurm job(s) that have ended: "
                  + ", ".join(f"{stem} ({job})" for stem, job in sorted(released.items())))
    # the planner scans output.dir: one it cannot use is already reported
    # only a run that will submit changes the folder (pins its settings, quarantines)
    preview = args.dry_run or not report.ok
    plan = None if "output.dir" in {p.key for p in report.problems} else _plan_or_exit(cfg, preview)
    if plan is not None:
        print(format_plan(plan, cfg))
        if args.dry_run:
            from wmsub.login.dry_run import print_dry_run
            print_dry_run(cfg, path, plan)
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
    try:
        run = create_run(cfg, path)
    except FileExistsError as e:  # another launch took run.name since the checks
        print(f"error: {e}; nothing was submitted", file=sys.stderr)
        return 1
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
    print(f"run folder: {run.path}\nwatch it:   {status_hint(run)}")
    if kind == "slurm":
        print(f"or:         squeue -j {entry['job_id']} -r -o {shlex.quote(submission.SQUEUE_FORMAT)}")
    if args.wait or kind == "local":
        return _wait(run, jobs, kind)
    return 0


def cmd_resubmit(args) -> int:
    from wmsub.login import submission
    run = _find_run(args)
    cfg = run.load_config()
    if not _preflight(cfg, str(run.path / "config.yaml"), args.local, resubmit=True).ok:
        return 1
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
    """Wait for the run's jobs, then show the run and, last, its report (local runs always
    wait: their processes belong to this session)."""
    from wmsub.login import submission
    from wmsub.login.monitor import collect_status
    from wmsub.login.views import final_line, print_status
    print("waiting for the run's jobs ...", flush=True)
    submission.wait_for_jobs(jobs, kind)
    if kind == "slurm":  # the judge and report jobs (if any) come after the generation array
        submission.wait_for_run(run)
    status = collect_status(run.path)
    print_status(status)
    print(final_line(status))
    totals = status.get("totals", {})
    return 0 if totals.get("done") == totals.get("total") else 1


def cmd_status(args) -> int:
    from wmsub.login.monitor import collect_status
    from wmsub.login.views import print_status, watch
    run = _find_run(args)
    if args.watch:
        watch(run.path, interval_s=args.interval)
        return 0
    status = collect_status(run.path)
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print_status(status)
    return 0


def cmd_cancel(args) -> int:
    from wmsub.login.cancel_view import confirm_cancel, format_cancel
    from wmsub.login.submission import cancel_run
    run = _find_run(args)
    if args.run is None and not args.yes and sys.stdin.isatty() and not confirm_cancel(run):
        print("nothing cancelled")
        return 1
    result = cancel_run(run.path)
    print(json.dumps(result, indent=1) if args.json else format_cancel(result))
    return 0 if not result["still_queued"] and not result["scancel_error"] else 1


def cmd_runs(args) -> int:
    from wmsub.login.runlist import collect_runs, format_runs
    runs = collect_runs(_logs(args))
    print(json.dumps(runs, indent=1) if args.json else format_runs(runs, _logs(args)))
    return 0


def cmd_logs(args) -> int:
    from wmsub.login.chunklog import show_chunk_log
    return show_chunk_log(_find_run(args), args.chunk, args.rank, follow=args.follow)


def cmd_report(args) -> int:
    from wmsub.score.report import ReportDependencyError, require_report_modules, write_report
    try:
        require_report_modules()
    except ReportDependencyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.results:
        out = Path(args.out or "report")
        cfg = (load_config(str(checkout_path(args.config)) if args.config else None, args.overrides)
               if (args.config or args.overrides) else None)
        path = write_report(None, Path(args.results), out, cfg=cfg)
    else:
        run = _find_run(args)
        path = write_report(run.path, None, Path(args.out) if args.out else run.report_dir)
    print(f"report written: {path}")
    return 0


def cmd_judge(args) -> int:
    """Judge an existing run again where needed (failed, missing, stale shards), then report."""
    from wmsub.login import rejudge
    run = _find_run(args)
    cfg = rejudge.judge_config(run, args.overrides)
    from wmsub.login.preflight import run_judge_checks
    report = run_judge_checks(cfg, str(run.path / "config.yaml"))
    if report.problems:
        print(f"judge stage refused; nothing was submitted.\n{report.format(verbose=False)}",
              file=sys.stderr)
        return 1
    if report.warnings:
        print(report.format(verbose=False), file=sys.stderr)
    if not args.dry_run and cfg.slurm.executor == "local":
        print("launch.py judge submits Slurm jobs: slurm.executor=local cannot run them",
              file=sys.stderr)
        return 1
    plan = rejudge.plan_rejudge(run, cfg)
    print(rejudge.describe(run, plan))
    if args.dry_run:
        return 0
    for e in rejudge.submit_rejudge(run, cfg, plan):
        tasks = f" (tasks {', '.join(e['tasks'].values())})" if e["tasks"] else ""
        print(f"  {e['stage']} job {e['job_id']}{tasks}")
    print(f"watch it: {status_hint(run)}")
    return 0


def cmd_compare(args) -> int:
    """Compare two runs (or results files) on their common instances."""
    from wmsub.score.compare import compare, resolve_side
    cfg = (load_config(str(checkout_path(args.config)) if args.config else None, args.overrides)
           if (args.config or args.overrides) else None)
    a, b = resolve_side(args.a, _logs(args)), resolve_side(args.b, _logs(args))
    out = compare(a, b, Path(args.out), cfg=cfg)
    print(f"compare written: {out / 'compare.md'} (also compare.html, compare.json)")
    return 0


def cmd_adopt(args) -> int:
    """Adopt mp4s made without wmsub (output.dir, or copied from --from DIR) after a full check."""
    from wmsub.benchmark.manifest import ManifestError
    from wmsub.login.adopt import adopt
    from wmsub.state.store import SettingsMismatch
    cfg, _ = _load(args)
    try:
        report = adopt(cfg, args.source)
    except ManifestError as e:
        print(f"benchmark validation failed; nothing was adopted.\n{e}", file=sys.stderr)
        return 1
    except SettingsMismatch as e:
        print(f"output folder refused; nothing was adopted.\n{e}", file=sys.stderr)
        return 1
    print(report.summary(Path(cfg.output.dir), Path(args.source) if args.source else None))
    return 0
