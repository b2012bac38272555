"""`compare A B` through launch.py as a user runs it: two synthetic results files whose true
difference on the common instances is known exactly."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = "<script>window.__pwned=1</script>"


def results(path: Path, stems, instruction, newton) -> Path:
    """Every question passes except newton where `newton(stem)` is False."""
    preds = {s: {"instruction": [f"Score: {instruction(s)}"], "physical_laws": [PAYLOAD] * 5,
                 "common_sense": ["No."] * 2} for s in stems}
    path.write_text(json.dumps({"model_name": path.stem, "preds": preds, "accs": {
        "instruction": [float(instruction(s)) for s in stems],
        "physical_laws": [x for s in stems for x in (newton(s), True, True, True, True)],
        "common_sense": [True] * 2 * len(stems)}}))
    return path


def test_compare_two_results_files_with_a_known_difference(tmp_path):
    a_stems = [f"s{i:03d}" for i in range(100)]
    b_stems = [f"s{i:03d}" for i in range(10, 110)]
    newton_flipped = {f"s{i:03d}" for i in range(10, 30)}  # 20 of the 90 common
    better = {f"s{i:03d}" for i in range(30, 40)}  # instruction 2 -> 3 on 10
    a = results(tmp_path / "a.json", a_stems, lambda s: 2, lambda s: True)
    b = results(tmp_path / "b.json", b_stems, lambda s: 3 if s in better else 2,
                lambda s: s not in newton_flipped)
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "launch.py", "compare", str(a), str(b), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["compare.html", "compare.json", "compare.md"]
    d = json.loads((out / "compare.json").read_text())
    assert d["common"] == 90
    assert d["only_a"] == a_stems[:10] and d["only_b"] == b_stems[-10:]
    assert d["delta"]["newton"] == pytest.approx(-20 / 90)
    assert d["delta"]["instruction"] == pytest.approx(10 / 90)
    assert d["delta"]["total"] == pytest.approx(-10 / 90)
    assert d["delta"]["mass"] == 0 and d["ci95"]["mass"] == [0.0, 0.0]
    low, high = d["ci95"]["newton"]
    assert low < -20 / 90 < high < 0 and d["significant"]["newton"] is True
    assert d["ci95"]["instruction"][0] > 0 and d["significant"]["instruction"] is True
    assert set(d["ci95"]) >= {"instruction", "physical_laws", "common_sense", "total"}
    assert sorted((f["stem"], f["question"]) for f in d["flips"]) == sorted(
        [(s, "newton") for s in newton_flipped] + [(s, "instruction") for s in better])
    assert all(f["a"] == "pass" and f["b"] == "fail" for f in d["flips"] if f["question"] == "newton")
    md = (out / "compare.md").read_text()
    assert "| newton | 1.00 | 0.78 | -0.222 |" in md and "## Verdicts that flipped (30)" in md
    page = (out / "compare.html").read_text()
    assert PAYLOAD not in page and "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
