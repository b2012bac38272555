"""Judge stage: official scoring, shards, merge, and run_shard with the stand-in judge.

The external VILA judge is replaced by wmsub/dev/standin_judge/evaluation.py (the only
stand-in allowed); everything else is real: real mp4 files, real subprocess, real
files in a temp run folder.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wmsub.config import Config
from wmsub.score.judge import (JudgeError, merge_shards, prepare_shard, read_shards, run_shard, shard_stems,
                         write_shards_file)
from wmsub.score.scoring import ResultsError, coverage, per_video, score, score_by_domain
from tests.helpers.judge import (BENCH, calls, hand_scores, make_judge_checkpoint, make_judge_repo,
                                make_mp4, make_run)

# ---------- scoring ----------

SMALL = {"model_name": "m",
         "preds": {"a": {}, "b": {}, "c": {}},
         "accs": {"instruction": [3, 1.0, 2],
                  # newton mass fluid penetration gravity, per video
                  "physical_laws": [True, True, False, True, True,
                                    False, True, False, True, True,
                                    True, True, True, False, True],
                  # framewise temporal, per video
                  "common_sense": [True, False, True, True, False, True]}}


def test_score_matches_hand_computation():
    s = score(SMALL)
    assert s["judged"] == 3
    assert s["instruction"] == pytest.approx(6 / 3)
    assert [s[k] for k in ("newton", "mass", "fluid", "penetration", "gravity")] == \
        pytest.approx([2 / 3, 3 / 3, 1 / 3, 2 / 3, 3 / 3])
    assert s["physical_laws"] == pytest.approx(11 / 3)
    assert (s["framewise"], s["temporal"]) == pytest.approx((2 / 3, 2 / 3))
    assert s["common_sense"] == pytest.approx(4 / 3)
    assert s["total"] == pytest.approx(2 + 11 / 3 + 4 / 3)


def test_score_of_no_videos_is_none_not_a_crash():
    s = score({"model_name": "m", "preds": {}, "accs": {}})
    assert s["judged"] == 0 and s["total"] is None and s["newton"] is None


def test_misaligned_accs_are_refused_with_the_file_named():
    bad = json.loads(json.dumps(SMALL))
    bad["accs"]["physical_laws"].pop()
    with pytest.raises(ResultsError, match=r"x\.json: accs\['physical_laws'\] has 14 entries .* 15"):
        score(bad, "x.json")
    with pytest.raises(ResultsError, match="not a WorldModelBench judge results file"):
        score({"scores": []}, "y.json")


def test_coverage_flags_missing_and_extra():
    cov = coverage(SMALL, ["a", "b", "c", "d"])
    assert (cov["judged"], cov["expected"], cov["missing"], cov["short"]) == (3, 4, ["d"], True)
    cov = coverage(SMALL, ["a", "b"])
    assert cov["short"] is False and cov["extra"] == ["c"]


def test_score_by_domain_uses_each_videos_own_entries():
    by = score_by_domain(SMALL, {"a": "robotics", "b": "natural", "c": "robotics", "z": "human"})
    assert list(by) == ["robotics", "natural", "human"]
    assert by["robotics"]["judged"] == 2
    assert by["robotics"]["instruction"] == pytest.approx((3 + 2) / 2)
    assert by["robotics"]["physical_laws"] == pytest.approx((4 + 4) / 2)
    assert by["natural"]["total"] == pytest.approx(1 + 3 + 2)
    assert by["human"]["judged"] == 0 and by["human"]["total"] is None


# ---------- shards and merge ----------

def test_shard_stems_balanced_by_domain_and_deterministic():
    domains = {f"{d}-{i}": d for d in "ABCDEFG" for i in range(5)}
    stems = list(domains)
    shuffled = sorted(stems, key=lambda s: hashlib.md5(s.encode()).hexdigest())
    for given in (stems, shuffled):
        shards = shard_stems(given, 3, domains)
        assert shards == shard_stems(given, 3, domains)
        assert sorted(s for sh in shards for s in sh) == sorted(stems)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        for d in "ABCDEFG":
            counts = [sum(domains[s] == d for s in sh) for sh in shards]
            assert max(counts) - min(counts) <= 1, (d, counts)
        for sh in shards:  # each shard keeps the given order
            assert sh == [s for s in given if s in sh]
    assert shard_stems(["x", "y"], 5) == [["x"], ["y"]]


def test_merge_keeps_each_videos_entries_together(tmp_path):
    run_dir = tmp_path / "run"
    cfg = Config()
    cfg.judge.shards = 2
    stems = ["a", "b", "c", "d"]
    write_shards_file(run_dir, cfg, stems)
    shards = json.loads((run_dir / "judge" / "shards.json").read_text())["shards"]
    assert shards == [["a", "c"], ["b", "d"]]
    # a distinct pattern per video: instruction k, physics has a single False at k,
    # common sense (k % 2 == 0, k % 2 == 1)
    pattern = {s: k for k, s in enumerate(stems)}

    def shard_result(shard):
        return {"model_name": "m", "preds": {s: {"instruction": [f"Score: {pattern[s]}"]} for s in shard},
                "accs": {"instruction": [pattern[s] for s in shard],
                         "physical_laws": [j != pattern[s] for s in shard for j in range(5)],
                         "common_sense": [v for s in shard for v in (pattern[s] % 2 == 0, pattern[s] % 2 == 1)]}}
    for i, shard in enumerate(shards):
        (run_dir / "judge" / f"shard-{i}").mkdir(parents=True)
        (run_dir / "judge" / f"shard-{i}" / "result.json").write_text(json.dumps(shard_result(shard)))
    merged = json.loads(merge_shards(run_dir).read_text())
    assert list(merged["preds"]) == stems  # the submit-time order, not shard order
    for v in per_video(merged):
        k = pattern[v.stem]
        assert v.instruction == k
        assert v.physical_laws == tuple(float(j != k) for j in range(5))
        assert v.common_sense == (float(k % 2 == 0), float(k % 2 == 1))
        assert v.preds == {"instruction": [f"Score: {k}"]}


def test_merge_reports_a_shard_without_result(tmp_path):
    run_dir = tmp_path / "run"
    cfg = Config()
    cfg.judge.shards = 2
    write_shards_file(run_dir, cfg, ["a", "b"])
    (run_dir / "judge" / "shard-0").mkdir(parents=True)
    (run_dir / "judge" / "shard-0" / "result.json").write_text(json.dumps(
        {"model_name": "m", "preds": {"a": {}}, "accs": {"instruction": [2], "physical_laws": [1] * 5,
                                                         "common_sense": [0, 1]}}))
    merged = json.loads(merge_shards(run_dir).read_text())
    assert list(merged["preds"]) == ["a"]
    cov = json.loads((run_dir / "judge" / "coverage.json").read_text())
    assert cov["missing"] == ["b"] and cov["shards_without_result"] == [1] and cov["short"]


# ---------- run_shard with the stand-in judge ----------

def test_run_shard_judges_what_exists_and_skips_when_done(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=2, missing=("clip_a",))
    repo = Path(cfg.judge.repo)
    shards = json.loads((run_dir / "judge" / "shards.json").read_text())["shards"]
    statuses = [run_shard(str(run_dir), i) for i in range(2)]
    assert [c[c.index("--video_dir") + 1] for c in calls(repo)] == \
        [str((run_dir / "judge" / f"shard-{i}" / "videos").resolve()) for i in range(2)]
    assert all("--cot" in c for c in calls(repo))
    missing_shard = next(i for i, sh in enumerate(shards) if "clip_a" in sh)
    st = statuses[missing_shard]
    assert st["missing"] == ["clip_a"] and st["short"] and st["judged"] == len(shards[missing_shard]) - 1
    shard = run_dir / "judge" / f"shard-{missing_shard}"
    assert json.loads((shard / "missing.json").read_text())["missing"] == ["clip_a"]
    links = sorted(p.name for p in (shard / "videos").iterdir())
    assert links == sorted(f"{s}.mp4" for s in shards[missing_shard] if s != "clip_a")
    assert all((shard / "videos" / n).is_symlink() for n in links)
    result = json.loads((shard / "result.json").read_text())
    assert "clip_a" not in result["preds"]
    assert (shard / "official_cot.json").is_file()  # where the official script writes it

    again = run_shard(str(run_dir), missing_shard)  # done: the judge is not started again
    assert len(calls(repo)) == 2 and again["reused_result"] and again["judged"] == st["judged"]

    judged = [s for s, _ in BENCH if s != "clip_a"]
    merged = json.loads(merge_shards(run_dir).read_text())
    assert list(merged["preds"]) == judged
    s = score(merged)
    expected = hand_scores(judged)
    assert s["judged"] == 4
    for key, value in expected.items():
        assert s[key] == pytest.approx(value), key


def test_merged_shards_equal_one_unsharded_judge_run(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=3, missing=())
    for i in range(3):
        run_shard(str(run_dir), i)
    merged = json.loads(merge_shards(run_dir).read_text())
    subprocess.run([sys.executable, "evaluation.py", "--judge", "x", "--video_dir", cfg.output.dir,
                    "--model_name", cfg.model.name, "--save_name", str(tmp_path / "single"), "--cot"],
                   cwd=cfg.judge.repo, check=True, capture_output=True)
    single = json.loads((tmp_path / "single_cot.json").read_text())
    assert merged == single
    # == says True == 1.0: the text and the types must match too (bools stay bools), and
    # the file is the unsharded run's byte for byte (the official script's formatting)
    assert json.dumps(merged) == json.dumps(single)
    assert (run_dir / "judge" / "results.json").read_bytes() == (tmp_path / "single_cot.json").read_bytes()
    assert all(type(x) is bool for key in ("physical_laws", "common_sense") for x in merged["accs"][key])
    assert all(type(x) is float for x in merged["accs"]["instruction"])


def test_merge_keeps_the_int_zero_of_an_unparsable_instruction_answer(tmp_path):
    run_dir = tmp_path / "run"
    cfg = Config()
    write_shards_file(run_dir, cfg, ["a", "b"])
    official = {"model_name": "m", "preds": {"a": {}, "b": {}},
                "accs": {"instruction": [0, 2.0], "physical_laws": [True, False, True, True, True] * 2,
                         "common_sense": [False, True, True, True]}}
    (run_dir / "judge" / "shard-0").mkdir(parents=True)
    (run_dir / "judge" / "shard-0" / "result.json").write_text(json.dumps(official))
    merged = json.loads(merge_shards(run_dir).read_text())
    assert json.dumps(merged["accs"]) == json.dumps(official["accs"])


def test_run_shard_rejudges_when_a_missing_video_appears(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=1, missing=("clip_c",))
    first = run_shard(str(run_dir), 0)
    assert first["missing"] == ["clip_c"]
    make_mp4(Path(cfg.output.dir) / "clip_c.mp4")
    second = run_shard(str(run_dir), 0)
    assert len(calls(Path(cfg.judge.repo))) == 2
    assert second["missing"] == [] and second["judged"] == len(BENCH) and not second["reused_result"]


def test_run_shard_failure_raises_with_the_log_tail(tmp_path, monkeypatch):
    run_dir, _ = make_run(tmp_path, shards=1)
    monkeypatch.setenv("WMSUB_STANDIN_FAIL", "3")
    with pytest.raises(JudgeError, match=r"(?s)exited with 3.*judge\.log.*failing on request"):
        run_shard(str(run_dir), 0)
    assert not (run_dir / "judge" / "shard-0" / "result.json").exists()


def test_run_shard_names_the_missing_judge_setting(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=1)
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data["judge"]["python"] = ""
    data["judge"]["checkpoint"] = ""
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(JudgeError, match=r"(?s)config\.yaml.*judge\.python: is empty.*judge\.checkpoint: is empty"):
        run_shard(str(run_dir), 0)
    with pytest.raises(JudgeError, match="there is no shard 4"):
        run_shard(str(run_dir), 4)


def test_shard_without_any_video_does_not_start_the_judge(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=1, missing=tuple(s for s, _ in BENCH))
    st = run_shard(str(run_dir), 0)
    assert st["judged"] == 0 and not st["ran_judge"] and calls(Path(cfg.judge.repo)) == []
    assert score(json.loads(Path(st["result"]).read_text()))["judged"] == 0


def test_prepare_shard_rebuilds_the_links(tmp_path):
    videos = tmp_path / "out"
    make_mp4(videos / "a.mp4")
    folder = prepare_shard(tmp_path / "run", 0, ["a", "b"], videos)
    assert [p.name for p in (folder / "videos").iterdir()] == ["a.mp4"]
    (videos / "a.mp4").unlink()
    make_mp4(videos / "b.mp4")
    folder = prepare_shard(tmp_path / "run", 0, ["a", "b"], videos)
    assert [p.name for p in (folder / "videos").iterdir()] == ["b.mp4"]
    assert json.loads((folder / "missing.json").read_text())["missing"] == ["a"]


def test_stems_the_judge_repo_does_not_list_are_reported(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=1, missing=())
    make_judge_repo(Path(cfg.judge.repo), [b for b in BENCH if b[0] != "clip_c"])
    st = run_shard(str(run_dir), 0)
    assert st["not_in_judge_list"] == ["clip_c"]
    assert st["missing"] == ["clip_c"] and st["judged"] == len(BENCH) - 1
    assert read_shards(run_dir) == [[s for s, _ in BENCH]]


def test_score_by_domain_accepts_a_manifest(tmp_path):
    from wmsub.benchmark.manifest import Instance, Manifest
    insts = [Instance(index=i, stem=s, prompt="p", image=None, domain=d, subdomain="x", image_size=None)
             for i, (s, d) in enumerate([("a", "robotics"), ("b", "natural"), ("c", "robotics")])]
    manifest = Manifest(instances=insts, root=tmp_path, json_path=tmp_path / "worldmodelbench.json")
    assert score_by_domain(SMALL, manifest) == score_by_domain(SMALL, {"a": "robotics", "b": "natural",
                                                                        "c": "robotics"})
    assert score_by_domain(SMALL, manifest)["robotics"]["judged"] == 2


def test_official_output_of_an_attempt_killed_before_the_copy_is_reused(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=1, missing=("clip_a",))
    first = run_shard(str(run_dir), 0)
    result = Path(first["result"])
    kept = result.read_text()
    result.unlink()  # as if the job died between the judge's write and our copy
    second = run_shard(str(run_dir), 0)
    assert len(calls(Path(cfg.judge.repo))) == 1 and not second["ran_judge"]
    assert result.read_text() == kept


def test_a_shard_made_with_other_judge_settings_is_judged_again(tmp_path):
    from wmsub.score.judge import shard_state
    run_dir, cfg = make_run(tmp_path, shards=1, missing=())
    run_shard(str(run_dir), 0)
    assert shard_state(run_dir, 0, cfg, cfg.output.dir) == (True, "current")
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data["judge"]["checkpoint"] = str(make_judge_checkpoint(tmp_path / "other-weights"))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    cfg.judge.checkpoint = data["judge"]["checkpoint"]
    assert shard_state(run_dir, 0, cfg, cfg.output.dir) == (False, "judge settings changed: judge.checkpoint")
    again = run_shard(str(run_dir), 0)
    assert len(calls(Path(cfg.judge.repo))) == 2 and again["ran_judge"]  # not the old official file
    assert shard_state(run_dir, 0, cfg, cfg.output.dir) == (True, "current")


def test_a_failed_shard_keeps_why_until_it_succeeds(tmp_path, monkeypatch):
    from wmsub.score.judge import shard_state
    run_dir, cfg = make_run(tmp_path, shards=1)
    monkeypatch.setenv("WMSUB_STANDIN_FAIL", "2")
    with pytest.raises(JudgeError):
        run_shard(str(run_dir), 0)
    failed = json.loads((run_dir / "judge" / "shard-0" / "failed.json").read_text())
    assert "exited with 2" in failed["error"]
    assert shard_state(run_dir, 0, cfg, cfg.output.dir) == (False, "judge failed")
    monkeypatch.delenv("WMSUB_STANDIN_FAIL")
    run_shard(str(run_dir), 0)
    assert not (run_dir / "judge" / "shard-0" / "failed.json").exists()


def test_the_demos_judge_settings_pass_the_judge_setup_check(tmp_path):
    # `make demo` was refused before the queue once the judge.checkpoint check arrived
    import shutil
    from wmsub.config import load_config
    from wmsub import CHECKOUT
    from wmsub.dev.demo import judge_overrides
    from wmsub.dev.standin_judge import STANDIN_JUDGE
    from wmsub.score.judge import judge_setup_problems
    repo = tmp_path / "standin-judge-repo"
    repo.mkdir()
    shutil.copy(STANDIN_JUDGE, repo / "evaluation.py")
    (repo / "worldmodelbench.json").write_text("[]")
    cfg = load_config(CHECKOUT / "configs" / "smoke.yaml", judge_overrides(repo))
    assert judge_setup_problems(cfg) == []


def test_plan_rejudge_writes_shards_when_there_are_none_and_reshards_on_a_new_count(tmp_path):
    from wmsub.login.rejudge import plan_rejudge
    from wmsub.state.runs import PlanRecord, RunFolder
    run_dir, cfg = make_run(tmp_path, shards=2)
    run = RunFolder(run_dir)
    stems = [s for s, _ in BENCH]
    run.save_plan(PlanRecord(stems=stems, domains=dict(BENCH)))
    (run_dir / "judge" / "shards.json").unlink()
    plan = plan_rejudge(run, cfg)
    assert plan.todo == {0: "no result", 1: "no result"} and plan.resharded is None
    assert read_shards(run_dir) == shard_stems(stems, 2, dict(BENCH))
    cfg.judge.shards = 3
    plan = plan_rejudge(run, cfg)
    assert sorted(plan.todo) == [0, 1, 2] and plan.resharded is not None
    assert (Path(plan.resharded) / "shards.json").is_file()
    assert read_shards(run_dir) == shard_stems(stems, 3, dict(BENCH))
