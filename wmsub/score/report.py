"""The run report: report.md, report.json, PNG charts and the HTML explorer (index.html).

`run_report(run_dir)` is the Slurm report job's entry (merges the judge shards when
needed); `write_report(None, results_path, out_dir)` reports on any official judge
results file, e.g. one produced by hand. Nothing here needs torch.

What the report claims, and on what grounds:
- scores are the official formulas over the judged videos, each with a 95% bootstrap
  interval over instances (score/bootstrap.py);
- coverage says how many of the benchmark's 350 instances were judged and, for each one
  that was not, whether its video is missing or the judge failed on it (log tail shown);
- a subset (fewer than 350 judged) is labelled as not comparable with the leaderboard
  and gets no rank; leaderboard gaps inside the interval are named as such.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from wmsub import CHECKOUT
from wmsub.benchmark.manifest import ManifestError, read_entries
from wmsub.config import Config
from wmsub.score import leaderboard as lb
from wmsub.score.bootstrap import RESAMPLES, SEED, bootstrap_ci
from wmsub.score.judge import judge_dir, merge_shards, read_shards_file, shards_path, why_not_judged
from wmsub.score.report_md import render_markdown
from wmsub.score.run_facts import STANDIN_NOTE, generation_stats, judge_stats, run_settings, selection
from wmsub.score.scoring import coverage, per_video, score_verdicts, score_by_domain
from wmsub.state.jsonio import write_json_atomic
from wmsub.state.runs import RunFolder


# What the charts, the contact sheet and the explorer need, with the pins of pyproject.toml
# (the core install): module -> pip requirement.
REPORT_MODULES = {"matplotlib": "matplotlib==3.11.2", "imageio_ffmpeg": "imageio-ffmpeg==0.8.1",
                  "PIL": "pillow==13.0.0", "numpy": "numpy==2.4.6"}


class ReportDependencyError(RuntimeError):
    """A module the report needs is not installed: an error, never a blank tile."""


def missing_report_modules() -> list[str]:
    """The pip requirements of REPORT_MODULES that this interpreter cannot import."""
    return [pin for module, pin in REPORT_MODULES.items() if importlib.util.find_spec(module) is None]


def require_report_modules() -> None:
    missing = missing_report_modules()
    if missing:
        raise ReportDependencyError(
            f"the report needs {', '.join(missing)}, which this interpreter ({sys.executable}) "
            f"cannot import (charts, video frames, the explorer) — fix: pip install "
            f"{' '.join(missing)}, or the login-node install: pip install -e {CHECKOUT}")


def run_report(run_dir: str) -> str:
    """Slurm report job: merge the judge shards if needed, then write
    `<run_dir>/report/`. Returns the path of report.md."""
    run_dir = Path(run_dir)
    return str(write_report(run_dir, None, RunFolder(run_dir).report_dir))


def merge_if_stale(run_dir: Path) -> None:
    """Merge the shard results when results.json is missing or older than a shard's
    result or failure record."""
    jdir = judge_dir(run_dir)
    if not shards_path(run_dir).is_file():
        return
    merged = jdir / "results.json"
    inputs = [*jdir.glob("shard-*/result.json"), *jdir.glob("shard-*/failed.json"), shards_path(run_dir)]
    if not merged.is_file() or any(p.stat().st_mtime >= merged.stat().st_mtime for p in inputs):
        merge_shards(run_dir)


def load_results(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no judge results file; run the judge stage "
                                f"(or pass --results FILE of an official evaluation.py run)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); is it a judge results file?") from None


def write_report(run_dir: Path | None, results_path: Path | None, out_dir: Path,
                 cfg: Config | None = None) -> Path:
    """Write report.md, report.json, the PNGs and index.html into out_dir; returns report.md.

    With run_dir, the config, expected stems and generation records come from the
    run folder and results_path defaults to `<run_dir>/judge/results.json`. Without
    it, `cfg` (optional) gives bench.root for domains and prompts; without a benchmark
    file the per-domain table is skipped with a note.
    """
    require_report_modules()  # before any file is written: never a report of blank tiles
    from wmsub.score import charts, explorer  # after the check: a clear error, not an ImportError

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
    results = load_results(results_path)
    verdicts = per_video(results, str(results_path))
    scores = score_verdicts(verdicts)
    ci95 = bootstrap_ci(verdicts)
    model_name = results.get("model_name") or (cfg.model.name if cfg else "model")

    entries, entries_note = _benchmark_entries(cfg)
    domains, domain_note = _domain_map(run_dir, entries)
    expected, expected_note = _expected_stems(run_dir, domains, results)
    notes += [n for n in (entries_note, domain_note, expected_note) if n]
    cov = coverage(results, expected)
    if run_dir is not None and shards_path(run_dir).is_file():
        cov.update(why_not_judged(run_dir, cov["missing"]))
    cov["judged_domains"] = _judged_domains(verdicts, domains)
    cov["selection"] = selection(cfg) if run_dir is not None else []
    cov["label"] = coverage_label(cov)
    by_domain = score_by_domain(results, domains, str(results_path)) if domains else None

    board = lb.load_leaderboard()
    comparable = not cov["subset"]
    from wmsub.engine_specs import BUILT_IN
    model_type = "open" if cfg is None or cfg.model.engine in BUILT_IN else None
    rows = lb.board_rows(board, model_name, scores, ci95, comparable, model_type)
    rank, open_rank = lb.rank_of(rows) if comparable else (None, None)
    generation = generation_stats(run_dir, cfg) if run_dir is not None else None
    judging = judge_stats(run_dir) if run_dir is not None else None
    settings = run_settings(run_dir, cfg, generation, judging) if run_dir is not None and cfg else None
    if judging and judging["standin"]:
        notes.insert(0, STANDIN_NOTE)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"scores_chart": charts.scores_chart(out_dir / "scores.png", model_name, scores, board,
                                                 ci95).name}
    if by_domain:
        files["domains_chart"] = charts.domains_chart(out_dir / "domains.png", by_domain).name
    video_dir = _video_dir(run_dir, cfg)
    samples = _samples(results, domains, video_dir)
    if samples is not None:
        sheet_rows = [(d, s, p, _prompt(entries, s), _video_total(verdicts, s)) for d, s, p in samples]
        files["contact_sheet"] = charts.contact_sheet(out_dir / "contact_sheet.png", sheet_rows).name
    else:
        notes.append("no video folder known: contact sheet skipped, explorer cards have no video")

    report = {"model_name": model_name, "results_path": str(results_path),
              "run_dir": str(run_dir) if run_dir else None, "scores": scores, "ci95": ci95,
              "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "level": 0.95, "unit": "instance"},
              "coverage": cov, "rank": rank, "open_rank": open_rank, "leaderboard": rows,
              "indistinguishable": lb.indistinguishable(rows),
              "seed": board.get("seed"), "domains": by_domain, "settings": settings,
              "generation": generation, "judge": judging, "files": files, "notes": notes}
    files["explorer"] = explorer.write_explorer(out_dir, report, verdicts, entries, video_dir,
                                                bench_root=Path(cfg.bench.root) if cfg else None).name
    write_json_atomic(out_dir / "report.json", report)
    md = out_dir / "report.md"
    md.write_text(render_markdown(report))
    return md


def coverage_label(cov: dict) -> str:
    """One line saying how much of the benchmark the scores cover."""
    judged = cov["judged"]
    if not cov["subset"]:
        return f"all {cov['of']} instances judged: comparable with the leaderboard"
    parts = [f"{d} {n}" for d, n in cov["judged_domains"].items()]
    where = f" (domains: {', '.join(parts)})" if parts else ""
    how = f"; selected with {', '.join(cov['selection'])}" if cov.get("selection") else ""
    return (f"{judged} of {cov['of']} instances{where}{how}: not comparable with the "
            f"leaderboard, no rank")


def _judged_domains(verdicts, domains: dict | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in verdicts:
        d = (domains or {}).get(v.stem, "?")
        counts[d] = counts.get(d, 0) + 1
    return counts


def _benchmark_entries(cfg: Config | None) -> tuple[dict, str | None]:
    """{stem: worldmodelbench.json entry} of the config's benchmark file (prompts, domains)."""
    if cfg is None:
        return {}, "no benchmark file given (bench.root): per-domain table and prompts skipped"
    path = Path(cfg.bench.root) / cfg.bench.json_file
    try:
        entries = read_entries(path)
    except ManifestError as e:
        return {}, f"benchmark file unreadable, per-domain table and prompts skipped: {e.problems[0]}"
    return {Path(e["first_frame"]).stem: e for e in entries
            if isinstance(e, dict) and isinstance(e.get("first_frame"), str)}, None


