"""Report images: score bars against the leaderboard, per-domain bars, a contact sheet.

Figures have fixed pixel sizes (figsize x DPI, no tight bounding box) so a report
always looks the same and tests can check the sizes.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

DPI = 100
SCORES_FIGSIZE = (12, 5)  # -> 1200 x 500 px
DOMAINS_FIGSIZE = (10, 5)  # -> 1000 x 500 px
TILE_W, TILE_H = 224, 128  # one frame of the contact sheet, letterboxed
LABEL_W = 280  # left column: domain, stem, score, the prompt wrapped
FRAME_POSITIONS = ("first", "middle", "last")

# (key, label, maximum): instruction is out of 3, every other dimension out of 1
DIMENSIONS = (("instruction", "Instr. (/3)", 3.0), ("framewise", "Frame", 1.0),
              ("temporal", "Temp.", 1.0), ("newton", "Newton", 1.0), ("mass", "Mass", 1.0),
              ("fluid", "Fluid", 1.0), ("penetration", "Penetr.", 1.0), ("gravity", "Grav.", 1.0))
THIS_RUN_COLOR, SEED_COLOR, OPEN_COLOR, CLOSED_COLOR = "#d62728", "#ff9896", "#1f77b4", "#7f7f7f"
UNKNOWN_COLOR = "#c7c7c7"  # a model whose source does not state its type
TYPE_COLORS = {"open": OPEN_COLOR, "closed": CLOSED_COLOR, None: UNKNOWN_COLOR}


def scores_chart(path: Path, model_name: str, scores: dict, leaderboard: dict,
                 ci95: dict | None = None) -> Path:
    """Left: totals of the leaderboard, the seed run and this run (with its 95% interval).
    Right: each dimension as a fraction of its maximum, this run vs the seed vs the best
    published value (models without per-dimension scores are left out there)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=SCORES_FIGSIZE, dpi=DPI,
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    rows = [(m["name"], m["total"], TYPE_COLORS[m.get("type")]) for m in leaderboard["models"]]
    seed = leaderboard.get("seed")
    if seed:
        rows.append((f"{seed['name']} (seed run)", seed["total"], SEED_COLOR))
    mine = scores.get("total")
    if mine is not None:
        rows.append((f"{model_name} (this run)", mine, THIS_RUN_COLOR))
    rows.sort(key=lambda r: r[1])
    left.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    for y, r in enumerate(rows):
        left.text(r[1], y, f" {r[1]:.2f}", va="center", fontsize=8)
    ci = (ci95 or {}).get("total")
    if mine is not None and ci and ci[0] is not None:
        y = next(i for i, r in enumerate(rows) if r[2] == THIS_RUN_COLOR)  # not a bar of equal total
        left.errorbar([mine], [y], xerr=[[mine - ci[0]], [ci[1] - mine]], fmt="none",
                      ecolor="black", capsize=3, lw=1)
    left.set_xlim(0, 10.8)
    left.set_xlabel("total (/10); bar on this run: 95% interval")
    left.set_title("Total vs the official judge leaderboard")
    left.tick_params(axis="y", labelsize=8)
    kinds = [("this run", THIS_RUN_COLOR), ("seed run", SEED_COLOR), ("open source", OPEN_COLOR),
             ("closed", CLOSED_COLOR)]
    if any(m.get("type") is None for m in leaderboard["models"]):
        kinds.append(("type not stated", UNKNOWN_COLOR))
    legend = [Patch(color=c, label=label) for label, c in kinds]
    left.legend(handles=legend, fontsize=7, loc="lower right")

    x = np.arange(len(DIMENSIONS))
    series = [("this run", scores, THIS_RUN_COLOR)]
    if seed:
        series.append(("seed run", seed, SEED_COLOR))
    best = {key: max((m[key] for m in leaderboard["models"] if m.get(key) is not None), default=None)
            for key, _, _ in DIMENSIONS}
    series.append(("best published", best, CLOSED_COLOR))
    width = 0.8 / len(series)
    for i, (label, values, color) in enumerate(series):
        heights = [(values.get(key) or 0.0) / top for key, _, top in DIMENSIONS]
        right.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=label, color=color)
    right.set_xticks(x, [label for _, label, _ in DIMENSIONS], fontsize=8)
    right.set_ylim(0, 1.25)  # headroom for the legend above bars that reach 1
    right.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    right.set_ylabel("fraction of maximum")
    right.set_title("Per dimension")
    right.legend(fontsize=8, loc="upper center", ncol=len(series))
    fig.subplots_adjust(left=0.17, right=0.98, wspace=0.25)
    return _save(fig, path)


