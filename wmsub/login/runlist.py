"""`launch.py runs`: every run under a logs folder, one line each.

One squeue and one sacct call for all the runs' jobs together; the rest is read from
each run folder (as `status` does, through `monitor.collect_status`).
"""
from __future__ import annotations

from pathlib import Path

from wmsub.login import slurm_query as sq
from wmsub.login.monitor import collect_status, query_slurm, report_score, slurm_ids_of
from wmsub.state.runs import RunFolder, read_latest


def run_state(status: dict) -> str:
    """One word for a whole run: the most active state of any of its jobs, else how the
    generation ended (`completed` only when every video is on disk)."""
    states = [c["state"] for c in status["chunks"]]
    states += [j["state"] for stage in ("judge", "report") for j in status[stage]["jobs"]]
    for active in sq.ACTIVE_STATES:
        if active in states:
            return active
    t = status["totals"]
    if t["total"] and t["done"] == t["total"]:
        return "completed"
    for bad in ("failed", "timeout", "cancelled", "unknown", "not submitted"):
        if bad in states:
            return bad
    return "incomplete"


def collect_runs(logs_dir: Path) -> list[dict]:
    """Every run folder under logs_dir (those with a config.yaml), oldest first."""
    logs = Path(logs_dir)
    runs = sorted((RunFolder(p.resolve()) for p in logs.iterdir()
                   if p.is_dir() and (p / "config.yaml").is_file()),
                  key=lambda r: (r.launch_info().get("created_at") or r.path.stat().st_mtime, r.name)
                  ) if logs.is_dir() else []
    ids = [i for r in runs for i in slurm_ids_of(r.jobs())]
    slurm = query_slurm(ids)
    latest = (read_latest(logs) or "").strip()
    out = []
    for run in runs:
        try:
            status = collect_status(run.path, slurm=slurm)
        except Exception as e:  # noqa: BLE001 - one broken folder must not hide the others
            out.append({"name": run.name, "path": str(run.path), "error": f"{type(e).__name__}: {e}"})
            continue
        t = status["totals"]
        out.append({"name": run.name, "path": str(run.path),
                    "config": run.launch_info().get("config") or "",
                    "state": run_state(status), "done": t["done"], "total": t["total"],
                    "gpu_hours": t["gpu_hours"], "score": report_score(run.path),
                    "latest": run.name == latest})
    return out


def format_runs(runs: list[dict], logs_dir: Path) -> str:
    if not runs:
        return f"no runs under {logs_dir}/ yet (start one with `python launch.py`)"
    width = max(len(r["name"]) for r in runs)
    lines = [f"  {'run':<{width}}  {'config':<28} {'state':<13} {'done':^11}  {'GPU-h':>8}  score"]
    for r in runs:
        mark = "*" if r.get("latest") else " "
        if "error" in r:
            lines.append(f"{mark} {r['name']:<{width}}  unreadable: {r['error']}")
            continue
        score = f"{r['score']:.2f}" if r["score"] is not None else "-"
        config = Path(r["config"]).name if r["config"] else "-"
        lines.append(f"{mark} {r['name']:<{width}}  {config:<28} {r['state']:<13} "
                     f"{r['done']:>5}/{r['total']:<5}  {r['gpu_hours']:>8.2f}  {score}")
    lines.append(f"(* the latest run; folders under {logs_dir})")
    return "\n".join(lines)
