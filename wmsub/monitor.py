"""`launch.py status` and `cancel`: what a run is doing, and stopping it cleanly.

Sources, cheapest first: the run folder (jobs.json, plan.json, chunks/<i>.json), one
directory listing of the output folder and of its records (a stem is done when its mp4
and its sidecar exist; nothing is decoded), one `squeue` and one `sacct` call for all of
the run's jobs. squeue wins for live jobs, sacct for ended ones; without accounting the
status says so and falls back to squeue plus the progress records.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import slurm_query as sq
from .claims import Claim, ClaimBook
from .runs import RunFolder, read_json

RATE_WINDOW_S = 3600.0
LOG_TAIL_LINES = 12
CANCEL_WAIT_S = 60.0
_RECORD_STATE = {"finished": "completed", "finished_with_failures": "completed",
                 "failed": "failed", "running": "running", "requeued": "requeued",
                 "pending": "pending"}


# ---- reading the run folder ------------------------------------------------------------

def _load_config(run: RunFolder):
    if not (run.path / "config.yaml").is_file():
        raise FileNotFoundError(f"{run.path} is not a wmsub run folder: it has no config.yaml "
                                f"(run folders are logs/<run-name>/; see logs/LATEST)")
    return run.load_config()


def output_dir(cfg, run_dir: Path) -> Path:
    """The run's output folder. A relative `output.dir` is relative to where the run was
    launched; with a relative `run.logs_dir` that place is known from the run folder's own
    path (<launch dir>/<logs_dir>/<run name>), otherwise it is taken to be here."""
    configured = Path(cfg.output.dir)
    if configured.is_absolute():
        return configured
    candidates = [Path.cwd() / configured]
    logs = Path(cfg.run.logs_dir)
    if not logs.is_absolute() and ".." not in logs.parts:
        launch_dir = Path(run_dir).resolve().parents[len(logs.parts)]
        candidates.insert(0, launch_dir / configured)
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _names(folder: Path, suffix: str) -> set[str]:
    """Stems of the files named `<stem><suffix>` in `folder` (one listing, no stat)."""
    try:
        return {n[: -len(suffix)] for n in (e.name for e in os.scandir(folder))
                if n.endswith(suffix) and not n.startswith(".")}
    except FileNotFoundError:
        return set()


def current_chunk_jobs(jobs: list[dict]) -> dict[int, tuple[str, dict]]:
    """{chunk index: (job id, jobs.json entry)} of the gen stage; a later entry for the
    same chunk (a resubmit) replaces an earlier one."""
    out: dict[int, tuple[str, dict]] = {}
    for entry in jobs:
        if entry.get("stage", "gen") != "gen":
            continue
        tasks = entry.get("tasks") or {}
        for key, job_id in tasks.items():
            out[int(key)] = (str(job_id), entry)
        if not tasks:
            for index in entry.get("chunks") or []:
                out[int(index)] = (str(entry.get("job_id", "")), entry)
    return out


def _planned_stems(plan: dict) -> list[str]:
    for key in ("stems", "instances"):
        if isinstance(plan.get(key), list):
            return [s if isinstance(s, str) else s.get("stem", "") for s in plan[key]]
    stems = list(plan.get("done") or []) if isinstance(plan.get("done"), list) else []
    for chunk in plan.get("chunks") or []:
        stems.extend(chunk.get("stems") or [])
    return stems


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def log_paths(run_dir: Path, job_id: str) -> tuple[Path, Path]:
    """submitit's (stderr, stdout) of global rank 0 of a task: `%A_%a_0_log.err|out`."""
    folder = run_dir / "submitit"
    return folder / f"{job_id}_0_log.err", folder / f"{job_id}_0_log.out"


def _failure_reason(path: Path) -> str:
    data = read_json(path, {}) or {}
    for key in ("last_reason", "reason", "error"):
        if data.get(key):
            attempts = data.get("attempts")
            return f"{data[key]}" + (f" (after {attempts} attempts)" if attempts else "")
    return f"see {path}"


# ---- job states --------------------------------------------------------------------------

