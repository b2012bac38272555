"""`launch.py status`: what a run is doing. Read-only: it never changes the queue or the
outputs (cancel lives in submission.py, rendering in views.py and live.py).

Sources, cheapest first: the run folder (jobs.json, plan.json, chunks/<i>.json), one
directory listing of the output folder and of its records (a stem is done when its mp4
and its sidecar exist; nothing is decoded), one `squeue` and one `sacct` call for all of
the run's jobs. squeue wins for live jobs, sacct for ended ones; without accounting the
status says so and falls back to squeue plus the progress records.
"""
from __future__ import annotations

import time
from pathlib import Path

from submitit.core.utils import JobPaths

from wmsub.login import slurm_query as sq
from wmsub.score.judge import judge_dir
from wmsub.state.jsonio import read_json, read_json_object
from wmsub.state.runs import RunFolder
from wmsub.state.store import OutputStore

RATE_WINDOW_S = 3600.0
LOG_TAIL_LINES = 12
_RECORD_STATE = {"finished": "completed", "finished_with_failures": "completed",
                 "failed": "failed", "running": "running", "requeued": "requeued",
                 "pending": "pending"}


# ---- reading the run folder ------------------------------------------------------------

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


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def log_paths(run_dir: Path, job_id: str, rank: int = 0) -> tuple[Path, Path]:
    """submitit's (stderr, stdout) of one global rank (default 0) of a task."""
    paths = JobPaths(RunFolder(Path(run_dir)).submitit_dir, job_id=job_id, task_id=rank)
    return paths.stderr, paths.stdout


def _is_frame(line: str) -> bool:
    stripped = line.lstrip()
    return stripped.startswith('File "') and ", line " in stripped


def summarize_log(lines: list[str], keep: int = LOG_TAIL_LINES) -> list[str]:
    """The last `keep` lines of a log without Python traceback frames (a frame's `File ...`
    line and the indented source and ^^^ lines under it): what is left names the
    exception, its message and the fix. Slurm's own lines (srun:, slurmstepd), which can
    follow a crash by the dozen, get SLURM_LINES of them unless the program said less, so
    the program's last words stay in view."""
    out: list[str] = []
    in_frame = False
    for line in lines:
        if _is_frame(line):
            in_frame = True
            continue
        if in_frame and line.startswith("    "):
            continue
        in_frame = False
        out.append(line)
    slurm = [i for i, line in enumerate(out) if _is_slurm_line(line)]
    program = [i for i, line in enumerate(out) if not _is_slurm_line(line)]
    n_slurm = min(len(slurm), keep, max(SLURM_LINES, keep - len(program)))
    n_program = keep - n_slurm
    chosen = (program[-n_program:] if n_program else []) + (slurm[-n_slurm:] if n_slurm else [])
    return [out[i] for i in sorted(chosen)]


SLURM_LINES = 4


def _is_slurm_line(line: str) -> bool:
    return line.startswith(("srun: ", "slurmstepd", "srun:"))


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


def _finished_per_record(view: dict, record: dict | None, stems: list[str], done_stems,
                         live: sq.JobInfo | None) -> dict:
    """A chunk whose own record says it finished, with every video on disk, is completed,
    whatever Slurm says of a job that was (say) preempted while exiting, unless Slurm is
    about to run it again."""
    finished = (record or {}).get("state") in ("finished", "finished_with_failures")
    ended_oddly = view["state"] in ("failed", "timeout", "cancelled", "unknown", "requeued")
    if not (finished and ended_oddly and stems and all(s in done_stems for s in stems)):
        return view
    if live is not None and live.state in sq.ACTIVE_STATES:
        return view
    said = view["slurm_state"] or view["state"]
    said += f", {view['reason']}" if view["reason"] else ""
    return {**view, "state": "completed", "state_from": "record",
            "reason": f"the chunk's record says finished, every video is on disk (Slurm: {said})"}


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
            views[-1]["log_summary"] = summarize_log(_tail(err_log, 400) or _tail(out_log, 400))
    return {"state": _stage_state([v["state"] for v in views]), "jobs": views}


# ---- the status ----------------------------------------------------------------------------

def slurm_ids_of(jobs: list[dict]) -> list[str]:
    """The Slurm job ids (array masters) in a run's jobs.json, oldest first."""
    return list(dict.fromkeys(str(e["job_id"]) for e in jobs
                              if e.get("job_id") and e.get("executor", "slurm") == "slurm"))


