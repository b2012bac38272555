"""`launch.py compare A B`: how run B differs from run A on the instances both judged.

Typical uses: the exact against the fast config, or a checkpoint before and after
fine-tuning. The difference is B minus A, per dimension and in total, with a
paired-bootstrap 95% interval (score/bootstrap.py: instances are resampled with their two
verdicts together), and every instance whose verdict on a question flipped.

Writes compare.json (`common`, `delta`, `ci95`, ...), compare.md and compare.html.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from wmsub.config import Config
from wmsub.score.bootstrap import RESAMPLES, SEED, paired_bootstrap
from wmsub.score.explorer import QUESTIONS
from wmsub.score.html_page import esc, fmt, fmt_ci, href, page
from wmsub.score.scoring import COMMON_SENSE, PHYSICS, SCORE_KEYS, VideoVerdict, per_video, score_verdicts

KEYS = tuple(k for k in SCORE_KEYS if k != "judged")


@dataclass(frozen=True)
class Side:
    """One side of a comparison."""
    label: str  # the run's name or the results file's name
    results: Path  # the official results file
    run_dir: Path | None = None  # the run folder when the side is a run
    video_dir: Path | None = None  # where its videos are, when known


def resolve_side(arg: str, logs_dir: str = "logs") -> Side:
    """A results JSON file as it is, or a run (name or folder): its merged judge results."""
    path = Path(arg)
    if path.is_file():
        return Side(label=path.name, results=path)
    from wmsub.score.judge import judge_dir, read_shards_file, shards_path
    from wmsub.score.report import merge_if_stale
    from wmsub.state.runs import find_run
    run = find_run(logs_dir, arg)
    merge_if_stale(run.path)
    results = judge_dir(run.path) / "results.json"
    video_dir = Path(read_shards_file(run.path)["video_dir"]) if shards_path(run.path).is_file() else None
    return Side(label=run.name, results=results, run_dir=run.path, video_dir=video_dir)


def flips(a: VideoVerdict, b: VideoVerdict) -> list[dict]:
    """The questions on which the verdict changed from A to B (instruction: any change
    of its 0-3 score)."""
    out = []
    if float(a.instruction) != float(b.instruction):
        out.append({"stem": a.stem, "question": "instruction", "a": float(a.instruction), "b": float(b.instruction)})
    for names, va, vb in ((PHYSICS, a.physical_laws, b.physical_laws),
                          (COMMON_SENSE, a.common_sense, b.common_sense)):
        for name, x, y in zip(names, va, vb):
            if bool(x) != bool(y):
                out.append({"stem": a.stem, "question": name, "a": "pass" if x else "fail",
                            "b": "pass" if y else "fail"})
    return out


def compare(a: Side, b: Side, out_dir: Path, cfg: Config | None = None) -> Path:
    """Write compare.json, compare.md and compare.html into out_dir; returns out_dir."""
    va = _verdicts(a)
    vb = _verdicts(b)
    common = [s for s in va if s in vb]
    pa, pb = [va[s] for s in common], [vb[s] for s in common]
    delta, ci95 = paired_bootstrap(pa, pb)
    domains = _domains(a, b, cfg)
    changed = [f for s in common for f in flips(va[s], vb[s])]
    by_domain: dict[str, dict] = {}
    for s in common:
        d = by_domain.setdefault(domains.get(s, "?"), {"n": 0, "delta_total": 0.0})
        d["n"] += 1
        d["delta_total"] += vb[s].total - va[s].total
    for d in by_domain.values():
        d["delta_total"] /= d["n"]
    data = {
        "a": {"label": a.label, "results": str(a.results), "judged": len(va)},
        "b": {"label": b.label, "results": str(b.results), "judged": len(vb)},
        "common": len(common),
        "only_a": [s for s in va if s not in vb], "only_b": [s for s in vb if s not in va],
        "scores_a": _scores(pa), "scores_b": _scores(pb),
        "delta": delta, "ci95": ci95,
        "significant": {k: (ci95[k][0] > 0 or ci95[k][1] < 0) if ci95[k] else None for k in KEYS},
        "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "level": 0.95, "unit": "instance (paired)"},
        "flips": changed, "by_domain": by_domain,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "compare.json").write_text(json.dumps(data, indent=1, ensure_ascii=False))
    (out_dir / "compare.md").write_text(render_markdown(data))
    (out_dir / "compare.html").write_text(render_html(data, a, b, va, vb, out_dir), encoding="utf-8")
    return out_dir


def _verdicts(side: Side) -> dict[str, VideoVerdict]:
    if not side.results.is_file():
        raise FileNotFoundError(f"{side.results}: no judge results for {side.label} "
                                f"(judge the run first: python launch.py judge --run {side.label})")
    return {v.stem: v for v in per_video(json.loads(side.results.read_text()), str(side.results))}


def _scores(verdicts: list[VideoVerdict]) -> dict:
    return {k: v for k, v in score_verdicts(verdicts).items() if k != "judged"}


def _domains(a: Side, b: Side, cfg: Config | None) -> dict[str, str]:
    """stem -> domain: a run's plan, else the benchmark file of `cfg` or of a run's config."""
    from wmsub.benchmark.manifest import ManifestError, stem_domains
    from wmsub.state.runs import RunFolder
    configs = [cfg] if cfg is not None else []
    for side in (a, b):
        if side.run_dir is not None:
            run = RunFolder(side.run_dir)
            if run.load_plan().domains:
                return run.load_plan().domains
            configs.append(run.load_config())
    for c in configs:
        try:
            return stem_domains(Path(c.bench.root) / c.bench.json_file)
        except ManifestError:
            continue
    return {}


def _row_name(key: str) -> str:
    return {"physical_laws": "physical laws (sum)", "common_sense": "common sense (sum)"}.get(key, key)


def render_markdown(d: dict) -> str:
    lines = [f"# Compare: {d['b']['label']} minus {d['a']['label']}", "",
             f"{d['common']} instances judged in both (A {d['a']['judged']}, B {d['b']['judged']}). "
             f"Intervals: paired bootstrap over instances ({d['bootstrap']['resamples']} resamples, "
             f"seed {d['bootstrap']['seed']}); *yes* where the 95% interval excludes 0.", "",
             "| Score | A | B | B − A | 95% interval | Differs |", "|---|---|---|---|---|---|"]
    for k in KEYS:
        sig = {True: "yes", False: "no", None: "–"}[d["significant"][k]]
        lines.append(f"| {_row_name(k)} | {fmt(d['scores_a'][k])} | {fmt(d['scores_b'][k])} | "
                     f"{fmt(d['delta'][k], 3)} | {fmt_ci(d['ci95'][k])} | {sig} |")
    if d["by_domain"] and set(d["by_domain"]) != {"?"}:
        lines += ["", "## Total difference per domain", "", "| Domain | Instances | B − A |", "|---|---|---|"]
        lines += [f"| {dom} | {v['n']} | {v['delta_total']:.3f} |" for dom, v in d["by_domain"].items()]
    lines += ["", f"## Verdicts that flipped ({len(d['flips'])})", ""]
    lines += [f"- `{f['stem']}` {f['question']}: {f['a']} → {f['b']}" for f in d["flips"]] or ["None."]
    for key, side in (("only_a", "A"), ("only_b", "B")):
        if d[key]:
            lines += ["", f"Judged only in {side} ({len(d[key])}, not compared): "
                      + ", ".join(f"`{s}`" for s in d[key][:20]) + (" …" if len(d[key]) > 20 else "")]
    return "\n".join(lines) + "\n"


def render_html(d: dict, a: Side, b: Side, va: dict, vb: dict, out_dir: Path) -> str:
    rows = "".join(
        f"<tr><td>{esc(_row_name(k))}</td><td>{fmt(d['scores_a'][k])}</td><td>{fmt(d['scores_b'][k])}</td>"
        f"<td>{fmt(d['delta'][k], 3)}</td><td>{fmt_ci(d['ci95'][k])}</td>"
        f"<td>{ {True: 'yes', False: 'no', None: '–'}[d['significant'][k]] }</td></tr>" for k in KEYS)
    items = []
    for f in d["flips"]:
        s = f["stem"]
        links = " ".join(f'<a href="{href(side.video_dir / f"{s}.mp4", out_dir)}">{name} video</a>'
                         for name, side in (("A", a), ("B", b))
                         if side.video_dir is not None and (side.video_dir / f"{s}.mp4").is_file())
        items.append(f"<li><code>{esc(s)}</code> — {esc(QUESTIONS.get(f['question'], f['question']))}: "
                     f"<b>{esc(f['a'])} → {esc(f['b'])}</b> {links}"
                     f"<details><summary>answers</summary><p>A:</p><pre>{esc(_answer(va[s], f['question']))}</pre>"
                     f"<p>B:</p><pre>{esc(_answer(vb[s], f['question']))}</pre></details></li>")
    body = (f"<h1>Compare: {esc(d['b']['label'])} minus {esc(d['a']['label'])}</h1>"
            f"<p>{d['common']} instances judged in both (A {d['a']['judged']}, B {d['b']['judged']}). "
            f"Intervals: paired bootstrap over instances; “differs” where the 95% interval excludes 0.</p>"
            f"<table><tr><th>score</th><th>A</th><th>B</th><th>B − A</th><th>95% interval</th><th>differs</th></tr>"
            f"{rows}</table><h2>Verdicts that flipped ({len(d['flips'])})</h2><ul>{''.join(items) or '<li>None.</li>'}</ul>")
    return page(f"compare {d['b']['label']} vs {d['a']['label']}", body)


def _answer(v: VideoVerdict, question: str) -> str:
    preds = v.preds if isinstance(v.preds, dict) else {}
    if question == "instruction":
        key, i = "instruction", 0
    elif question in PHYSICS:
        key, i = "physical_laws", PHYSICS.index(question)
    else:
        key, i = "common_sense", COMMON_SENSE.index(question)
    items = preds.get(key)
    return str(items[i]) if isinstance(items, list) and i < len(items) else "(no answer text)"