def _job_view(job_id: str, entry: dict, queue: dict, acct: dict, record: dict | None,
              sacct_ok: bool) -> dict:
    """State, reason, restarts and elapsed of one job from squeue, sacct or the record."""
    live, past = queue.get(job_id), acct.get(job_id)
    restarts = max([j.restarts for j in (live, past) if j] + [int((record or {}).get("restarts") or 0)])
    if entry.get("executor", "slurm") != "slurm":
        state = _RECORD_STATE.get((record or {}).get("state", ""), "unknown")
        return {"state": state, "reason": "", "slurm_state": "", "restarts": restarts,
                "elapsed_s": None}
    if live and (live.state in sq.ACTIVE_STATES or not past):
        chosen = live
    else:
        chosen = past or live
    if chosen is not None:
        elapsed = past.elapsed_s if past else chosen.elapsed_s
        return {"state": chosen.state, "reason": chosen.reason, "slurm_state": chosen.slurm_state,
                "restarts": restarts, "elapsed_s": elapsed}
    record_state = _RECORD_STATE.get((record or {}).get("state", ""), "")
    if record_state in sq.FINAL_STATES:
        why = "no longer in squeue; state from the progress record"
        return {"state": record_state, "reason": why, "slurm_state": "", "restarts": restarts,
                "elapsed_s": None}
    why = ("not in squeue, and sacct is unavailable" if not sacct_ok
           else "not found by squeue or sacct")
    return {"state": "unknown", "reason": why, "slurm_state": "", "restarts": restarts,
            "elapsed_s": None}


def _stage_state(states: list[str]) -> str:
    if not states:
        return "not submitted"
    for active in ("running", "requeued", "pending"):
        if active in states:
            return active
    if all(s == "completed" for s in states):
        return "completed"
    for bad in ("failed", "timeout", "cancelled", "unknown"):
        if bad in states:
            return bad
    return "unknown"


