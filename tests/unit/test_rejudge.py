"""`launch.py judge`'s plan without a cluster: which shards are judged again and why, the
judge.* overrides only, and a changed judge.shards re-dealing the stems with the old shard
folders kept aside. Submission through Slurm: tests/e2e/test_e2e_rejudge.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.judge import BENCH, make_mp4, make_run
from wmsub.config import ConfigError
from wmsub.login import rejudge
from wmsub.score.judge import JudgeError, run_shard
from wmsub.state.runs import PlanRecord, RunFolder


def judged_run(tmp_path, monkeypatch):
    """Two shards: the one holding clip_a (no video) judged, the other failed (a broken
    judge env); returns (run, index of the judged shard, index of the failed one)."""
    run_dir, _ = make_run(tmp_path, shards=2, missing=("clip_a",))
    run = RunFolder(run_dir)
    run.save_plan(PlanRecord(stems=[s for s, _ in BENCH], domains=dict(BENCH)))
    shards = json.loads((run_dir / "judge" / "shards.json").read_text())["shards"]
    ok = next(i for i, sh in enumerate(shards) if "clip_a" in sh)
    run_shard(str(run_dir), ok)
    monkeypatch.setenv("WMSUB_STANDIN_FAIL", "1")
    with pytest.raises(JudgeError):
        run_shard(str(run_dir), 1 - ok)
    monkeypatch.delenv("WMSUB_STANDIN_FAIL")
    return run, ok, 1 - ok


def test_only_the_shards_that_are_not_complete_and_current_are_judged_again(tmp_path, monkeypatch):
    run, ok, failed = judged_run(tmp_path, monkeypatch)
    cfg = rejudge.judge_config(run, [])
    assert cfg.judge.enabled
    plan = rejudge.plan_rejudge(run, cfg)
    assert (plan.todo, plan.current, plan.resharded, plan.after) == ({failed: "judge failed"}, [ok], None, [])
    assert rejudge.describe(run, plan).splitlines() == [
        "run run1: judge again 1 shard(s), 1 complete and current (kept)", f"  shard {failed}: judge failed"]
    # a video missing when the good shard was judged exists now: that shard is stale too
    make_mp4(Path(cfg.output.dir) / "clip_a.mp4")
    plan = rejudge.plan_rejudge(run, cfg)
    assert plan.todo == {ok: "1 video(s) missing when judged exist now", failed: "judge failed"}
    assert plan.current == []


def test_other_judge_settings_make_a_shard_stale(tmp_path, monkeypatch):
    run, ok, failed = judged_run(tmp_path, monkeypatch)
    cfg = rejudge.judge_config(run, ["judge.cot=false"])
    assert cfg.judge.cot is False
    assert rejudge.plan_rejudge(run, cfg).todo == {ok: "judge settings changed: judge.cot",
                                                   failed: "judge failed"}


def test_a_new_shard_count_redeals_the_stems_and_keeps_the_old_folders(tmp_path, monkeypatch):
    run, ok, _ = judged_run(tmp_path, monkeypatch)
    jdir = run.path / "judge"
    old = json.loads((jdir / "shards.json").read_text())
    cfg = rejudge.judge_config(run, ["judge.shards=3"])
    plan = rejudge.plan_rejudge(run, cfg)
    aside = Path(plan.resharded)
    assert aside.parent == jdir and aside.name.startswith("previous-")
    assert sorted(p.name for p in aside.iterdir()) == ["shard-0", "shard-1", "shards.json"]
    assert json.loads((aside / "shards.json").read_text()) == old
    assert (aside / f"shard-{ok}" / "result.json").is_file()  # moved, never deleted
    new = json.loads((jdir / "shards.json").read_text())["shards"]
    assert len(new) == 3 and sorted(s for sh in new for s in sh) == sorted(s for s, _ in BENCH)
    assert plan.todo == {0: "no result", 1: "no result", 2: "no result"} and plan.current == []


def test_only_judge_keys_are_taken(tmp_path, monkeypatch):
    run, _, _ = judged_run(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"judge\.\* overrides only; refused: bench.limit=3, model.name=x"):
        rejudge.judge_config(run, ["judge.shards=2", "bench.limit=3", "model.name=x"])
