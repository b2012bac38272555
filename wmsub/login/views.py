"""How the login-node commands look: the plan and the status as text.

Plain `status` is for scripts as much as for people: every line is printed whole (the one
naming an exception and its fix above all), colour only on a terminal. The live screen of
`status --watch` is in live.py.
"""
from __future__ import annotations

import time
import sys
from pathlib import Path


def hms(seconds) -> str:
    """1h02m, 3m05s, 5s; "-" when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


# ---- the plan ---------------------------------------------------------------------------

def format_plan(plan, cfg) -> str:
    """What `plan` and `run` print before submitting."""
    s = cfg.slurm
    lines = [
        f"benchmark: {cfg.bench.root} ({cfg.bench.prompt_mode}), {len(plan.instances)} instances",
        f"output:    {cfg.output.dir} (settings fingerprint {plan.fingerprint})",
        f"model:     {cfg.model.name} (model.engine={cfg.model.engine})",
        f"status:    {len(plan.done)} done, {len(plan.pending)} pending, {len(plan.failed)} failed"
        f" (>= {cfg.output.max_attempts} attempts), {len(plan.quarantined)} "
        + ("to quarantine at the run" if plan.preview else "quarantined now"),
    ]
    if plan.output_sizes:
        lines.append("sizes:     " + ", ".join(f"{k} x{v}" for k, v in plan.output_sizes.items()))
    if plan.chunks:
        per_video = cfg.plan.seconds_per_video
        w, h, frames, steps = cfg.engine_spec.reference_video
        lines.append(f"estimate:  {hms(plan.est_total_s)} of job time in total "
                     f"({per_video:g} s per {w}x{h}x{frames} video at {steps} steps, "
                     "scaled by tokens x steps)")
        lines.append(_wall_clock_line(plan, s))
        lines.append(f"chunks:    {len(plan.chunks)} array tasks, {plan.chunk_rule}")
        shown = plan.chunks if len(plan.chunks) <= 24 else plan.chunks[:20]
        for c in shown:
            lines.append(f"  chunk {c.index:>3}: {len(c.instances):>4} videos, ~{hms(c.est_s)}")
        if len(shown) < len(plan.chunks):
            rest = plan.chunks[len(shown):]
            lines.append(f"  ... {len(rest)} more chunks of {min(len(c.instances) for c in rest)}-"
                         f"{max(len(c.instances) for c in rest)} videos")
        longest = max(c.est_s for c in plan.chunks)
        if longest > s.time_min * 60:
            lines.append(f"  note: the longest chunk (~{hms(longest)}) exceeds slurm.time_min="
                         f"{s.time_min}; it will be requeued on timeout (up to "
                         f"slurm.max_timeout_requeues={s.max_timeout_requeues}) — or raise plan.chunks")
    else:
        lines.append("chunks:    none (nothing pending)")
    lines.append(f"each job:  {s.gpus_per_job} GPU(s), {s.cpus_per_task} CPUs per task, {s.mem_gb} GB, "
                 f"{s.time_min} min, partition {s.partition or '(cluster default)'}"
                 + (f", account {s.account}" if s.account else "")
                 + (f", qos {s.qos}" if s.qos else "")
                 + (f", constraint {s.constraint}" if s.constraint else "")
                 + f"; at most {s.array_parallelism} at once")
    if plan.failed:
        lines.append("failed:    " + ", ".join(f"{k} ({v.reason[:60]})" for k, v in
                                               list(plan.failed.items())[:10])
                     + (" ..." if len(plan.failed) > 10 else ""))
    for note in plan.notes[:20]:
        lines.append(f"note:      {note}")
    if len(plan.notes) > 20:
        lines.append(f"note:      ... {len(plan.notes) - 20} more")
    return "\n".join(lines)


def _wall_clock_line(plan, s) -> str:
    from wmsub.login.planner import wall_clock_s
    wall = wall_clock_s([c.est_s for c in plan.chunks], s.array_parallelism)
    gpu_hours = plan.est_total_s * s.gpus_per_job / 3600.0
    at_once = min(s.array_parallelism, len(plan.chunks))
    return (f"           ~{hms(wall)} wall clock with {at_once} chunk(s) at once "
            f"(slurm.array_parallelism={s.array_parallelism}, no queue wait); "
            f"{gpu_hours:.1f} GPU-hours ({s.gpus_per_job} GPU(s) per job)")


# ---- the status ----------------------------------------------------------------------------

# rich styles of the states, here and in the live screen
STATE_STYLES = {"running": "bold green", "requeued": "magenta", "pending": "yellow",
                "completed": "blue", "failed": "bold red", "timeout": "bold red",
                "cancelled": "red", "unknown": "dim", "not submitted": "dim"}


def _bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def state_text(view: dict) -> str:
    """`running 5m03s`, `pending (Dependency)`, `failed (exit code 3)`, ..."""
    text = view["state"]
    if view["state"] == "pending" and view.get("reason"):
        text += f" ({view['reason']})"
    elif view["state"] in ("running", "requeued") and view.get("elapsed_s"):
        text += f" {hms(view['elapsed_s'])}"
    elif view.get("state_from") == "record":
        text += " (per its record)"
    elif view.get("reason"):
        text += f" ({view['reason']})"
    elif view.get("slurm_state") and view["slurm_state"].split()[0].lower() != view["state"]:
        text += f" ({view['slurm_state']})"
    return text


_state_text = state_text  # the name tests and bench/ knew


def current_text(chunk: dict) -> str:
    """The stem being made, with its denoising step when the worker reported one."""
    if not chunk.get("current"):
        return ""
    step = f" step {chunk['step']}/{chunk['steps']}" if chunk.get("step") and chunk.get("steps") else ""
    return chunk["current"] + step


def status_lines(status: dict, width: int = 100):
    """The status as rich Text lines (styles on the state words); never cut."""
    from rich.text import Text
    t = status["totals"]
    pct = 100.0 * t["done"] / t["total"] if t["total"] else 0.0
    lines: list = [Text(f"run {status['run']}   outputs {status['output_dir']}")]
    lines.append(Text(f"{_bar(t['done'], t['total'], max(10, min(40, width - 64)))} {t['done']}/{t['total']} "
                      f"({pct:.0f}%)  {t['videos_per_hour']:.1f} videos/h  ETA {hms(t['eta_s'])}  "
                      f"GPU-hours {t['gpu_hours']:.2f}"))
    check = status.get("on_node_check")
    if check:
        ago = hms(time.time() - check["finished_at"]) + " ago" if check.get("finished_at") else ""
        lines.append(Text(f"on-node check: {'passed' if check['ok'] else 'FAILED'} (job {check['job_id']}, "
                          f"{ago}) {check['folder']}/result.json",
                          style="" if check["ok"] else "red"))
        lines.extend(Text(f"   {p}") for p in check["problems"][:5])
    if t.get("adopted"):
        lines.append(Text(f"adopted: {t['adopted']} of the done videos were made elsewhere "
                          "(launch.py adopt; their settings are assumed, not measured)"))
    if not status["sacct"]:
        lines.append(Text(f"sacct unavailable ({status['sacct_error']}): states from squeue and the outputs"))
    if status.get("squeue_error"):
        lines.append(Text(f"squeue failed: {status['squeue_error']}", style="red"))
    if t.get("plan_failed"):
        lines.append(Text(f"not planned, failed output.max_attempts times before: {len(t['plan_failed'])} "
                          f"({', '.join(t['plan_failed'][:5])}{', ...' if len(t['plan_failed']) > 5 else ''})"))
    counts: dict[str, int] = {}
    for c in status["chunks"]:
        counts[c["state"]] = counts.get(c["state"], 0) + 1
    line = Text("chunks: ")
    for k, (state, n) in enumerate(counts.items()):
        line.append(", " if k else "")
        line.append(f"{n} {state}", style=STATE_STYLES.get(state, ""))
    if t.get("restarts") or t.get("timeouts") or t.get("preemptions"):
        line.append(f"; requeues {t['restarts']} (timeouts {t['timeouts']}, preemptions {t['preemptions']})")
    lines.append(line)
    lines.append(Text(f"{'chunk':>5}  {'job':<12} {'state':<34} {'rst':>3}  {'done':>7}  current"))
    for c in status["chunks"]:
        row = Text(f"{c['index']:>5}  {c['job_id'] or '-':<12} ")
        row.append(f"{state_text(c):<34}", style=STATE_STYLES.get(c["state"], ""))
        row.append(f" {c['restarts']:>3}  {c['done']:>3}/{c['total']:<3}  {current_text(c)}")
        lines.append(row)
    lines.extend(_stage_lines(status))
    for c in status["chunks"]:
        lines.extend(_problem_lines(c))
    for name in ("judge", "report"):
        for j in status[name]["jobs"]:
            if j.get("log_tail"):
                lines.append(Text(f"-- {name} {j['job_id']}: ").append(
                    state_text(j), style=STATE_STYLES.get(j["state"], "")))
                lines.extend(_log_lines(j))
    lines.append(Text(f"same jobs in Slurm: {status['squeue_cmd']}"))
    return lines


def _stage_lines(status: dict) -> list:
    from rich.text import Text
    judge, report = status["judge"], status["report"]
    if not (judge["jobs"] or judge.get("enabled", True) or judge["results"]):
        return [Text("judge and report: not part of this run (judge.enabled is false)")]
    judge_jobs = ", ".join(f"{j['job_id']} {state_text(j)}" for j in judge["jobs"])
    report_jobs = ", ".join(f"{j['job_id']} {state_text(j)}" for j in report["jobs"])
    return [Text("judge:  ").append(judge["state"], style=STATE_STYLES.get(judge["state"], "")).append(
                f"  results {len(judge['results'])}/{judge['shards']}" + (f"  [{judge_jobs}]" if judge_jobs else "")),
            Text("report: ").append(report["state"], style=STATE_STYLES.get(report["state"], "")).append(
                f"  report.md {'present' if report['present'] else 'missing'}"
                + (f"  [{report_jobs}]" if report_jobs else ""))]


def _problem_lines(c: dict) -> list:
    from rich.text import Text
    missing = c["total"] - c["done"] if c["state"] == "completed" else 0
    if not (c["failed"] or c.get("error") or c.get("log_tail") or c.get("unverified") or missing):
        return []
    head = Text(f"-- chunk {c['index']} ({c['job_id'] or 'not submitted'}): ")
    head.append(state_text(c), style=STATE_STYLES.get(c["state"], ""))
    if missing:
        head.append(f", ended with {missing} of {c['total']} videos missing")
    lines = [head]
    if c.get("error"):
        lines.append(Text(f"   error: {c['error']}", style="red"))
    for stem, reason in c["failed"].items():
        lines.append(Text(f"   failed {stem}: {reason}", style="red"))
    if c.get("unverified"):
        lines.append(Text(f"   recorded done but mp4 or sidecar missing: {', '.join(c['unverified'])}"))
    lines.extend(_log_lines(c))
    return lines


def _log_lines(view: dict) -> list:
    """The log's last lines without traceback frames (log_summary), else its raw tail."""
    from rich.text import Text
    shown = view.get("log_summary") or view.get("log_tail") or []
    if not shown:
        return []
    what = "last lines (traceback frames left out)" if view.get("log_summary") else "last lines"
    return [Text(f"   {what} of {view['log']}:"), *(Text(f"   | {line}") for line in shown)]


