"""`compare A B` of two judged run folders, in process: the common stems paired, the
scores checked against a hand computation. Through launch.py as a user runs it:
tests/procs/test_compare.py."""
from __future__ import annotations

import json

import pytest

from tests.helpers.judge import BENCH, hand_scores, make_run
from wmsub.score.compare import compare, resolve_side
from wmsub.score.judge import run_shard


def test_compare_two_runs_pairs_their_common_stems(tmp_path):
    run_a, cfg_a = make_run(tmp_path / "a", shards=1, missing=("clip_a",))
    run_b, cfg_b = make_run(tmp_path / "b", shards=2, missing=("clip_c",))
    run_shard(str(run_a), 0)
    for i in range(2):
        run_shard(str(run_b), i)
    out = compare(resolve_side(str(run_a)), resolve_side(str(run_b)), tmp_path / "cmp")
    d = json.loads((out / "compare.json").read_text())
    common = [s for s, _ in BENCH if s not in ("clip_a", "clip_c")]
    assert d["common"] == len(common) and d["only_a"] == ["clip_c"] and d["only_b"] == ["clip_a"]
    # the stand-in's verdicts depend on the stem only: the same videos, no difference
    assert all(v == 0 for v in d["delta"].values()) and d["flips"] == []
    assert d["scores_a"]["total"] == pytest.approx(hand_scores(common)["total"])
    assert set(d["by_domain"]) == {"robotics", "natural"}
