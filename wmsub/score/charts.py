"""Report images: score bars against the leaderboard, per-domain bars, a contact sheet.

Figures have fixed pixel sizes (figsize x DPI, no tight bounding box) so a report
always looks the same and tests can check the sizes.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

DPI = 100
SCORES_FIGSIZE = (12, 5)  # -> 1200 x 500 px
DOMAINS_FIGSIZE = (10, 5)  # -> 1000 x 500 px
TILE_W, TILE_H = 224, 128  # one frame of the contact sheet, letterboxed
LABEL_W = 220  # left column with domain and stem
FRAME_POSITIONS = ("first", "middle", "last")

# (key, label, maximum): instruction is out of 3, every other dimension out of 1
DIMENSIONS = (("instruction", "Instr. (/3)", 3.0), ("framewise", "Frame", 1.0),
              ("temporal", "Temp.", 1.0), ("newton", "Newton", 1.0), ("mass", "Mass", 1.0),
              ("fluid", "Fluid", 1.0), ("penetration", "Penetr.", 1.0), ("gravity", "Grav.", 1.0))
THIS_RUN_COLOR, SEED_COLOR, OPEN_COLOR, CLOSED_COLOR = "#d62728", "#ff9896", "#1f77b4", "#7f7f7f"


def scores_chart(path: Path, model_name: str, scores: dict, leaderboard: dict) -> Path:
    """Left: totals of the leaderboard, the seed run and this run. Right: each
    dimension as a fraction of its maximum, this run vs the seed vs the paper's best."""
    fig, (left, right) = plt.subplots(1, 2, figsize=SCORES_FIGSIZE, dpi=DPI,
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    rows = [(m["name"], m["total"], CLOSED_COLOR if m["type"] == "closed" else OPEN_COLOR)
            for m in leaderboard["models"]]
    seed = leaderboard.get("seed")
    if seed:
        rows.append((f"{seed['name']} (seed run)", seed["total"], SEED_COLOR))
    if scores.get("total") is not None:
        rows.append((f"{model_name} (this run)", scores["total"], THIS_RUN_COLOR))
    rows.sort(key=lambda r: r[1])
    left.barh([r[0] for r in rows], [r[1] for r in rows], color=[r[2] for r in rows])
    for y, r in enumerate(rows):
        left.text(r[1], y, f" {r[1]:.2f}", va="center", fontsize=8)
    left.set_xlim(0, 10.8)
    left.set_xlabel("total (/10)")
    left.set_title("Total vs the paper's judge leaderboard")
    left.tick_params(axis="y", labelsize=8)

    x = np.arange(len(DIMENSIONS))
    series = [("this run", scores, THIS_RUN_COLOR)]
    if seed:
        series.append(("seed run", seed, SEED_COLOR))
    best = {key: max(m[key] for m in leaderboard["models"]) for key, _, _ in DIMENSIONS}
    series.append(("paper best", best, CLOSED_COLOR))
    width = 0.8 / len(series)
    for i, (label, values, color) in enumerate(series):
        heights = [(values.get(key) or 0.0) / top for key, _, top in DIMENSIONS]
        right.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=label, color=color)
    right.set_xticks(x, [label for _, label, _ in DIMENSIONS], fontsize=8)
    right.set_ylim(0, 1.25)  # headroom for the legend above bars that reach 1
    right.set_ylabel("fraction of maximum")
    right.set_title("Per dimension")
    right.legend(fontsize=8, loc="upper center", ncol=len(series))
    fig.subplots_adjust(left=0.17, right=0.98, wspace=0.25)
    return _save(fig, path)


def domains_chart(path: Path, by_domain: dict) -> Path:
    """Stacked bars per domain: instruction + physical laws + common sense = total."""
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
        text = f"{s['total']:.2f}\n(n={s['judged']})" if s.get("total") is not None else "n=0"
        ax.text(i, bottom[i] + 0.1, text, ha="center", fontsize=8)
    ax.set_ylim(0, 12.5)  # headroom for the total labels and the legend
    ax.set_ylabel("score (/10)")
    ax.set_title("Scores per domain")
    ax.tick_params(axis="x", labelsize=8, rotation=15)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    return _save(fig, path)


def contact_sheet(path: Path, samples: list[tuple[str, str, Path]]) -> Path:
    """One row per (domain, stem, video): the label, then its first, middle and last
    frame. A video that cannot be read gets grey tiles saying so."""
    from wmsub.state.video_io import probe_mp4, read_frames

    rows = max(1, len(samples))
    sheet = Image.new("RGB", (LABEL_W + TILE_W * len(FRAME_POSITIONS), TILE_H * rows), "white")
    draw = ImageDraw.Draw(sheet)
    if not samples:
        draw.text((10, 10), "no videos to show", fill="black")
    for row, (domain, stem, video) in enumerate(samples):
        top = row * TILE_H
        draw.text((8, top + 8), domain, fill="black")
        draw.text((8, top + 28), _ellipsize(stem, 32), fill="dimgray")
        try:
            n = probe_mp4(video)["frames"]
            frames = read_frames(video, [0, n // 2, n - 1])
        except ImportError:  # a missing module is the install's fault, not the video's
            raise
        except Exception as e:  # a broken video must not break the report
            draw.text((8, top + 48), f"unreadable: {type(e).__name__}", fill="darkred")
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