def _domain_map(run_dir: Path | None, entries: dict) -> tuple[dict | None, str | None]:
    """{stem: domain}: the run's plan has it; otherwise the benchmark file."""
    if run_dir is not None:
        domains = RunFolder(run_dir).load_plan().domains
        if domains:
            return domains, None
    if entries:
        return {s: e.get("domain", "?") for s, e in entries.items()}, None
    return None, None


def _expected_stems(run_dir: Path | None, domains: dict | None, results: dict):
    if run_dir is not None and shards_path(run_dir).is_file():
        data = read_shards_file(run_dir)
        return data.get("stems") or [s for shard in data["shards"] for s in shard], None
    if run_dir is not None and RunFolder(run_dir).load_plan().stems:
        return RunFolder(run_dir).load_plan().stems, None
    if domains:
        return list(domains), None
    return list(results.get("preds", {})), "no list of expected videos: coverage counts judged videos only"


def _video_dir(run_dir: Path | None, cfg: Config | None) -> Path | None:
    if run_dir is not None and shards_path(run_dir).is_file():
        return Path(read_shards_file(run_dir)["video_dir"])
    if run_dir is not None and cfg is not None:
        return RunFolder(run_dir).output_dir(cfg)
    if cfg is not None and Path(cfg.output.dir).is_dir():
        return Path(cfg.output.dir)
    return None


SAMPLES_PER_DOMAIN = 2


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


def _prompt(entries: dict, stem: str) -> str:
    return str((entries.get(stem) or {}).get("text_instruction") or "")


def _video_total(verdicts, stem: str) -> float | None:
    return next((v.total for v in verdicts if v.stem == stem), None)
