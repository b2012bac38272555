"""How the login-node commands look: the plan and the status as text."""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from wmsub.login.monitor import collect_status


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
        f"status:    {len(plan.done)} done, {len(plan.pending)} pending, {len(plan.failed)} failed"
        f" (>= {cfg.output.max_attempts} attempts), {len(plan.quarantined)} quarantined now",
    ]
    if plan.output_sizes:
        lines.append("sizes:     " + ", ".join(f"{k} x{v}" for k, v in plan.output_sizes.items()))
    if plan.chunks:
        per_video = cfg.plan.seconds_per_video
        lines.append(f"estimate:  {hms(plan.est_total_s)} of job time in total "
                     f"({per_video:g} s per 1280x704x81 video at 50 steps, scaled by tokens x steps)")
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


# ---- the status -------------------------------------------------------------------------

def _bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _state_text(view: dict) -> str:
    text = view["state"]
    if view["state"] == "pending" and view.get("reason"):
        text += f" ({view['reason']})"
    elif view["state"] in ("running", "requeued") and view.get("elapsed_s"):
        text += f" {hms(view['elapsed_s'])}"
    elif view.get("reason"):
        text += f" ({view['reason']})"
    elif view.get("slurm_state") and view["slurm_state"].split()[0].lower() != view["state"]:
        text += f" ({view['slurm_state']})"
    return text


def render_status(status: dict, width: int = 100) -> str:
    t = status["totals"]
    pct = 100.0 * t["done"] / t["total"] if t["total"] else 0.0
    lines = [f"run {status['run']}   outputs {status['output_dir']}",
             f"{_bar(t['done'], t['total'], max(10, min(40, width - 64)))} {t['done']}/{t['total']} "
             f"({pct:.0f}%)  {t['videos_per_hour']:.1f} videos/h  ETA {hms(t['eta_s'])}  "
             f"GPU-hours {t['gpu_hours']:.2f}"]
    check = status.get("on_node_check")
    if check:
        ago = hms(time.time() - check["finished_at"]) + " ago" if check.get("finished_at") else ""
        lines.append(f"on-node check: {'passed' if check['ok'] else 'FAILED'} (job {check['job_id']}, "
                     f"{ago}) {check['folder']}/result.json")
        lines.extend(f"   {p}" for p in check["problems"][:5])
    if not status["sacct"]:
        lines.append(f"sacct unavailable ({status['sacct_error']}): states from squeue and the outputs")
    if status.get("squeue_error"):
        lines.append(f"squeue failed: {status['squeue_error']}")
    if t.get("plan_failed"):
        lines.append(f"not planned, failed output.max_attempts times before: {len(t['plan_failed'])} "
                     f"({', '.join(t['plan_failed'][:5])}{', ...' if len(t['plan_failed']) > 5 else ''})")
    counts: dict[str, int] = {}
    for c in status["chunks"]:
        counts[c["state"]] = counts.get(c["state"], 0) + 1
    lines.append(f"chunks: {', '.join(f'{n} {state}' for state, n in counts.items())}"
                 + (f"; requeues {t['restarts']} (timeouts {t['timeouts']}, preemptions "
                    f"{t['preemptions']})" if t.get("restarts") or t.get("timeouts")
                    or t.get("preemptions") else ""))
    lines.append(f"{'chunk':>5}  {'job':<12} {'state':<34} {'rst':>3}  {'done':>7}  current")
    for c in status["chunks"]:
        lines.append(f"{c['index']:>5}  {c['job_id'] or '-':<12} {_state_text(c)[:34]:<34} "
                     f"{c['restarts']:>3}  {c['done']:>3}/{c['total']:<3}  {c['current'] or ''}")
    judge, report = status["judge"], status["report"]
    if judge["jobs"] or judge.get("enabled", True) or judge["results"]:
        judge_jobs = ", ".join(f"{j['job_id']} {_state_text(j)}" for j in judge["jobs"])
        lines.append(f"judge:  {judge['state']}  results {len(judge['results'])}/{judge['shards']}"
                     + (f"  [{judge_jobs}]" if judge_jobs else ""))
        report_jobs = ", ".join(f"{j['job_id']} {_state_text(j)}" for j in report["jobs"])
        lines.append(f"report: {report['state']}  report.md {'present' if report['present'] else 'missing'}"
                     + (f"  [{report_jobs}]" if report_jobs else ""))
    else:
        lines.append("judge and report: not part of this run (judge.enabled is false)")
    for c in status["chunks"]:
        missing = c["total"] - c["done"] if c["state"] == "completed" else 0
        if not (c["failed"] or c.get("error") or c.get("log_tail") or c.get("unverified") or missing):
            continue
        lines.append(f"-- chunk {c['index']} ({c['job_id'] or 'not submitted'}): {_state_text(c)}"
                     + (f", ended with {missing} of {c['total']} videos missing" if missing else ""))
        if c.get("error"):
            lines.append(f"   error: {c['error']}")
        for stem, reason in c["failed"].items():
            lines.append(f"   failed {stem}: {reason}")
        if c.get("unverified"):
            lines.append(f"   recorded done but mp4 or sidecar missing: {', '.join(c['unverified'])}")
        if c.get("log_tail"):
            lines.append(f"   last lines of {c['log']}:")
            lines.extend(f"   | {line}" for line in c["log_tail"])
    for name in ("judge", "report"):
        for j in status[name]["jobs"]:
            if j.get("log_tail"):
                lines.append(f"-- {name} {j['job_id']}: {_state_text(j)}")
                lines.append(f"   last lines of {j['log']}:")
                lines.extend(f"   | {line}" for line in j["log_tail"])
    lines.append(f"same jobs in Slurm: {status['squeue_cmd']}")
    return "\n".join(_fit(line, width) for line in lines)


def _fit(line: str, width: int) -> str:
    """Cut table rows and log lines to the screen; lines naming a path stay whole so the
    path can be copied."""
    if len(line) <= width or line.lstrip().startswith(("last lines of", "run ")):
        return line
    return line[: width - 1] + "…"


def watch(run_dir: Path, interval_s: float = 5, *, stream=None, use_sacct: bool = True) -> dict:
    """Redraw the status in place until every stage has ended, or Ctrl-C."""
    stream = stream or sys.stdout
    status: dict = {}
    try:
        while True:
            status = collect_status(run_dir, use_sacct=use_sacct)
            width = shutil.get_terminal_size((100, 40)).columns
            stream.write("\x1b[H\x1b[2J" + render_status(status, width=width) + "\n")
            stream.flush()
            if status["finished"]:
                return status
            time.sleep(interval_s)
    except KeyboardInterrupt:
        stream.write("\n")
        return status


