"""The official judge leaderboard (wmsub/data/leaderboard.json) and where a run stands on it.

The file holds the official site's 13 models under the site's names, as its data file
states them. Every row names its source; a value the source does not state is None and
is shown as "–". A run is ranked only when it covers the whole benchmark: a subset's
score is a mean over other instances and is not comparable.
"""
from __future__ import annotations

import json

from wmsub import DATA_DIR

LEADERBOARD_PATH = DATA_DIR / "leaderboard.json"
# the per-dimension columns the leaderboard publishes, with their short headings
COLUMNS = (("instruction", "Instr."), ("framewise", "Frame"), ("temporal", "Temp."),
           ("newton", "Newton"), ("mass", "Mass"), ("fluid", "Fluid"),
           ("penetration", "Penetr."), ("gravity", "Grav."), ("total", "Total"))
TYPES = ("closed", "open", None)


def load_leaderboard(path=LEADERBOARD_PATH) -> dict:
    """The leaderboard file, checked: every model has a name, a total, a known type (or
    null) and a source that the file's `sources` describes."""
    data = json.loads(path.read_text())
    problems = []
    for i, m in enumerate(data.get("models") or []):
        where = f"{path}: models[{i}] ({m.get('name', '?')})"
        if not m.get("name") or not isinstance(m.get("total"), (int, float)):
            problems.append(f"{where}: needs a name and a numeric total")
        if m.get("type") not in TYPES:
            problems.append(f"{where}: type {m.get('type')!r} is not one of {TYPES}")
        if m.get("source") not in (data.get("sources") or {}):
            problems.append(f"{where}: source {m.get('source')!r} is not described under 'sources'")
    if problems:
        raise ValueError("the leaderboard file is malformed:\n  " + "\n  ".join(problems))
    return data


def board_rows(leaderboard: dict, model_name: str, scores: dict, ci95: dict | None,
               comparable: bool, model_type: str | None = "open") -> list[dict]:
    """Every published model plus this run, by total (ties: published first).

    Each row: name, type, the per-dimension scores, total, date and paper_name (the paper's
    name where it differs from the site's; None elsewhere), source (a key of the file's
    `sources`) and source_text (what it says), this_run, and for the
    published rows `gap` (their total minus this run's) and `gap_inside_ci` (their total
    lies within this run's 95% interval: the run cannot be told apart from them).
    model_type: this run's model, "open" for the built-in (open-weight) Wan engines, None
    where wmsub cannot know (a user engine).
    """
    sources = leaderboard.get("sources") or {}
    mine_total = scores.get("total")
    low, high = (ci95 or {}).get("total") or (None, None)
    rows = []
    for m in leaderboard["models"]:
        row = {"name": m["name"], "type": m.get("type"),
               **{key: m.get(key) for key, _ in COLUMNS},
               "date": m.get("date"), "paper_name": m.get("paper_name"),
               "source": m.get("source"), "source_text": sources.get(m.get("source")), "this_run": False,
               "gap": None, "gap_inside_ci": None}
        if mine_total is not None:
            row["gap"] = round(m["total"] - mine_total, 4)
            if low is not None:
                row["gap_inside_ci"] = bool(low <= m["total"] <= high)
        rows.append(row)
    rows.sort(key=lambda r: -r["total"])
    if mine_total is None:
        return rows
    mine = {"name": model_name, "type": model_type, **{key: scores.get(key) for key, _ in COLUMNS},
            "date": None, "paper_name": None,
            "source": "this run",
            "source_text": "this run" + ("" if comparable else " (a subset: not comparable)"),
            "this_run": True, "gap": 0.0, "gap_inside_ci": None}
    # published totals have 2 decimals: ties (at 2 decimals) go below the published entry
    position = sum(1 for r in rows if r["total"] >= round(mine_total, 2))
    rows.insert(position, mine)
    return rows


def rank_of(rows: list[dict]) -> tuple[int | None, int | None]:
    """(rank, open-source rank) of this run's row; None where it has none."""
    for i, row in enumerate(rows):
        if row["this_run"]:
            if row["type"] != "open":
                return i + 1, None
            open_rank = 1 + sum(1 for r in rows[:i] if r["type"] == "open")
            return i + 1, open_rank
    return None, None


def indistinguishable(rows: list[dict]) -> list[str]:
    """Published models whose total lies inside this run's 95% interval."""
    return [r["name"] for r in rows if r["gap_inside_ci"]]
