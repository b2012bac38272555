"""The run report: report.md + report.json + PNG charts.

`run_report(run_dir)` is the Slurm report job's entry (merges the judge shards when
needed); `write_report(None, results_path, out_dir)` reports on any official judge
results file, e.g. one produced by hand.
"""
from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

from wmsub import CHECKOUT, DATA_DIR
from wmsub.benchmark.manifest import stem_domains
from wmsub.config import Config
from wmsub.score.judge import judge_dir, merge_shards
from wmsub.state.runs import RunFolder
from wmsub.score.scoring import COMMON_SENSE, PHYSICS, coverage, score, score_by_domain

LEADERBOARD_PATH = DATA_DIR / "leaderboard.json"
SAMPLES_PER_DOMAIN = 2
MISSING_LISTED = 20  # missing stems named in report.md (report.json has all)
LEADERBOARD_COLUMNS = (("instruction", "Instr."), ("framewise", "Frame"), ("temporal", "Temp."),
                       ("newton", "Newton"), ("mass", "Mass"), ("fluid", "Fluid"),
                       ("penetration", "Penetr."), ("gravity", "Grav."), ("total", "Total"))


# What the charts and the contact sheet need, with the pins of pyproject.toml (core install).
REPORT_MODULES = {"matplotlib": "matplotlib==3.11.2", "imageio_ffmpeg": "imageio-ffmpeg==0.8.1"}


class ReportDependencyError(RuntimeError):
    """A module the report needs is not installed in this interpreter."""


def missing_report_modules() -> list[str]:
    """The pip requirements of REPORT_MODULES that this interpreter cannot import."""
    return [pin for module, pin in REPORT_MODULES.items() if importlib.util.find_spec(module) is None]


def require_report_modules() -> None:
    missing = missing_report_modules()
    if missing:
        raise ReportDependencyError(
            f"the report needs {', '.join(missing)}, which this interpreter ({sys.executable}) "
            f"cannot import (charts and video frames) — fix: pip install {' '.join(missing)}, "
            f"or the login-node install: pip install -e {CHECKOUT}")


def load_leaderboard() -> dict:
    return json.loads(LEADERBOARD_PATH.read_text())


def run_report(run_dir: str) -> str:
    """Slurm report job: merge the judge shards if needed, then write
    `<run_dir>/report/`. Returns the path of report.md."""
    run_dir = Path(run_dir)
    return str(write_report(run_dir, None, run_dir / "report"))


def merge_if_stale(run_dir: Path) -> None:
    """Merge the shard results when results.json is missing or older than one of them."""
    jdir = judge_dir(run_dir)
    if not (jdir / "shards.json").is_file():
        return
    merged = jdir / "results.json"
    if not merged.is_file() or any(p.stat().st_mtime >= merged.stat().st_mtime
                                   for p in jdir.glob("shard-*/result.json")):
        merge_shards(run_dir)


def write_report(run_dir: Path | None, results_path: Path | None, out_dir: Path,
                 cfg: Config | None = None) -> Path:
    """Write report.md, report.json and the PNGs into out_dir; returns report.md.

    With run_dir, the config, expected stems and generation records come from the
    run folder and results_path defaults to `<run_dir>/judge/results.json`. Without
    it, `cfg` (optional) gives bench.root for domains; without a benchmark file the
    per-domain table is skipped with a note.
    """
    require_report_modules()  # before any file is written: never a report of blank tiles
    from wmsub.score import charts
    notes: list[str] = []
    run_dir = Path(run_dir) if run_dir is not None else None
    if cfg is None and run_dir is not None and (run_dir / "config.yaml").is_file():
        cfg = RunFolder(run_dir).load_config()
    if results_path is None:
        if run_dir is None:
            raise ValueError("write_report needs a run folder or a results file")
        merge_if_stale(run_dir)
        results_path = judge_dir(run_dir) / "results.json"
    results_path = Path(results_path)
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path}: no judge results file; run the judge stage "
                                f"(or pass --results FILE of an official evaluation.py run)")
    try:
        results = json.loads(results_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{results_path}: not valid JSON ({e}); is it a judge results file?") from None
    scores = score(results, str(results_path))
    model_name = results.get("model_name") or (cfg.model.name if cfg else "model")

    domains, domain_note = _domain_map(run_dir, cfg)
    expected, expected_note = _expected_stems(run_dir, domains, results)
    notes += [n for n in (domain_note, expected_note) if n]
    cov = coverage(results, expected)
    by_domain = score_by_domain(results, domains, str(results_path)) if domains else None

    leaderboard = load_leaderboard()
    rank = rank_against(leaderboard, model_name, scores)
    generation = generation_stats(run_dir, cfg) if run_dir is not None else None
    judging = judge_stats(run_dir) if run_dir is not None else None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"scores_chart": charts.scores_chart(out_dir / "scores.png", model_name, scores, leaderboard).name}
    if by_domain:
        files["domains_chart"] = charts.domains_chart(out_dir / "domains.png", by_domain).name
    samples = _samples(results, domains, _video_dir(run_dir, cfg, results_path))
    if samples is not None:
        files["contact_sheet"] = charts.contact_sheet(out_dir / "contact_sheet.png", samples).name
    else:
        notes.append("no video folder known: contact sheet skipped")

    report = {"model_name": model_name, "results_path": str(results_path),
              "run_dir": str(run_dir) if run_dir else None, "scores": scores, "coverage": cov,
              "rank": rank, "seed": leaderboard.get("seed"), "domains": by_domain,
              "generation": generation, "judge": judging, "files": files, "notes": notes}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    md = out_dir / "report.md"
    md.write_text(render_markdown(report))
    return md