def query_slurm(slurm_ids: list[str], use_sacct: bool = True) -> tuple:
    """(queue, squeue error, accounting, sacct error): one squeue and one sacct call."""
    queue, squeue_error = sq.query_squeue(slurm_ids)
    acct, sacct_error = sq.query_sacct(slurm_ids) if use_sacct else ({}, "sacct not used (use_sacct=False)")
    return queue, squeue_error, acct, sacct_error


def collect_status(run_dir: Path, *, use_sacct: bool = True, now: float | None = None,
                   slurm: tuple | None = None) -> dict:
    """Everything `status` shows, as one JSON-able dict (see docs/MONITOR.md).

    `slurm`: `query_slurm`'s answer for (at least) this run's jobs, when the caller asked
    for many runs at once (`launch.py runs`)."""
    run = RunFolder(Path(run_dir).resolve())
    now = time.time() if now is None else now
    cfg = run.load_config()
    plan, jobs = run.load_plan(), run.jobs()
    outputs = run.output_dir(cfg)
    store = OutputStore.for_config(cfg, outputs)
    done_stems = store.listed_done()
    failure_files = store.listed_failures()

    slurm_ids = slurm_ids_of(jobs)
    queue, squeue_error, acct, sacct_error = slurm or query_slurm(slurm_ids, use_sacct)
    sacct_ok = sacct_error is None

    chunk_jobs = current_chunk_jobs(jobs)
    plan_chunks = {int(c["index"]): list(c.get("stems") or []) for c in plan.chunks}
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
        view = _finished_per_record(view, job_record, stems, done_stems, queue.get(job_id))
        if view["elapsed_s"] is None and job_record and job_record.get("started_at"):
            view["elapsed_s"] = int(max(0.0, job_record.get("updated_at", now) - job_record["started_at"]))
            view["elapsed_from"] = "record"
        active = view["state"] in sq.ACTIVE_STATES
        failed = {s: r for s, r in ((record or {}).get("failed") or {}).items() if s not in done_stems}
        if not active:
            for stem in stems:
                if stem not in done_stems and stem not in failed and stem in failure_files:
                    failed[stem] = store.failure_reason(stem)
        err_log, out_log = log_paths(run.path, job_id) if job_id else (None, None)
        chunk = {
            "index": index, "job_id": job_id, **view,
            "done": sum(s in done_stems for s in stems), "total": len(stems),
            "current": (job_record or {}).get("current") if active else None,
            # the current video's denoising step, as the worker last wrote it (rate-limited)
            "step": (job_record or {}).get("step") if active and (job_record or {}).get("current") else None,
            "steps": (job_record or {}).get("steps") if active and (job_record or {}).get("current") else None,
            "failed": failed, "error": (job_record or {}).get("error"),
            "record_state": (record or {}).get("state"), "record_job_id": (record or {}).get("job_id"),
            "unverified": [s for s in (record or {}).get("done") or [] if s not in done_stems],
            # counted by the worker at each requeue signal, classified from Slurm's end time
            "timeouts": int((record or {}).get("timeouts") or 0),
            "preemptions": int((record or {}).get("preemptions") or 0),
            "log": str(err_log) if err_log else None,
        }
        ended_badly = view["state"] in ("failed", "timeout", "cancelled", "unknown")
        if job_id and (ended_badly or failed or chunk["error"]):
            tail = _tail(err_log) or _tail(out_log)
            chunk["log_tail"] = tail
            chunk["log_summary"] = summarize_log(_tail(err_log, 400) or _tail(out_log, 400))
            if not _tail(err_log) and tail:
                chunk["log"] = str(out_log)
        chunks.append(chunk)

    judge = _stage(run.path, jobs, "judge", queue, acct, sacct_ok)
    judge["results"] = sorted(str(p) for p in judge_dir(run.path).glob("shard-*/result.json"))
    judge["shards"] = len(judge["jobs"]) or cfg.judge.shards
    judge["enabled"] = cfg.judge.enabled
    report = _stage(run.path, jobs, "report", queue, acct, sacct_ok)
    report_md = run.report_dir / "report.md"
    report["present"] = report_md.exists()
    report["path"] = str(report_md)

    totals = _totals(cfg, plan, chunks, records, jobs, acct, done_stems, now)
    # made elsewhere and taken in by `launch.py adopt` (settings assumed, not measured)
    totals["adopted"] = len(store.listed_adopted(done_stems) & set(plan.stems))
    local_active = any(c["state"] in sq.ACTIVE_STATES for c in chunks if not c["job_id"]
                       or chunk_jobs.get(c["index"], ("", {}))[1].get("executor", "slurm") != "slurm")
    slurm_active = any(j.state in sq.ACTIVE_STATES for j in queue.values())
    return {
        "run": run.name, "path": str(run.path), "output_dir": str(outputs), "time": now,
        "chunks": chunks, "judge": judge, "report": report, "totals": totals,
        "sacct": sacct_ok, "sacct_error": sacct_error, "squeue_error": squeue_error,
        "squeue_cmd": sq.squeue_command(slurm_ids),
        "finished": squeue_error is None and not slurm_active and not local_active,
        "on_node_check": on_node_check_summary(run.path.parent),
    }