def _stage(run_dir: Path, jobs: list[dict], stage: str, queue, acct, sacct_ok) -> dict:
    tasks: dict[str, tuple[str, dict]] = {}
    for entry in jobs:
        if entry.get("stage") == stage:
            for key, job_id in (entry.get("tasks") or {"0": entry.get("job_id", "")}).items():
                tasks[str(key)] = (str(job_id), entry)
    views = []
    for key, (job_id, entry) in sorted(tasks.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
        view = _job_view(job_id, entry, queue, acct, None, sacct_ok)
        err_log, out_log = log_paths(run_dir, job_id)
        views.append({"task": key, "job_id": job_id, **view, "log": str(err_log)})
        if view["state"] in ("failed", "timeout", "cancelled"):
            views[-1]["log_tail"] = _tail(err_log) or _tail(out_log)
    return {"state": _stage_state([v["state"] for v in views]), "jobs": views}


# ---- the status ----------------------------------------------------------------------------

def collect_status(run_dir: Path, *, use_sacct: bool = True, now: float | None = None) -> dict:
    """Everything `status` shows, as one JSON-able dict (see docs/MONITOR.md)."""
    run = RunFolder(Path(run_dir).resolve())
    now = time.time() if now is None else now
    cfg = _load_config(run)
    plan, jobs = run.load_plan(), run.jobs()
    outputs = output_dir(cfg, run.path)
    store_meta = outputs / ".wmsub"
    done_stems = _names(outputs, ".mp4") & _names(store_meta / "records", ".json")
    failure_files = _names(store_meta / "failures", ".json")

    slurm_ids = list(dict.fromkeys(str(e["job_id"]) for e in jobs
                                   if e.get("job_id") and e.get("executor", "slurm") == "slurm"))
    queue, squeue_error = sq.query_squeue(slurm_ids)
    acct, sacct_error = sq.query_sacct(slurm_ids) if use_sacct else ({}, "sacct not used (use_sacct=False)")
    sacct_ok = sacct_error is None

    chunk_jobs = current_chunk_jobs(jobs)
    plan_chunks = {int(c["index"]): list(c.get("stems") or []) for c in plan.get("chunks") or []}
    chunks, records = [], []
    for index in sorted(set(plan_chunks) | set(chunk_jobs)):
        record = read_json(run.chunk_record(index))
        if record:
            records.append(record)
        stems = plan_chunks.get(index) or list((record or {}).get("stems") or [])
        job_id, entry = chunk_jobs.get(index, ("", {}))
        # After a resubmit the record still speaks for the old job until the new one starts:
        # its state, restarts, current stem and error are not the new job's.
        if record and record.get("job_id") and job_id and record["job_id"] != job_id:
            job_record = None
        else:
            job_record = record
        view = (_job_view(job_id, entry, queue, acct, job_record, sacct_ok) if job_id else
                {"state": "not submitted", "reason": "", "slurm_state": "", "restarts": 0,
                 "elapsed_s": None})
        if view["elapsed_s"] is None and job_record and job_record.get("started_at"):
            view["elapsed_s"] = int(max(0.0, job_record.get("updated_at", now) - job_record["started_at"]))
            view["elapsed_from"] = "record"
        active = view["state"] in sq.ACTIVE_STATES
        failed = {s: r for s, r in ((record or {}).get("failed") or {}).items() if s not in done_stems}
        if not active:
            for stem in stems:
                if stem not in done_stems and stem not in failed and stem in failure_files:
                    failed[stem] = _failure_reason(store_meta / "failures" / f"{stem}.json")
        err_log, out_log = log_paths(run.path, job_id) if job_id else (None, None)
        chunk = {
            "index": index, "job_id": job_id, **view,
            "done": sum(s in done_stems for s in stems), "total": len(stems),
            "current": (job_record or {}).get("current") if active else None,
            "failed": failed, "error": (job_record or {}).get("error"),
            "record_state": (record or {}).get("state"), "record_job_id": (record or {}).get("job_id"),
            "unverified": [s for s in (record or {}).get("done") or [] if s not in done_stems],
            "log": str(err_log) if err_log else None,
        }
        ended_badly = view["state"] in ("failed", "timeout", "cancelled", "unknown")
        if job_id and (ended_badly or failed or chunk["error"]):
            tail = _tail(err_log) or _tail(out_log)
            chunk["log_tail"] = tail
            if not _tail(err_log) and tail:
                chunk["log"] = str(out_log)
        chunks.append(chunk)

    judge = _stage(run.path, jobs, "judge", queue, acct, sacct_ok)
    judge["results"] = sorted(str(p) for p in (run.path / "judge").glob("shard-*/result.json"))
    judge["shards"] = len(judge["jobs"]) or cfg.judge.shards
    judge["enabled"] = cfg.judge.enabled
    report = _stage(run.path, jobs, "report", queue, acct, sacct_ok)
    report_md = run.path / "report" / "report.md"
    report["present"] = report_md.exists()
    report["path"] = str(report_md)

    totals = _totals(cfg, plan, chunks, records, jobs, acct, done_stems, now)
    local_active = any(c["state"] in sq.ACTIVE_STATES for c in chunks if not c["job_id"]
                       or chunk_jobs.get(c["index"], ("", {}))[1].get("executor", "slurm") != "slurm")
    slurm_active = any(j.state in sq.ACTIVE_STATES for j in queue.values())
    return {
        "run": run.name, "path": str(run.path), "output_dir": str(outputs), "time": now,
        "chunks": chunks, "judge": judge, "report": report, "totals": totals,
        "sacct": sacct_ok, "sacct_error": sacct_error, "squeue_error": squeue_error,
        "squeue_cmd": sq.squeue_command(slurm_ids),
        "finished": squeue_error is None and not slurm_active and not local_active,
    }


def _totals(cfg, plan, chunks, records, jobs, acct, done_stems, now) -> dict:
    planned = _planned_stems(plan)
    total = len(planned) if planned else int(plan.get("instances") or 0)
    done = sum(s in done_stems for s in planned)
    finished_at = [v["finished_at"] for r in records for v in r.get("videos") or []
                   if v.get("finished_at")]
    starts = [r["started_at"] for r in records if r.get("started_at")]
    first = min(starts + finished_at) if (starts or finished_at) else now
    window = max(60.0, min(RATE_WINDOW_S, now - first))
    recent = sum(1 for t in finished_at if now - window <= t <= now + 60)
    rate = recent * 3600.0 / window
    remaining = max(0, total - done)
    eta = 0.0 if remaining == 0 else (remaining * 3600.0 / rate if rate > 0 else None)
    # Every gen task that ever ran, superseded ones included: their GPU time was spent too.
    gen_ids = {str(t) for e in jobs if e.get("stage", "gen") == "gen"
               for t in ((e.get("tasks") or {}).values() or [e.get("job_id")])}
    counted = {j for j in gen_ids if j in acct}
    gpu_s = sum(acct[j].elapsed_s for j in counted)
    gpu_s += sum(c["elapsed_s"] or 0 for c in chunks if c["job_id"] not in counted)
    failed = sum(c["total"] - c["done"] for c in chunks
                 if c["state"] not in sq.ACTIVE_STATES and c["state"] != "not submitted")
    # Stems the planner left out because they already failed output.max_attempts times.
    plan_failed = plan.get("failed_stems") if isinstance(plan.get("failed_stems"), dict) else {}
    return {"done": done, "total": total, "failed": failed,
            "plan_failed": sorted(s for s in plan_failed if s not in done_stems),
            "videos_per_hour": round(rate, 2), "eta_s": None if eta is None else round(eta),
            "gpu_hours": round(gpu_s * cfg.slurm.gpus_per_job / 3600.0, 3),
            "failed_chunks": sum(c["state"] in ("failed", "timeout", "cancelled") for c in chunks)}


# ---- rendering ------------------------------------------------------------------------------

def _hms(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _state_text(view: dict) -> str:
    text = view["state"]
    if view["state"] == "pending" and view.get("reason"):
        text += f" ({view['reason']})"
    elif view["state"] in ("running", "requeued") and view.get("elapsed_s"):
        text += f" {_hms(view['elapsed_s'])}"
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
             f"({pct:.0f}%)  {t['videos_per_hour']:.1f} videos/h  ETA {_hms(t['eta_s'])}  "
             f"GPU-hours {t['gpu_hours']:.2f}"]
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
    lines.append(f"chunks: {', '.join(f'{n} {state}' for state, n in counts.items())}")
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


# ---- cancel ----------------------------------------------------------------------------------

def cancel_run(run_dir: Path, *, wait_s: float = CANCEL_WAIT_S, poll_s: float = 0.5) -> dict:
    """scancel every job of the run (all stages, pending dependents too), wait until squeue
    lists none of them, then release the output claims those jobs held.

    Finished videos and sidecars are never touched; temp files of killed writers are
    removed by the store's rule (no live writer, no live claim). Claims of other runs
    (other job ids) are left alone.
    """
    run = RunFolder(Path(run_dir).resolve())
    cfg = _load_config(run)
    jobs = run.jobs()
    slurm_ids = list(dict.fromkeys(str(e["job_id"]) for e in jobs
                                   if e.get("job_id") and e.get("executor", "slurm") == "slurm"))
    # Claims name "A_i" (or a single job's id); the raw ids of array tasks also count.
    before, _ = sq.query_squeue(slurm_ids)
    run_job_ids = set(slurm_ids) | {t for e in jobs for t in (e.get("tasks") or {}).values()}
    run_job_ids |= set(before) | {j.raw_id for j in before.values()}
    rc, err = sq.scancel(slurm_ids)
    started = time.monotonic()
    remaining: list[str] = []
    while slurm_ids:
        queue, error = sq.query_squeue(slurm_ids, all_states=False)
        remaining = sorted(queue) if error is None else [f"squeue failed: {error}"]
        if not remaining or time.monotonic() - started > wait_s:
            break
        time.sleep(poll_s)
    released, removed_temps = [], []
    if not remaining:  # a job still queued may still write: leave its claims and temps alone
        outputs = output_dir(cfg, run.path)
        released = release_claims(outputs, run_job_ids, set(slurm_ids), cfg)
        removed_temps = _remove_stale_temps(outputs, cfg)
    local = [str(e.get("job_id")) for e in jobs if e.get("executor", "slurm") != "slurm"]
    return {"run": run.name, "job_ids": slurm_ids, "scancel_rc": rc, "scancel_error": err or None,
            "not_cancelled_local_jobs": local,
            "waited_s": round(time.monotonic() - started, 1), "still_queued": remaining,
            "released_claims": released, "removed_temps": removed_temps}


def _remove_stale_temps(outputs: Path, cfg) -> list[str]:
    """The store's own rule: a temp goes only when no live writer or live claim owns it."""
    from .config import settings_fingerprint
    from .store import OutputStore
    if not outputs.is_dir():
        return []
    fingerprint, settings = settings_fingerprint(cfg)
    store = OutputStore(outputs, fingerprint, settings, None, claim_ttl_s=cfg.output.claim_ttl_s)
    return store.remove_stale_temps()


def release_claims(outputs: Path, job_ids: set[str], masters: set[str] = frozenset(),
                   cfg=None) -> list[str]:
    """Release the claims whose owner job is in `job_ids` or is a task "A_i" of an array
    master "A" in `masters`; returns the released stems."""
    book = ClaimBook(outputs / ".wmsub" / "claims", ttl_s=cfg.output.claim_ttl_s if cfg else 1800)
    released = []
    for path in sorted(book.dir.glob("*.claim")) if book.dir.is_dir() else []:
        stem = path.name[: -len(".claim")]
        info = book.read(stem)
        if not info or not info.get("token"):
            continue
        owner = str(info.get("job_id") or (info.get("owner") or {}).get("job_id") or "")
        if not owner or (owner not in job_ids and owner.split("_")[0] not in masters):
            continue
        if book.release(Claim(stem=stem, path=path, token=info["token"], info=info)):
            released.append(stem)
    return released


def status_json(run_dir: Path, **kwargs) -> str:
    return json.dumps(collect_status(run_dir, **kwargs), indent=1)
