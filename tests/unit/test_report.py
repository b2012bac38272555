"""The report: files, pixel sizes, and every number checked against a hand computation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import real_bench_root
from PIL import Image

from wmsub.score import charts
from wmsub.config import Config
from wmsub.score.judge import run_shard
from wmsub.score.report import load_leaderboard, rank_against, run_report, write_report
from tests.helpers.judge import BENCH, hand_scores, make_run, standin_verdict

BENCH_ROOT = real_bench_root()
JUDGED = [s for s, _ in BENCH if s != "clip_a"]


def write_chunk_records(run_dir: Path) -> None:
    chunks = run_dir / "chunks"
    chunks.mkdir()
    (chunks / "0.json").write_text(json.dumps({
        "chunk": 0, "job_id": "7_0", "total": 3, "stems": ["000000007259.2", "clip_a", "clip-b"],
        "state": "finished", "done": ["000000007259.2", "clip-b"], "failed": {"clip_a": "CUDA out of memory"},
        "restarts": 1, "timeouts": 1, "preemptions": 0, "started_at": 1000.0, "updated_at": 1400.0,
        "videos": [{"stem": "000000007259.2", "seconds": 10.0, "s_per_step": 0.2, "finished_at": 1100.0},
                   {"stem": "clip-b", "seconds": 20.0, "s_per_step": 0.4, "finished_at": 1200.0}]}))
    (chunks / "1.json").write_text(json.dumps({
        "chunk": 1, "job_id": "7_1", "total": 2, "stems": ["000000001069.10", "clip_c"],
        "state": "finished", "done": ["000000001069.10", "clip_c"], "failed": {},
        "restarts": 2, "timeouts": 0, "preemptions": 2, "started_at": 1000.0, "updated_at": 1200.0,
        "videos": [{"stem": "000000001069.10", "seconds": 30.0, "s_per_step": 0.6, "finished_at": 1100.0},
                   {"stem": "clip_c", "seconds": 60.0, "s_per_step": 1.2, "finished_at": 1150.0}]}))
    (chunks / "2.json").write_text('{"chunk": 2, "state": "runn')  # killed mid-write elsewhere


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()
        return im.size


def test_run_report_from_a_judged_run_folder(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=2, missing=("clip_a",))
    for i in range(2):
        run_shard(str(run_dir), i)
    write_chunk_records(run_dir)

    md_path = Path(run_report(str(run_dir)))
    out = run_dir / "report"
    assert md_path == out / "report.md"
    assert (run_dir / "judge" / "results.json").is_file()  # merged by the report job
    report = json.loads((out / "report.json").read_text())

    expected = hand_scores(JUDGED)
    for key, value in expected.items():
        assert report["scores"][key] == pytest.approx(value), key
    assert report["coverage"]["judged"] == 4 and report["coverage"]["expected"] == 5
    assert report["coverage"]["missing"] == ["clip_a"] and report["coverage"]["short"]

    domains = report["domains"]
    assert list(domains) == ["robotics", "natural", "human"]
    assert [domains[d]["judged"] for d in domains] == [1, 2, 1]
    assert domains["robotics"]["total"] == pytest.approx(hand_scores(["000000007259.2"])["total"])
    assert domains["natural"]["total"] == pytest.approx(
        hand_scores(["000000001069.10", "clip-b"])["total"])
    assert domains["human"]["instruction"] == standin_verdict("clip_c")[0]

    board = load_leaderboard()["models"]
    better = sum(1 for m in board if m["total"] >= round(expected["total"], 2))
    assert report["rank"]["rank"] == better + 1
    assert report["rank"]["table"][better]["this_run"]

    g = report["generation"]
    assert (g["videos"], g["failures"], g["failed"]) == (4, 1, {"clip_a": "CUDA out of memory"})
    assert g["seconds_per_video_mean"] == pytest.approx((10 + 20 + 30 + 60) / 4)
    assert g["seconds_per_video_median"] == pytest.approx(25.0)
    assert g["gpus_per_job"] == cfg.slurm.gpus_per_job == 2
    assert g["gpu_hours_generating"] == pytest.approx(120 * 2 / 3600)
    assert g["gpu_hours_chunk_wall"] == pytest.approx((400 + 200) * 2 / 3600)
    assert (g["requeues"], g["timeouts"], g["preemptions"]) == (3, 1, 2)
    assert g["unreadable_records"] == ["2.json"]

    j = report["judge"]
    assert (j["shards"], j["shards_with_result"], j["not_in_judge_list"]) == (2, 2, [])
    statuses = [json.loads((run_dir / "judge" / f"shard-{i}" / "status.json").read_text()) for i in range(2)]
    assert j["gpu_hours"] == pytest.approx(sum(st["seconds"] for st in statuses) / 3600)

    w, h = charts.SCORES_FIGSIZE
    assert png_size(out / "scores.png") == (w * charts.DPI, h * charts.DPI)
    w, h = charts.DOMAINS_FIGSIZE
    assert png_size(out / "domains.png") == (w * charts.DPI, h * charts.DPI)
    rows = 4  # judged videos per domain, at most 2 each: robotics 1, natural 2, human 1
    sheet = out / "contact_sheet.png"
    assert png_size(sheet) == (charts.LABEL_W + 3 * charts.TILE_W, rows * charts.TILE_H)
    with Image.open(sheet) as im:  # a real frame: left half of the test video is pure red
        r, g_, b = im.convert("RGB").getpixel((charts.LABEL_W + (charts.TILE_W - 64) // 2 + 8,
                                               (charts.TILE_H - 64) // 2 + 8))
    assert r > 200 and g_ < 120

    md = md_path.read_text()
    assert "**Coverage: 4 of 5 videos judged** — **SHORT: 1 missing**" in md
    assert f"| **Total** |  | {expected['total']:.2f} / 10 |" in md
    assert f"Rank **{better + 1} of {len(board) + 1}**" in md
    for name in ("scores.png", "domains.png", "contact_sheet.png"):
        assert f"]({name})" in md


def test_report_on_a_bare_results_file_skips_domains_with_a_note(tmp_path):
    results = {"model_name": "hand-made", "preds": {"x": {}, "y": {}},
               "accs": {"instruction": [3, 2], "physical_laws": [True] * 5 + [False] * 5,
                        "common_sense": [True, True, True, False]}}
    path = tmp_path / "results_cot.json"
    path.write_text(json.dumps(results))
    md = write_report(None, path, tmp_path / "rep")
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["scores"]["total"] == pytest.approx(2.5 + 2.5 + 1.5)
    assert report["coverage"]["judged"] == report["coverage"]["expected"] == 2
    assert report["domains"] is None and report["generation"] is None
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["report.json", "report.md", "scores.png"]
    assert "Skipped: no benchmark file" in md.read_text()


def test_report_on_a_results_file_with_bench_root_has_domains(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=1, missing=("clip_a",))
    run_shard(str(run_dir), 0)
    results_path = run_dir / "judge" / "shard-0" / "result.json"
    write_report(None, results_path, tmp_path / "rep", cfg=cfg)
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["coverage"]["expected"] == 5 and report["coverage"]["missing"] == ["clip_a"]
    assert [report["domains"][d]["judged"] for d in report["domains"]] == [1, 2, 1]
    assert (tmp_path / "rep" / "contact_sheet.png").is_file()  # videos found in output.dir


def test_bad_results_file_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"preds": {"a": {}}, "accs": {"instruction": [1]}}')
    with pytest.raises(ValueError, match=r"broken\.json: accs\['physical_laws'\] has 0 entries"):
        write_report(None, path, tmp_path / "rep")
    with pytest.raises(FileNotFoundError, match="nothere.json: no judge results file"):
        write_report(None, tmp_path / "nothere.json", tmp_path / "rep")


def test_rank_ties_go_below_the_published_entry():
    board = load_leaderboard()
    assert len(board["models"]) == 8 and board["seed"]["total"] == 8.65
    tie = next(m for m in board["models"] if m["name"] == "Mochi-official")
    scores = {k: tie[k] for k in ("instruction", "framewise", "temporal", "newton", "mass", "fluid",
                                  "penetration", "gravity", "total")}
    rank = rank_against(board, "mine", scores)
    above = sum(1 for m in board["models"] if m["total"] >= tie["total"])
    assert rank["rank"] == above + 1
    assert rank["table"][above - 1]["name"] == "Mochi-official"
    assert rank["open_rank"] == 1 + sum(1 for m in board["models"][:above] if m["type"] == "open")
    assert rank_against(board, "mine", {"total": None})["rank"] is None


@pytest.mark.skipif(not (BENCH_ROOT / "worldmodelbench.json").is_file(),
                    reason="WorldModelBench data not present (set WMSUB_BENCH_ROOT)")
def test_real_benchmark_gives_seven_domains_and_350_expected(tmp_path):
    entries = json.loads((BENCH_ROOT / "worldmodelbench.json").read_text())
    picked = [Path(entries[i]["first_frame"]).stem for i in (0, 60, 349)]
    v = [standin_verdict(s) for s in picked]
    results = {"model_name": "m", "preds": {s: {} for s in picked},
               "accs": {"instruction": [x[0] for x in v],
                        "physical_laws": [bool(b) for x in v for b in x[1]],
                        "common_sense": [bool(b) for x in v for b in x[2]]}}
    (tmp_path / "r.json").write_text(json.dumps(results))
    cfg = Config()
    cfg.bench.root = str(BENCH_ROOT)
    write_report(None, tmp_path / "r.json", tmp_path / "rep", cfg=cfg)
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(report["domains"]) == 7
    assert sum(d["judged"] for d in report["domains"].values()) == 3
    assert report["coverage"]["expected"] == 350 and report["coverage"]["judged"] == 3


def test_report_remerges_after_a_shard_is_judged_again(tmp_path):
    from tests.helpers.judge import make_mp4
    run_dir, cfg = make_run(tmp_path, shards=2, missing=("clip_a",))
    for i in range(2):
        run_shard(str(run_dir), i)
    run_report(str(run_dir))
    assert json.loads((run_dir / "report" / "report.json").read_text())["coverage"]["judged"] == 4
    make_mp4(Path(cfg.output.dir) / "clip_a.mp4")  # e.g. made by a resubmitted chunk
    for i in range(2):
        run_shard(str(run_dir), i)
    run_report(str(run_dir))
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert (report["coverage"]["judged"], report["coverage"]["short"]) == (5, False)
    assert report["scores"]["total"] == pytest.approx(hand_scores([s for s, _ in BENCH])["total"])
    assert "SHORT" not in (run_dir / "report" / "report.md").read_text()