def report_score(run_dir: Path) -> float | None:
    """The total score in the run's report.json, when the run was judged and reported."""
    report = read_json_object(RunFolder(Path(run_dir)).report_dir / "report.json") or {}
    total = (report.get("scores") or {}).get("total")
    return round(float(total), 2) if isinstance(total, (int, float)) else None


def on_node_check_summary(logs_dir: Path) -> dict | None:
    """The newest `check --on-node` of this logs folder: passed or not, when, where."""
    from wmsub.login.onnode import latest_check
    result = latest_check(logs_dir)
    if not result:
        return None
    return {"ok": bool(result.get("ok")), "job_id": result.get("job_id"),
            "finished_at": result.get("finished_at"), "folder": result.get("folder"),
            "problems": [f"{p['key']}: {p['what']}" for p in result.get("problems") or []]}


def _totals(cfg, plan, chunks, records, jobs, acct, done_stems, now) -> dict:
    planned = plan.stems
    total = len(planned) if planned else plan.counts.get("instances", 0)
    done = sum(s in done_stems for s in planned)
    finished_at = [v["finished_at"] for r in records for v in r.get("videos") or []
                   if v.get("finished_at")]
    starts = [r["started_at"] for r in records if r.get("started_at")]
    first = min(starts + finished_at) if (starts or finished_at) else now
    active = any(c["state"] in sq.ACTIVE_STATES for c in chunks)
    # Once nothing runs, the rate is the one of the run's active window (up to its last
    # video), not one that keeps falling as the clock goes on.
    end = now if active or not finished_at else max(finished_at)
    window = max(60.0, min(RATE_WINDOW_S, end - first))
    recent = sum(1 for t in finished_at if end - window <= t <= end + 60)
    rate = recent * 3600.0 / window
    remaining = max(0, total - done)
    if remaining == 0:
        eta = 0.0
    elif not active:  # ended, cancelled, or never submitted: nothing will finish the rest
        eta = None
    else:
        eta = remaining * 3600.0 / rate if rate > 0 else None
    # Every gen task that ever ran, superseded ones included: their GPU time was spent too.
    gen_ids = {str(t) for e in jobs if e.get("stage", "gen") == "gen"
               for t in ((e.get("tasks") or {}).values() or [e.get("job_id")])}
    counted = {j for j in gen_ids if j in acct}
    gpu_s = sum(acct[j].elapsed_s for j in counted)
    gpu_s += sum(c["elapsed_s"] or 0 for c in chunks if c["job_id"] not in counted)
    failed = sum(c["total"] - c["done"] for c in chunks
                 if c["state"] not in sq.ACTIVE_STATES and c["state"] != "not submitted")
    # Stems the planner left out because they already failed output.max_attempts times.
    plan_failed = plan.failed_stems
    return {"done": done, "total": total, "failed": failed,
            "plan_failed": sorted(s for s in plan_failed if s not in done_stems),
            "videos_per_hour": round(rate, 2), "eta_s": None if eta is None else round(eta),
            "active": active, "rate_until": end,
            "gpu_hours": round(gpu_s * cfg.slurm.gpus_per_job / 3600.0, 3),
            "failed_chunks": sum(c["state"] in ("failed", "timeout", "cancelled") for c in chunks),
            "restarts": sum(c["restarts"] for c in chunks),
            "timeouts": sum(c["timeouts"] for c in chunks),
            "preemptions": sum(c["preemptions"] for c in chunks)}


