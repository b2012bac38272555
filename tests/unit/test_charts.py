"""The report's images, checked on what they draw: the per-domain chart's axis ends at the
score's maximum, the leaderboard panel has a legend for each colour it uses, and the
contact sheet's labels keep their spaces and show the prompt and the score."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers.judge import make_mp4
from wmsub.score import charts
from wmsub.score.leaderboard import load_leaderboard


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the charts save, kept open for inspection."""
    kept = []

    def keep(fig, path):
        kept.append(fig)
        return path
    monkeypatch.setattr(charts, "_save", keep)
    yield kept
    for fig in kept:
        charts.plt.close(fig)


def test_the_domain_chart_ends_at_10_on_a_score_out_of_10(figures, tmp_path):
    full = {"instruction": 3.0, "physical_laws": 5.0, "common_sense": 2.0, "total": 10.0, "judged": 50}
    charts.domains_chart(tmp_path / "d.png", {"robotics": full, "natural": {**full, "total": 9.0}})
    (ax,) = figures[0].axes
    assert ax.get_ylim() == (0, 10)
    # the stacked bars reach the total and no further
    tops = [max(p.get_y() + p.get_height() for p in ax.patches if abs(p.get_x() + p.get_width() / 2 - i) < 0.5)
            for i in range(2)]
    assert tops == pytest.approx([10.0, 10.0])


def test_the_leaderboard_panel_has_a_legend_for_open_and_closed(figures, tmp_path):
    board = load_leaderboard()
    charts.scores_chart(tmp_path / "s.png", "mine", {"total": 8.0}, board, {"total": [7.8, 8.2]})
    left = figures[0].axes[0]
    labels = [t.get_text() for t in left.get_legend().get_texts()]
    assert labels == ["this run", "seed run", "open source", "closed"]  # every model's type is stated
    colours = {tuple(p.get_facecolor()) for p in left.patches}
    for colour in (charts.OPEN_COLOR, charts.CLOSED_COLOR, charts.THIS_RUN_COLOR, charts.SEED_COLOR):
        assert charts.matplotlib.colors.to_rgba(colour) in colours
    # a model without a stated type gets its own colour, and the legend says so
    board["models"][-1] = {**board["models"][-1], "type": None}
    charts.scores_chart(tmp_path / "s2.png", "mine", {"total": 8.0}, board, None)
    assert "type not stated" in [t.get_text() for t in figures[1].axes[0].get_legend().get_texts()]


def test_the_interval_is_drawn_on_this_runs_bar_when_another_has_the_same_total(figures, tmp_path):
    board = load_leaderboard()
    tie = board["seed"]["total"]  # 8.65: the seed run's bar has the same length
    charts.scores_chart(tmp_path / "s.png", "mine", {"total": tie}, board, {"total": [tie - 0.2, tie + 0.1]})
    left = figures[0].axes[0]
    mine = next(p for p in left.patches if p.get_facecolor() == charts.matplotlib.colors.to_rgba(charts.THIS_RUN_COLOR))
    (bar,) = [c for c in left.collections if len(c.get_segments()) == 1]  # the interval's line
    (start, end) = bar.get_segments()[0]
    assert start[1] == end[1] == pytest.approx(mine.get_y() + mine.get_height() / 2)
    assert (start[0], end[0]) == pytest.approx((tie - 0.2, tie + 0.1))


def _label_ink_width(sheet: Image.Image, row: int) -> int:
    """Width in pixels of the ink of a row's first label line (the domain)."""
    top = row * charts.TILE_H
    strip = np.asarray(sheet.convert("L").crop((0, top + 4, charts.LABEL_W, top + 22)))
    columns = np.flatnonzero((strip < 128).any(axis=0))
    return int(columns[-1] - columns[0] + 1)


def test_the_contact_sheet_keeps_spaces_and_shows_prompt_and_score(tmp_path, monkeypatch):
    video = make_mp4(tmp_path / "v.mp4")
    prompt = "The car turns left at the crossing while a cyclist waits"
    drawn = []
    text = ImageDraw.ImageDraw.text

    def record(self, xy, s, *args, **kwargs):
        drawn.append(s)
        return text(self, xy, s, *args, **kwargs)
    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    charts.contact_sheet(tmp_path / "a.png", [("autonomous vehicle", "000000007259.2", video, prompt, 7.3),
                                               ("autonomousvehicle", "clip-b", video, "", None)])
    assert drawn[0] == "autonomous vehicle"
    assert drawn[1] == "000000007259.2  score 7.3/10"  # the stem, then the score
    assert " ".join(drawn[2:drawn.index("autonomousvehicle")]) == prompt  # wrapped, every word kept
    assert "clip-b" in drawn and not any("score" in s for s in drawn[drawn.index("clip-b"):])
    with Image.open(tmp_path / "a.png") as sheet:
        # the space is drawn: the label with it is wider than the same letters without
        assert _label_ink_width(sheet, 0) - _label_ink_width(sheet, 1) >= 2  # 3 px at 14 px