def render_status(status: dict, width: int = 100) -> str:
    """The status as plain text; `width` sizes the progress bar only, no line is cut."""
    return "\n".join(line.plain for line in status_lines(status, width))


def _console(file=None):
    from rich.console import Console
    # highlight/markup off: log lines and stems are printed as they are; soft_wrap: never
    # cut or re-wrap a line (a terminal wraps it, a pipe gets it whole)
    return Console(file=file or sys.stdout, highlight=False, markup=False, soft_wrap=True,
                   emoji=False)


def print_status(status: dict, file=None) -> None:
    """`status`: coloured on a terminal, plain text (no escape codes) otherwise."""
    file = file or sys.stdout
    if not file.isatty():
        # line by line: a reader that leaves early (`| head`) shows as BrokenPipeError here
        # at once, not as a silently dropped buffer
        for line in status_lines(status):
            file.write(line.plain + "\n")
        return
    console = _console(file)
    for line in status_lines(status, console.width):
        console.print(line)


def final_line(status: dict) -> str:
    """The last line of `--wait`: where the report is and its total score."""
    from wmsub.login.monitor import report_score
    from wmsub.state.runs import RunFolder
    if (RunFolder(Path(status["path"])).report_dir / "report.json").is_file():
        total = report_score(Path(status["path"]))
        score = f"total score {total:.2f} / 10" if total is not None else "no total score"
        return f"report: {Path(status['report']['path'])}  ({score})"
    if not status["judge"].get("enabled", True) and not status["judge"]["jobs"]:
        return "report: none (judge.enabled is false for this run)"
    return f"report: not written ({Path(status['report']['path'])} is missing; see the judge and report lines above)"


def watch(run_dir: Path, interval_s: float = 5, *, console=None, use_sacct: bool = True) -> dict:
    """`status --watch`: the live screen (live.py) until every stage has ended, or Ctrl-C."""
    from wmsub.login.live import watch as live_watch
    return live_watch(run_dir, interval_s, console=console, use_sacct=use_sacct)
