"""`status --watch`: a live table drawn with rich's Live, updated in place.

Layout, top to bottom, the same on every refresh: a header (run, overall progress bar,
rate, ETA, GPU-hours), one table row per chunk (state in colour, a progress bar, the
current video and its denoising step), the judge and report lines, then one line per
problem. When the terminal is too short for every chunk, the rows that matter (running,
then failed, then pending) are kept and the rest are counted in one row.
"""
from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from wmsub.login.monitor import collect_status
from wmsub.login.views import STATE_STYLES, current_text, hms, state_text

# Rows kept first when not every chunk fits: the active ones, then the ones in trouble.
_ROW_PRIORITY = {"running": 0, "requeued": 1, "failed": 2, "timeout": 2, "unknown": 3,
                 "cancelled": 4, "pending": 5, "not submitted": 6, "completed": 7}
_CHROME_LINES = 4     # the table's header row and rules
_PROBLEMS_SHOWN = 5   # problem lines under the table at most


def _header(status: dict) -> Text:
    t = status["totals"]
    line = Text(f"run {status['run']}", style="bold")
    line.append(f"   outputs {status['output_dir']}\n")
    pct = 100.0 * t["done"] / t["total"] if t["total"] else 0.0
    line.append(f"{t['done']}/{t['total']} videos ({pct:.0f}%)", style="bold")
    line.append(f"   {t['videos_per_hour']:.1f} videos/h   ETA {hms(t['eta_s'])}   "
                f"GPU-hours {t['gpu_hours']:.2f}")
    if t.get("restarts") or t.get("preemptions") or t.get("timeouts"):
        line.append(f"   requeues {t['restarts']} (timeouts {t['timeouts']}, "
                    f"preemptions {t['preemptions']})")
    if t.get("plan_failed"):
        line.append(f"\nnot planned, failed output.max_attempts times before: {len(t['plan_failed'])} "
                    f"({', '.join(t['plan_failed'][:5])}{', ...' if len(t['plan_failed']) > 5 else ''})",
                    style="yellow")
    if not status["sacct"]:
        line.append(f"\nsacct unavailable ({status['sacct_error']})", style="yellow")
    if status.get("squeue_error"):
        line.append(f"\nsqueue failed: {status['squeue_error']}", style="red")
    return line


def _rows_that_fit(chunks: list[dict], room: int) -> tuple[list[dict], list[dict]]:
    if len(chunks) <= room:
        return chunks, []
    keep = max(1, room - 1)  # one row says what was left out
    chosen = sorted(chunks, key=lambda c: (_ROW_PRIORITY.get(c["state"], 9), c["index"]))[:keep]
    shown = sorted(chosen, key=lambda c: c["index"])
    hidden = [c for c in chunks if c not in shown]
    return shown, hidden


def _table(status: dict, room: int, width: int) -> Table:
    table = Table(expand=True, pad_edge=False, show_edge=False)
    table.add_column("chunk", justify="right", width=5, no_wrap=True)
    table.add_column("job", width=12, no_wrap=True)
    table.add_column("state", width=20, no_wrap=True, overflow="ellipsis")
    table.add_column("progress", width=12 if width < 120 else 20, no_wrap=True)
    table.add_column("done", justify="right", width=7, no_wrap=True)
    table.add_column("rst", justify="right", width=3, no_wrap=True)
    table.add_column("current video", ratio=1, no_wrap=True, overflow="ellipsis")
    shown, hidden = _rows_that_fit(status["chunks"], room)
    for c in shown:
        style = STATE_STYLES.get(c["state"], "")
        bar = ProgressBar(total=max(c["total"], 1), completed=c["done"],
                          complete_style="green" if c["state"] != "failed" else "red",
                          finished_style="blue")
        table.add_row(str(c["index"]), c["job_id"] or "-", Text(state_text(c), style=style), bar,
                      f"{c['done']}/{c['total']}", str(c["restarts"]), current_text(c))
    if hidden:
        counts: dict[str, int] = {}
        for c in hidden:
            counts[c["state"]] = counts.get(c["state"], 0) + 1
        table.add_row("…", "", Text(f"{len(hidden)} more", style="dim"), "", "", "",
                      Text(", ".join(f"{n} {s}" for s, n in counts.items()), style="dim"))
    return table


def _stages(status: dict) -> Text:
    judge, report = status["judge"], status["report"]
    if not (judge["jobs"] or judge.get("enabled", True) or judge["results"]):
        return Text("judge and report: not part of this run", style="dim")
    line = Text("judge ").append(judge["state"], style=STATE_STYLES.get(judge["state"], ""))
    line.append(f"  results {len(judge['results'])}/{judge['shards']}    report ")
    line.append(report["state"], style=STATE_STYLES.get(report["state"], ""))
    line.append("  report.md " + ("present" if report["present"] else "missing"))
    return line


def _problems(status: dict) -> list[Text]:
    lines = []
    for c in status["chunks"]:
        why = c.get("error") or next(iter(c["failed"].values()), None)
        if why:
            first = str(why).strip().splitlines()[-1] if str(why).strip() else str(why)
            lines.append(Text(f"chunk {c['index']}: {first}", style="red"))
    if len(lines) > _PROBLEMS_SHOWN:
        more = len(lines) - _PROBLEMS_SHOWN + 1
        lines = lines[:_PROBLEMS_SHOWN - 1] + [Text(f"... {more} more; `launch.py status` lists them all",
                                                    style="dim")]
    if lines:
        lines.append(Text("full messages: launch.py status; a chunk's log: launch.py logs --chunk N",
                          style="dim"))
    return lines


def screen(status: dict, width: int, height: int) -> Group:
    """One frame of the live screen, fitted to width x height."""
    header, stages, problems = _header(status), _stages(status), _problems(status)
    used = len(header.plain.splitlines()) + 1 + len(problems) + _CHROME_LINES + 1
    room = max(3, height - used)
    done_note = Text("every job of the run has ended", style="bold") if status["finished"] else \
        Text("refreshing; Ctrl-C to stop watching (the jobs go on)", style="dim")
    return Group(header, _table(status, room, width), stages, *problems, done_note)


def watch(run_dir: Path, interval_s: float = 5, *, console: Console | None = None,
          use_sacct: bool = True) -> dict:
    """Redraw the screen in place until every stage has ended, or Ctrl-C."""
    console = console or Console(highlight=False)
    status: dict = {}
    live = Live(console=console, auto_refresh=False, transient=False,
                vertical_overflow="crop", redirect_stdout=False, redirect_stderr=False)
    try:
        with live:
            while True:
                status = collect_status(run_dir, use_sacct=use_sacct)
                width, height = console.size
                live.update(screen(status, width, height), refresh=True)
                if status["finished"]:
                    return status
                time.sleep(interval_s)
    except KeyboardInterrupt:
        return status