def domains_chart(path: Path, by_domain: dict) -> Path:
    """Stacked bars per domain: instruction + physical laws + common sense = total (/10)."""
    fig, ax = plt.subplots(figsize=DOMAINS_FIGSIZE, dpi=DPI)
    names = list(by_domain)
    parts = (("instruction", "instruction (/3)", "#1f77b4"),
             ("physical_laws", "physical laws (/5)", "#2ca02c"),
             ("common_sense", "common sense (/2)", "#ff7f0e"))
    bottom = np.zeros(len(names))
    for key, label, color in parts:
        values = np.array([by_domain[d].get(key) or 0.0 for d in names])
        ax.bar(names, values, bottom=bottom, label=label, color=color)
        bottom += values
    for i, d in enumerate(names):
        s = by_domain[d]
        text = f"{s['total']:.2f} (n={s['judged']})" if s.get("total") is not None else "n=0"
        # inside the bar's top: the axis ends at the scale's maximum, 10
        ax.text(i, max(bottom[i] - 0.15, 0.15), text, ha="center", va="top" if bottom[i] > 1 else "bottom",
                fontsize=8, color="white" if bottom[i] > 1 else "black", fontweight="bold")
    ax.set_ylim(0, 10)
    ax.set_ylabel("score (/10)")
    ax.set_title("Scores per domain")
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.subplots_adjust(bottom=0.24)
    return _save(fig, path)


def contact_sheet(path: Path, samples: list[tuple]) -> Path:
    """One row per (domain, stem, video, prompt, score): the labels, then the video's
    first, middle and last frame. A video that cannot be decoded gets grey tiles saying
    so; a missing decoder (imageio-ffmpeg) is an error, not a grey tile."""
    from wmsub.state.video_io import VideoError, probe_mp4, read_frames

    rows = max(1, len(samples))
    sheet = Image.new("RGB", (LABEL_W + TILE_W * len(FRAME_POSITIONS), TILE_H * rows), "white")
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=13)
    if not samples:
        draw.text((10, 10), "no videos to show", fill="black", font=font)
    for row, (domain, stem, video, prompt, total) in enumerate(samples):
        top = row * TILE_H
        draw.text((8, top + 6), domain, fill="black", font=font)
        score = "" if total is None else f"  score {total:.1f}/10"
        draw.text((8, top + 24), _ellipsize(stem, 20) + score, fill="dimgray", font=small)
        for k, line in enumerate(textwrap.wrap(prompt, 34)[:4]):
            draw.text((8, top + 46 + 16 * k), line, fill="black", font=small)
        try:
            n = probe_mp4(video)["frames"]
            frames = read_frames(video, [0, n // 2, n - 1])
        except ImportError:  # a missing module is the install's fault, not the video's
            raise
        except (VideoError, OSError) as e:  # a broken video must not break the report
            draw.text((8, top + TILE_H - 18), f"unreadable: {type(e).__name__}", fill="darkred", font=small)
            frames = [None] * len(FRAME_POSITIONS)
        for col, frame in enumerate(frames):
            sheet.paste(_tile(frame), (LABEL_W + col * TILE_W, top))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _tile(frame) -> Image.Image:
    tile = Image.new("RGB", (TILE_W, TILE_H), (40, 40, 40))
    if frame is None:
        return tile
    image = Image.fromarray(np.asarray(frame))
    image.thumbnail((TILE_W, TILE_H), Image.Resampling.LANCZOS)
    tile.paste(image, ((TILE_W - image.width) // 2, (TILE_H - image.height) // 2))
    return tile


def _ellipsize(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
