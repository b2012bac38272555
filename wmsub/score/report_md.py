"""report.md: the Markdown view of report.json (every number in it comes from there)."""
from __future__ import annotations

from wmsub.score.leaderboard import COLUMNS
from wmsub.score.run_facts import STANDIN_NOTE
from wmsub.score.scoring import COMMON_SENSE, PHYSICS

LISTED = 20  # stems named per list in report.md (report.json has all)


def _f(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci) -> str:
    return "–" if not ci or ci[0] is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _stems(stems: list[str]) -> str:
    shown = ", ".join(f"`{s}`" for s in stems[:LISTED])
    return shown + (f" and {len(stems) - LISTED} more" if len(stems) > LISTED else "")


def render_markdown(report: dict) -> str:
    lines = [f"# WorldModelBench report: {report['model_name']}", ""]
    if report["run_dir"]:
        lines.append(f"Run folder: `{report['run_dir']}`  ")
    lines.append(f"Judge results: `{report['results_path']}`  ")
    if "explorer" in report["files"]:
        lines.append(f"Browse every video with the judge's answers: [{report['files']['explorer']}]"
                     f"({report['files']['explorer']})")
    if (report.get("judge") or {}).get("standin"):
        lines += ["", f"> **{STANDIN_NOTE}**"]
    lines += [""] + _coverage(report["coverage"]) + [""] + _scores(report) + [""]
    lines += _leaderboard(report) + [""] + _domains(report) + [""] + _charts(report)
    lines += _settings(report.get("settings")) + _generation(report.get("generation"))
    lines += _judge(report.get("judge"))
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    text = "\n".join(lines)
    while "\n\n\n" in text:  # sections that are absent leave empty lines behind
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"


def _coverage(cov: dict) -> list[str]:
    subset = " — **SUBSET**" if cov["subset"] else ""
    lines = [f"**Coverage: {cov['label']}**{subset}. "
             f"{cov['judged']} of the run's {cov['expected']} videos were judged; the official "
             f"judge silently skips what it cannot find, so scores are over the judged ones."]
    for key, what in (("video_missing", "video missing (never generated or lost)"),
                      ("judge_failed", "video exists, the judge failed on it"),
                      ("not_in_judge_list", "video exists, the judge repo's worldmodelbench.json does not list it"),
                      ("not_judged", "video exists, not judged yet (run `python launch.py judge`)")):
        if cov.get(key):
            lines.append(f"- {len(cov[key])} {what}: {_stems(cov[key])}")
    if "video_missing" not in cov and cov["missing"]:
        lines.append(f"- {len(cov['missing'])} not judged: {_stems(cov['missing'])}")
    for f in cov.get("shard_failures") or []:
        lines += ["", f"Judge shard {f['shard']} failed ({len(f['stems'])} video(s)): {f['why']}. "
                  f"Last lines of `{f['log']}`:", "", "```", f["log_tail"], "```"]
    return lines


def _scores(report: dict) -> list[str]:
    s, ci, seed = report["scores"], report["ci95"], report.get("seed") or {}
    lines = ["## Scores", "",
             f"95% intervals: bootstrap over instances ({report['bootstrap']['resamples']} resamples, "
             f"seed {report['bootstrap']['seed']}).", "",
             "| Dimension | Sub-dimension | Score | 95% interval | Seed run | Δ vs seed |",
             "|---|---|---|---|---|---|"]

    def row(dim, sub, key, out_of=""):
        mine, ref = s.get(key), seed.get(key)
        delta = _f(mine - ref) if mine is not None and ref is not None else "–"
        lines.append(f"| {dim} | {sub} | {_f(mine)}{out_of} | {_ci(ci.get(key))} | {_f(ref)}{out_of} | {delta} |")

    row("Instruction Following", "Overall", "instruction", " / 3")
    for i, key in enumerate(PHYSICS):
        row("Physical Laws" if i == 0 else "", key.title(), key)
    row("", "Overall", "physical_laws", " / 5")
    for i, key in enumerate(COMMON_SENSE):
        row("Common Sense" if i == 0 else "", key.title(), key)
    row("", "Overall", "common_sense", " / 2")
    row("**Total**", "", "total", " / 10")
    return lines


