"""The HTML explorer, `<report>/index.html`: scores with intervals against the
leaderboard, the per-domain chart, and one card per judged instance (first frame, the
video playable in place, prompt, domain, every judge question with the judge's full
answer and its verdict, the instance's score), filterable by domain and by failed
question, sortable by score. It opens from a shared filesystem with no network: CSS and
JS are inline, thumbnails sit in `thumbs/` beside it, videos are relative links.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from wmsub.score.html_page import esc, fmt, fmt_ci, href, page
from wmsub.score.run_facts import STANDIN_NOTE
from wmsub.score.scoring import COMMON_SENSE, PHYSICS, SCORE_KEYS, VideoVerdict

THUMB_SIZE = (320, 180)
# What each judge question asks (the official prompts, in short); a physics or
# common-sense question passes when the judge's answer says "no" (no violation).
QUESTIONS = {
    "instruction": "Instruction following (0-3): does the video do what the instruction says?",
    "newton": "Newton's law violated: do objects move without an external force?",
    "mass": "Mass / solid constitutive law violated: do objects deform irregularly?",
    "fluid": "Fluid law violated: do liquids flow unnaturally?",
    "penetration": "Non-physical penetration: do objects pass through each other?",
    "gravity": "Gravity violated: do objects behave inconsistently with gravity?",
    "framewise": "Poor aesthetics: is the content visually unappealing or low quality?",
    "temporal": "Temporal inconsistency: is there flickering or an abrupt change?",
}
FILTER_DIMS = ("instruction", *PHYSICS, *COMMON_SENSE)

SCRIPT = """
(function(){
var cards=Array.prototype.slice.call(document.querySelectorAll('article.card'));
var grid=document.getElementById('cards');
var dom=document.getElementById('f-domain'),fail=document.getElementById('f-failed'),
    sort=document.getElementById('f-sort'),shown=document.getElementById('shown');
function apply(){
  var d=dom.value,f=fail.value,n=0;
  cards.forEach(function(c){
    var ok=(!d||c.dataset.domain===d)&&(!f||(' '+c.dataset.failed+' ').indexOf(' '+f+' ')>=0);
    c.hidden=!ok; if(ok){n++;}
  });
  shown.textContent=n+' of '+cards.length+' shown';
}
function order(){
  var key=sort.value,s=cards.slice();
  s.sort(function(a,b){
    if(key==='score-asc'){return a.dataset.score-b.dataset.score||a.dataset.order-b.dataset.order;}
    if(key==='score-desc'){return b.dataset.score-a.dataset.score||a.dataset.order-b.dataset.order;}
    return a.dataset.order-b.dataset.order;
  });
  s.forEach(function(c){grid.appendChild(c);});
}
dom.addEventListener('change',apply);fail.addEventListener('change',apply);
sort.addEventListener('change',function(){order();apply();});
order();apply();
})();
"""

EXTRA_CSS = """
.controls{position:sticky;top:0;background:#fafafa;padding:8px 0;border-bottom:1px solid #ddd;z-index:2}
.controls label{margin-right:14px}
#cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(430px,1fr));gap:12px;margin-top:12px}
article.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px}
article.card[hidden]{display:none}
.card header{display:flex;justify-content:space-between;gap:8px;font-size:.9em}
.card .stem{font-family:monospace;word-break:break-all}.card .score{font-weight:bold;white-space:nowrap}
.media{display:flex;gap:6px;margin:8px 0}.media figure{margin:0;flex:1}
.media img,.media video{width:100%;max-height:180px;object-fit:contain;background:#222;display:block}
.media figcaption{font-size:.72em;color:#777}
.q{border-top:1px solid #eee;padding:4px 0;font-size:.85em}
.q .head{display:flex;justify-content:space-between;gap:8px}
.novideo{display:flex;align-items:center;justify-content:center;height:120px;background:#eee;color:#777;font-size:.8em}
"""


def write_explorer(out_dir: Path, report: dict, verdicts: list[VideoVerdict], entries: dict,
                   video_dir: Path | None, bench_root: Path | None = None) -> Path:
    """Write `out_dir/index.html` and its thumbnails; returns the page's path."""
    out_dir = Path(out_dir)
    thumbs = out_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        media = list(pool.map(lambda kv: _media(kv[0], kv[1], thumbs, video_dir, entries, bench_root),
                              enumerate(verdicts)))
    cards = [_card(k, v, entries.get(v.stem) or {}, m, out_dir)
             for k, (v, m) in enumerate(zip(verdicts, media))]
    card_domains = sorted({(entries.get(v.stem) or {}).get("domain") or "?" for v in verdicts})
    body = "\n".join([_header(report), _scores(report), _leaderboard(report), _domain_chart(report),
                      _controls(card_domains, len(cards)), '<section id="cards">', *cards, "</section>"])
    path = out_dir / "index.html"
    path.write_text(page(f"WorldModelBench: {report['model_name']}", body, SCRIPT, EXTRA_CSS),
                    encoding="utf-8")
    return path


def _media(k: int, v: VideoVerdict, thumbs: Path, video_dir: Path | None, entries: dict,
           bench_root: Path | None) -> dict:
    """The card's files: the video, its poster (first decoded frame), the benchmark's
    first-frame image; each None when absent."""
    from wmsub.state.video_io import VideoError, read_frames
    out = {"video": None, "poster": None, "first_frame": None}
    video = video_dir / f"{v.stem}.mp4" if video_dir is not None else None
    if video is not None and video.is_file():
        out["video"] = video
        try:
            frame = read_frames(video, [0])[0]
            out["poster"] = _thumbnail(Image.fromarray(frame), thumbs / f"{k}.jpg")
        except VideoError:
            pass  # the card says the video could not be decoded
    first = (entries.get(v.stem) or {}).get("first_frame")
    if bench_root is not None and first:
        image = Path(bench_root) / first
        if image.is_file():
            try:
                with Image.open(image) as im:
                    out["first_frame"] = _thumbnail(im.convert("RGB"), thumbs / f"{k}-input.jpg")
            except OSError:
                pass
    return out


def _thumbnail(image: Image.Image, path: Path) -> Path:
    image = image.copy()
    image.thumbnail(THUMB_SIZE, Image.Resampling.LANCZOS)
    image.save(path, quality=85)
    return path


def _answers(v: VideoVerdict) -> list[tuple[str, str, bool, str]]:
    """(dimension, answer text, passed, verdict text) per judge question of the video."""
    preds = v.preds if isinstance(v.preds, dict) else {}

    def text(key: str, i: int) -> str:
        items = preds.get(key)
        if isinstance(items, list) and i < len(items):
            return str(items[i])
        return "(no answer text in the results file)"
    out = [("instruction", text("instruction", 0), float(v.instruction) >= 3,
            f"score {float(v.instruction):g} / 3")]
    out += [(name, text("physical_laws", i), bool(ok), "pass" if ok else "fail")
            for i, (name, ok) in enumerate(zip(PHYSICS, v.physical_laws))]
    out += [(name, text("common_sense", i), bool(ok), "pass" if ok else "fail")
            for i, (name, ok) in enumerate(zip(COMMON_SENSE, v.common_sense))]
    return out


def _card(k: int, v: VideoVerdict, entry: dict, media: dict, out_dir: Path) -> str:
    domain = entry.get("domain") or "?"
    failed = v.failed()
    if media["video"] is not None:
        poster = f' poster="{href(media["poster"], out_dir)}"' if media["poster"] else ""
        video = (f'<figure><video controls preload="none"{poster} src="{href(media["video"], out_dir)}">'
                 f'</video><figcaption>generated video'
                 f'{"" if media["poster"] else " (could not be decoded for a poster)"}</figcaption></figure>')
    else:
        video = '<figure><div class="novideo">video not found</div><figcaption>generated video</figcaption></figure>'
    first = (f'<figure><img alt="first frame" src="{href(media["first_frame"], out_dir)}">'
             f'<figcaption>first frame (benchmark input)</figcaption></figure>') if media["first_frame"] else ""
    questions = []
    for dim, answer, passed, verdict in _answers(v):
        cls = "pass" if passed else "fail"
        questions.append(f'<div class="q" data-dim="{dim}"><div class="head"><span>{esc(QUESTIONS[dim])}</span>'
                         f'<span class="verdict {cls}">{esc(verdict)}</span></div>'
                         f'<pre class="answer">{esc(answer)}</pre></div>')
    n_failed = len(failed)
    return (f'<article class="card" data-domain="{esc(domain)}" data-failed="{" ".join(failed)}" '
            f'data-score="{v.total:.4f}" data-order="{k}">'
            f'<header><span class="stem">{esc(v.stem)}</span>'
            f'<span class="domain">{esc(domain)} / {esc(entry.get("subdomain") or "?")}</span>'
            f'<span class="score">{v.total:.2f} / 10</span></header>'
            f'<div class="media">{first}{video}</div>'
            f'<p class="prompt"><b>Instruction:</b> {esc(entry.get("text_instruction") or "(not in the benchmark file)")}</p>'
            f'<p class="scene muted"><b>First-frame text:</b> {esc(entry.get("text_first_frame") or "–")}</p>'
            f'<details{" open" if n_failed else ""}><summary>Judge: {8 - n_failed} of 8 questions passed'
            f'{" — failed: " + ", ".join(failed) if failed else ""}</summary>{"".join(questions)}</details>'
            f'</article>')


def _header(report: dict) -> str:
    cov = report["coverage"]
    cls = "warn" if cov["subset"] else "ok"
    lines = [f"<h1>WorldModelBench: {esc(report['model_name'])}</h1>"]
    if (report.get("judge") or {}).get("standin"):
        lines.append(f'<p class="warn"><b>{esc(STANDIN_NOTE)}</b></p>')
    lines.append(f'<p class="{cls}"><b>Coverage:</b> {esc(cov["label"])}</p>')
    problems = [(key, what) for key, what in (
        ("video_missing", "video missing"), ("judge_failed", "judge failed on it"),
        ("not_in_judge_list", "not in the judge's benchmark list"), ("not_judged", "not judged yet"))
        if cov.get(key)]
    if problems:
        lines.append("<ul>" + "".join(f"<li>{len(cov[k])} {esc(w)}: {esc(', '.join(cov[k][:20]))}"
                                      f"{' …' if len(cov[k]) > 20 else ''}</li>" for k, w in problems) + "</ul>")
    for f in cov.get("shard_failures") or []:
        lines.append(f"<p>Judge shard {f['shard']} failed: {esc(f['why'])}. Last lines of "
                     f"<code>{esc(f['log'])}</code>:</p><pre>{esc(f['log_tail'])}</pre>")
    return "\n".join(lines)


def _scores(report: dict) -> str:
    s, ci, seed = report["scores"], report["ci95"], report.get("seed") or {}
    rows = "".join(f"<tr><td>{key}</td><td>{fmt(s.get(key))}</td><td>{fmt_ci(ci.get(key))}</td>"
                   f"<td>{fmt(seed.get(key))}</td></tr>" for key in SCORE_KEYS if key != "judged")
    b = report["bootstrap"]
    return (f"<h2>Scores</h2><p class=\"muted\">{s.get('judged', 0)} videos judged; 95% intervals: "
            f"bootstrap over instances ({b['resamples']} resamples, seed {b['seed']}).</p>"
            f"<table><tr><th>score</th><th>this run</th><th>95% interval</th><th>seed run</th></tr>{rows}</table>")


def _leaderboard(report: dict) -> str:
    cov = report["coverage"]
    if report["scores"].get("total") is None:
        note = "No video was judged: no rank."
    elif cov["subset"]:
        note = f"No rank: {cov['label']}. Published models shown for reference."
    else:
        among_open = f" (open-source rank {report['open_rank']})" if report.get("open_rank") else ""
        note = f"Rank {report['rank']} of {len(report['leaderboard'])}{among_open}."
        inside = report.get("indistinguishable") or []
        note += (" Inside this run's 95% interval (gap not significant): " + ", ".join(inside) + ".") \
            if inside else " No published total lies inside this run's 95% interval."
    head = "".join(f'<th class="l">{h}</th>' if h in ("model", "type", "source") else f"<th>{h}</th>" for h in ("#", "model", "type", "instr.", "frame", "temp.", "newton",
                                            "mass", "fluid", "penetr.", "grav.", "total", "gap", "in CI", "source"))
    rows = []
    for i, m in enumerate(report["leaderboard"], 1):
        cells = [str(i), esc(m["name"]), esc(m["type"] or "–")]
        cells += [fmt(m.get(k)) for k in ("instruction", "framewise", "temporal", "newton", "mass", "fluid",
                                          "penetration", "gravity", "total")]
        cells += ["" if m["this_run"] else fmt(m["gap"]),
                  {True: "yes", False: "no", None: ""}[m["gap_inside_ci"]], esc(m["source"])]
        cls = ' class="mine"' if m["this_run"] else ""
        rows.append(f"<tr{cls}>" + "".join(f'<td class="l">{c}</td>' if j in (1, 2, 14) else f"<td>{c}</td>"
                                            for j, c in enumerate(cells)) + "</tr>")
    return (f"<h2>Against the official judge leaderboard</h2><p>{esc(note)}</p>"
            f"<table><tr>{head}</tr>{''.join(rows)}</table>")


def _domain_chart(report: dict) -> str:
    name = report["files"].get("domains_chart")
    if not name:
        return ""
    return f'<h2>Per domain</h2><img alt="scores per domain" src="{esc(name)}" style="max-width:min(100%,900px)">'


def _controls(domains: list[str], n: int) -> str:
    dom = "".join(f'<option value="{esc(d)}">{esc(d)}</option>' for d in domains)
    dims = "".join(f'<option value="{d}">{d}</option>' for d in FILTER_DIMS)
    return (f'<h2>Instances ({n} judged)</h2><div class="controls">'
            f'<label>domain <select id="f-domain"><option value="">all</option>{dom}</select></label>'
            f'<label>failed question <select id="f-failed"><option value="">any</option>{dims}</select></label>'
            f'<label>sort <select id="f-sort"><option value="order">benchmark order</option>'
            f'<option value="score-asc">score, lowest first</option>'
            f'<option value="score-desc">score, highest first</option></select></label>'
            f'<span id="shown"></span></div>')