def rank_against(leaderboard: dict, model_name: str, scores: dict) -> dict:
    """Insert this run into the paper's leaderboard by total (2 decimals, as published).

    Ties go below the published entry: a published 8.65 outranks our 8.65.
    """
    rows = [dict(m, this_run=False) for m in leaderboard["models"]]
    if scores.get("total") is None:
        return {"rank": None, "of": len(rows) + 1, "open_rank": None, "table": rows}
    mine = {"name": model_name, "type": "open", "this_run": True,
            **{key: scores[key] for key, _ in LEADERBOARD_COLUMNS}}
    total = round(scores["total"], 2)
    position = sum(1 for m in rows if m["total"] >= total)
    rows.insert(position, mine)
    open_rank = sum(1 for m in rows[:position] if m["type"] == "open") + 1
    return {"rank": position + 1, "of": len(rows), "open_rank": open_rank, "table": rows}


def generation_stats(run_dir: Path, cfg: Config | None) -> dict:
    """Numbers from the workers' progress records (`chunks/*.json`); tolerates
    missing and unreadable records (counted in `unreadable_records`)."""
    records, unreadable = [], []
    for path in sorted((run_dir / "chunks").glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            unreadable.append(path.name)
    done, failed, seconds, steps = set(), {}, {}, []
    wall_s = 0.0
    for r in records:
        done.update(r.get("done") or [])
        failed.update(r.get("failed") or {})
        for v in r.get("videos") or []:
            if v.get("stem") is not None and v.get("seconds") is not None:
                seconds[v["stem"]] = float(v["seconds"])
                if v.get("s_per_step"):
                    steps.append(float(v["s_per_step"]))
        if r.get("started_at") and r.get("updated_at"):
            wall_s += max(0.0, float(r["updated_at"]) - float(r["started_at"]))
    gpus = cfg.slurm.gpus_per_job if cfg else None
    per_video = list(seconds.values())
    states: dict[str, int] = {}
    for r in records:
        states[r.get("state", "unknown")] = states.get(r.get("state", "unknown"), 0) + 1
    return {
        "chunk_records": len(records), "unreadable_records": unreadable, "chunk_states": states,
        "videos": len(done), "failures": len([s for s in failed if s not in done]),
        "failed": {s: why for s, why in failed.items() if s not in done},
        "timed_videos": len(per_video),
        "seconds_per_video_mean": statistics.fmean(per_video) if per_video else None,
        "seconds_per_video_median": statistics.median(per_video) if per_video else None,
        "seconds_per_step_mean": statistics.fmean(steps) if steps else None,
        "gpus_per_job": gpus,
        # generating time only (excludes model loading and waiting) vs chunk wall time
        "gpu_hours_generating": sum(per_video) * gpus / 3600 if gpus else None,
        "gpu_hours_chunk_wall": wall_s * gpus / 3600 if gpus else None,
        "requeues": sum(int(r.get("restarts") or 0) for r in records),
        "timeouts": sum(int(r.get("timeouts") or 0) for r in records),
        "preemptions": sum(int(r.get("preemptions") or 0) for r in records),
    }


def judge_stats(run_dir: Path) -> dict | None:
    """Per-shard numbers from `judge/shard-*/status.json` (one GPU per shard)."""
    jdir = judge_dir(run_dir)
    if not (jdir / "shards.json").is_file():
        return None
    n_shards = len(json.loads((jdir / "shards.json").read_text())["shards"])
    statuses = []
    for i in range(n_shards):
        path = jdir / f"shard-{i}" / "status.json"
        try:
            statuses.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    seconds = sum(float(st.get("seconds") or 0.0) for st in statuses)
    return {"shards": n_shards,
            "shards_with_result": sum((jdir / f"shard-{i}" / "result.json").is_file() for i in range(n_shards)),
            "judge_seconds": seconds, "gpu_hours": seconds / 3600,
            "not_in_judge_list": sorted({s for st in statuses for s in st.get("not_in_judge_list", [])})}


def _domain_map(run_dir: Path | None, cfg: Config | None) -> tuple[dict | None, str | None]:
    """{stem: domain}: the run's plan has it; otherwise the benchmark file of `cfg`."""
    if run_dir is not None:
        domains = RunFolder(run_dir).load_plan().domains
        if domains:
            return domains, None
    if cfg is None:
        return None, "no benchmark file given (bench.root): per-domain table skipped"
    bench_json = Path(cfg.bench.root) / cfg.bench.json_file
    if not bench_json.is_file():
        return None, f"{bench_json} not found: per-domain table skipped"
    return stem_domains(bench_json), None


def _expected_stems(run_dir: Path | None, domains: dict | None, results: dict):
    if run_dir is not None:
        shards_file = judge_dir(run_dir) / "shards.json"
        if shards_file.is_file():
            data = json.loads(shards_file.read_text())
            return data.get("stems") or [s for shard in data["shards"] for s in shard], None
    if domains:
        return list(domains), None
    return list(results.get("preds", {})), "no list of expected videos: coverage counts judged videos only"


def _video_dir(run_dir: Path | None, cfg: Config | None, results_path: Path) -> Path | None:
    if run_dir is not None and (judge_dir(run_dir) / "shards.json").is_file():
        return Path(json.loads((judge_dir(run_dir) / "shards.json").read_text())["video_dir"])
    if cfg is not None and Path(cfg.output.dir).is_dir():
        return Path(cfg.output.dir)
    return None


def _samples(results: dict, domains: dict | None, video_dir: Path | None):
    """Up to SAMPLES_PER_DOMAIN judged videos per domain, spread over its list."""
    if video_dir is None:
        return None
    groups: dict[str, list[str]] = {}
    for stem in results.get("preds", {}):
        if (video_dir / f"{stem}.mp4").is_file():
            groups.setdefault(domains.get(stem, "?") if domains else "all", []).append(stem)
    if domains:
        order = list(dict.fromkeys(domains.values()))
        groups = {d: groups[d] for d in sorted(groups, key=lambda d: order.index(d) if d in order else 99)}
    per_group = SAMPLES_PER_DOMAIN if domains else 2 * SAMPLES_PER_DOMAIN
    samples = []
    for domain, stems in groups.items():
        k = min(per_group, len(stems))
        picks = [stems[round(i * (len(stems) - 1) / max(1, k - 1))] for i in range(k)] if k > 1 else stems[:k]
        samples += [(domain, s, video_dir / f"{s}.mp4") for s in picks]
    return samples


def _f(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    s, cov, seed = report["scores"], report["coverage"], report.get("seed") or {}
    lines = [f"# WorldModelBench report: {report['model_name']}", ""]
    if report["run_dir"]:
        lines.append(f"Run folder: `{report['run_dir']}`  ")
    lines.append(f"Judge results: `{report['results_path']}`")
    lines.append("")
    flag = f" — **SHORT: {len(cov['missing'])} missing**" if cov["short"] else ""
    lines.append(f"**Coverage: {cov['judged']} of {cov['expected']} videos judged**{flag}. "
                 f"The official judge silently skips missing videos, so scores are over the judged ones.")
    if cov["missing"]:
        shown = ", ".join(f"`{m}`" for m in cov["missing"][:MISSING_LISTED])
        more = f" and {len(cov['missing']) - MISSING_LISTED} more" if len(cov["missing"]) > MISSING_LISTED else ""
        lines.append(f"Missing: {shown}{more}.")
    lines += ["", "## Scores", "",
              "| Dimension | Sub-dimension | Score | Seed run | Δ vs seed |", "|---|---|---|---|---|"]

    def row(dim, sub, key, out_of=""):
        mine, ref = s.get(key), seed.get(key)
        delta = _f(mine - ref, 2) if mine is not None and ref is not None else "–"
        lines.append(f"| {dim} | {sub} | {_f(mine)}{out_of} | {_f(ref)}{out_of} | {delta} |")

    row("Instruction Following", "Overall", "instruction", " / 3")
    for i, key in enumerate(PHYSICS):
        row("Physical Laws" if i == 0 else "", key.title(), key)
    row("", "Overall", "physical_laws", " / 5")
    for i, key in enumerate(COMMON_SENSE):
        row("Common Sense" if i == 0 else "", key.title(), key)
    row("", "Overall", "common_sense", " / 2")
    row("**Total**", "", "total", " / 10")

    rank = report["rank"]
    lines += ["", "## Against the paper's judge leaderboard", ""]
    if rank["rank"] is None:
        lines.append("No video was judged: no rank.")
    else:
        lines.append(f"Rank **{rank['rank']} of {rank['of']}** by total (open-source rank "
                     f"{rank['open_rank']}); ties rank below the published entry.")
    lines += ["", "| Rank | Model | Type | " + " | ".join(h for _, h in LEADERBOARD_COLUMNS) + " |",
              "|---" * (3 + len(LEADERBOARD_COLUMNS)) + "|"]
    for i, m in enumerate(rank["table"], 1):
        cells = [str(i), m["name"], m["type"]] + [_f(m.get(k)) for k, _ in LEADERBOARD_COLUMNS]
        if m["this_run"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## Per domain", ""]
    if report["domains"]:
        keys = ("instruction", *PHYSICS, "physical_laws", *COMMON_SENSE, "common_sense", "total")
        heads = ("Instr.", "Newton", "Mass", "Fluid", "Penetr.", "Grav.", "Physics",
                 "Frame", "Temp.", "Common", "Total")
        lines += ["| Domain | Judged | " + " | ".join(heads) + " |", "|---" * (2 + len(heads)) + "|"]
        for domain, d in report["domains"].items():
            lines.append(f"| {domain} | {d['judged']} | " + " | ".join(_f(d[k]) for k in keys) + " |")
    else:
        lines.append("Skipped: no benchmark file to map videos to domains (give bench.root).")

    lines += ["", "## Charts", ""]
    for key, title in (("scores_chart", "Scores"), ("domains_chart", "Per domain"),
                       ("contact_sheet", "Sample frames (first, middle, last)")):
        if key in report["files"]:
            lines += [f"### {title}", "", f"![{title}]({report['files'][key]})", ""]

    g = report["generation"]
    if g is not None:
        lines += ["## Generation", "", "| Item | Value |", "|---|---|",
                  f"| Videos made (progress records) | {g['videos']} |",
                  f"| Failures | {g['failures']} |",
                  f"| Seconds per video (mean / median) | {_f(g['seconds_per_video_mean'], 1)} / "
                  f"{_f(g['seconds_per_video_median'], 1)} |",
                  f"| Seconds per step (mean) | {_f(g['seconds_per_step_mean'], 3)} |",
                  f"| GPUs per job | {g['gpus_per_job'] if g['gpus_per_job'] else '–'} |",
                  f"| GPU-hours generating / chunk wall time | {_f(g['gpu_hours_generating'])} / "
                  f"{_f(g['gpu_hours_chunk_wall'])} |",
                  f"| Requeues (timeouts, preemptions) | {g['requeues']} ({g['timeouts']}, {g['preemptions']}) |",
                  f"| Chunk records (unreadable) | {g['chunk_records']} ({len(g['unreadable_records'])}) |",
                  ""]
        for stem, why in list(g["failed"].items())[:MISSING_LISTED]:
            lines.append(f"- failed `{stem}`: {why}")
    j = report.get("judge")
    if j is not None:
        lines += ["", "## Judge", "",
                  f"{j['shards_with_result']} of {j['shards']} shards have a result; "
                  f"judging took {_f(j['gpu_hours'], 3)} GPU-hours."]
        if j["not_in_judge_list"]:
            lines.append("Not in the judge repo's worldmodelbench.json (never judged): "
                         + ", ".join(f"`{s}`" for s in j["not_in_judge_list"][:MISSING_LISTED]))
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    text = "\n".join(lines)
    while "\n\n\n" in text:  # sections that are absent leave empty lines behind
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"