def _leaderboard(report: dict) -> list[str]:
    cov, rows = report["coverage"], report["leaderboard"]
    lines = ["## Against the official judge leaderboard", ""]
    if report["scores"].get("total") is None:
        lines.append("No video was judged: no rank.")
    elif cov["subset"]:
        lines.append(f"**No rank: {cov['label']}.** The table shows the published models for "
                     f"reference only.")
    else:
        among_open = (f" (open-source rank {report['open_rank']})" if report.get("open_rank")
                      else " (open or closed not known for this model: no open-source rank)")
        lines.append(f"Rank **{report['rank']} of {len(rows)}** by total{among_open}; ties rank "
                     "below the published entry.")
    inside = report["indistinguishable"]
    if inside and not cov["subset"]:
        lines.append(f"Inside this run's 95% interval of the total (gap not significant): "
                     f"{', '.join(inside)}.")
    elif report["scores"].get("total") is not None and not cov["subset"]:
        lines.append("No published total lies inside this run's 95% interval.")
    lines += ["", "| # | Model | Type | " + " | ".join(h for _, h in COLUMNS) + " | Gap | In CI | Source |",
              "|---" * (6 + len(COLUMNS)) + "|"]
    for i, m in enumerate(rows, 1):
        inside_ci = {True: "yes", False: "no", None: ""}[m["gap_inside_ci"]]
        cells = [str(i), m["name"], m["type"] or "–"] + [_f(m.get(k)) for k, _ in COLUMNS] + \
                ["" if m["this_run"] else _f(m["gap"], 2), inside_ci, m["source"]]
        if m["this_run"]:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key in dict.fromkeys(r["source"] for r in rows if not r["this_run"]):
        text = next(r["source_text"] for r in rows if r["source"] == key)
        lines.append(f"- Source *{key}*: {text}")
    return lines


def _domains(report: dict) -> list[str]:
    lines = ["## Per domain", ""]
    if not report["domains"]:
        return lines + ["Skipped: no benchmark file to map videos to domains (give bench.root)."]
    keys = ("instruction", *PHYSICS, "physical_laws", *COMMON_SENSE, "common_sense", "total")
    heads = ("Instr.", "Newton", "Mass", "Fluid", "Penetr.", "Grav.", "Physics",
             "Frame", "Temp.", "Common", "Total")
    lines += ["| Domain | Judged | " + " | ".join(heads) + " |", "|---" * (2 + len(heads)) + "|"]
    for domain, d in report["domains"].items():
        lines.append(f"| {domain} | {d['judged']} | " + " | ".join(_f(d[k]) for k in keys) + " |")
    return lines


def _charts(report: dict) -> list[str]:
    lines = ["## Charts", ""]
    for key, title in (("scores_chart", "Scores"), ("domains_chart", "Per domain"),
                       ("contact_sheet", "Sample frames (first, middle, last)")):
        if key in report["files"]:
            lines += [f"### {title}", "", f"![{title}]({report['files'][key]})", ""]
    return lines


def _settings(st: dict | None) -> list[str]:
    if st is None:
        return []
    def used(d):
        return f"{d['configured']} (used: {', '.join(d['used']) or '–'})"
    return ["## Generation settings and cost", "", "| Item | Value |", "|---|---|",
            f"| Engine (model.engine) | `{st.get('engine') or '–'}` |",
            f"| Settings fingerprint | `{st['fingerprint'] or '–'}` |",
            f"| Mode | {st['mode']} |",
            f"| Attention kernel | {used(st['attention'])} |",
            f"| Parallel mode | {used(st['parallel'])} |",
            f"| GPU type | {', '.join(st['gpu_type']) or '–'} |",
            f"| GPUs | {st['gpus_per_job']} per job x {st['chunk_jobs']} chunk job(s) = {st['gpus_total']} |",
            f"| GPU-hours generating / chunk wall time / judge | {_f(st['gpu_hours_generating'], 3)} / "
            f"{_f(st['gpu_hours_chunk_wall'], 3)} / {_f(st['gpu_hours_judge'], 3)} |",
            f"| Requeues (timeouts, preemptions) | {st['requeues']} ({st['timeouts']}, {st['preemptions']}) |",
            f"| Engines (distinct sidecar fingerprints) | {len(st['engines'])} |", ""]


def _generation(g: dict | None) -> list[str]:
    if g is None:
        return []
    lines = ["## Generation", "", "| Item | Value |", "|---|---|",
             f"| Videos made (progress records) | {g['videos']} |",
             f"| Failures | {g['failures']} |",
             f"| Seconds per video (mean / median) | {_f(g['seconds_per_video_mean'], 1)} / "
             f"{_f(g['seconds_per_video_median'], 1)} |",
             f"| Seconds per step (mean) | {_f(g['seconds_per_step_mean'], 3)} |",
             f"| Adopted (made elsewhere, settings assumed; `launch.py adopt`) | {g.get('adopted', 0)} |",
             f"| Chunk records (unreadable) | {g['chunk_records']} ({len(g['unreadable_records'])}) |", ""]
    for stem, why in list(g["failed"].items())[:LISTED]:
        lines.append(f"- failed `{stem}`: {why}")
    return lines


def _judge(j: dict | None) -> list[str]:
    if j is None:
        return []
    lines = ["", "## Judge", "", f"{j['shards_with_result']} of {j['shards']} shards have a result; "
             f"judging took {_f(j['gpu_hours'], 3)} GPU-hours."]
    if j["not_in_judge_list"]:
        lines.append("Not in the judge repo's worldmodelbench.json (never judged): "
                     + _stems(j["not_in_judge_list"]))
    return lines
