"""The report: files, pixel sizes, and every number checked against a hand computation.
In an interpreter that lacks torch or matplotlib: tests/procs/test_report.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import real_bench_root
from PIL import Image

from wmsub.score import charts
from wmsub.config import Config
from wmsub.score.judge import run_shard
from wmsub.score.judge import JudgeError
from wmsub.score.leaderboard import board_rows, load_leaderboard, rank_of
from wmsub.score.report import run_report, write_report
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


def write_sidecars(cfg: Config, stems, gpu: str = "NVIDIA H200") -> str:
    """The output folder's settings lock and one sidecar per video, as the worker leaves
    them (the engine fingerprint is what a CUDA run records); returns the fingerprint."""
    from wmsub.state.jsonio import write_json_atomic
    from wmsub.state.store import OutputStore
    store = OutputStore.for_config(cfg)
    store.check_settings()
    engine = {"engine": "wmsub.wan_ti2v", "attention": "cudnn", "parallel": "sp", "device": "cuda",
              "gpu": gpu, "exact": True}
    for stem in stems:
        write_json_atomic(store.record_path(stem), {"stem": stem, "fingerprint": store.fingerprint,
                                                    "engine": engine})
    return store.fingerprint


def test_run_report_from_a_judged_run_folder(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=2, missing=("clip_a",))
    for i in range(2):
        run_shard(str(run_dir), i)
    write_chunk_records(run_dir)
    fingerprint = write_sidecars(cfg, JUDGED)

    md_path = Path(run_report(str(run_dir)))
    out = run_dir / "report"
    assert md_path == out / "report.md"
    assert (run_dir / "judge" / "results.json").is_file()  # merged by the report job
    report = json.loads((out / "report.json").read_text())

    expected = hand_scores(JUDGED)
    for key, value in expected.items():
        assert report["scores"][key] == pytest.approx(value), key
        low, high = report["ci95"][key]
        assert low <= value + 1e-9 and value - 1e-9 <= high, key
    cov = report["coverage"]
    assert cov["judged"] == 4 and cov["expected"] == 5 and cov["of"] == 350 and cov["subset"] is True
    assert cov["missing"] == ["clip_a"] and cov["video_missing"] == ["clip_a"] and cov["judge_failed"] == []
    assert cov["label"].startswith("4 of 350 instances (domains: robotics 1, natural 2, human 1)")
    assert "not comparable with the leaderboard" in cov["label"]
    assert report["rank"] is None and report["open_rank"] is None  # a subset is never ranked

    domains = report["domains"]
    assert list(domains) == ["robotics", "natural", "human"]
    assert [domains[d]["judged"] for d in domains] == [1, 2, 1]
    assert domains["robotics"]["total"] == pytest.approx(hand_scores(["000000007259.2"])["total"])
    assert domains["natural"]["total"] == pytest.approx(
        hand_scores(["000000001069.10", "clip-b"])["total"])
    assert domains["human"]["instruction"] == standin_verdict("clip_c")[0]

    rows = report["leaderboard"]
    assert len(rows) == 14 and sum(r["this_run"] for r in rows) == 1
    assert [r["total"] for r in rows] == sorted((r["total"] for r in rows), reverse=True)

    g = report["generation"]
    assert (g["videos"], g["failures"], g["failed"]) == (4, 1, {"clip_a": "CUDA out of memory"})
    assert g["seconds_per_video_mean"] == pytest.approx((10 + 20 + 30 + 60) / 4)
    assert g["seconds_per_video_median"] == pytest.approx(25.0)
    assert g["gpus_per_job"] == cfg.slurm.gpus_per_job == 2
    assert g["gpu_hours_generating"] == pytest.approx(120 * 2 / 3600)
    assert g["gpu_hours_chunk_wall"] == pytest.approx((400 + 200) * 2 / 3600)
    assert (g["requeues"], g["timeouts"], g["preemptions"]) == (3, 1, 2)
    assert g["unreadable_records"] == ["2.json"]

    st = report["settings"]
    assert st["fingerprint"] == fingerprint and st["settings"]["generate.sampling_steps"] == 50
    assert (st["mode"], st["attention"]["used"], st["parallel"]["used"]) == ("exact", ["cudnn"], ["sp"])
    assert st["gpu_type"] == ["NVIDIA H200"] and st["gpus_per_job"] == 2
    assert (st["requeues"], st["timeouts"], st["preemptions"]) == (3, 1, 2)
    assert st["gpu_hours_chunk_wall"] == pytest.approx((400 + 200) * 2 / 3600)
    assert st["engines"][0]["videos"] == 4

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
    assert (out / "index.html").is_file() and report["files"]["explorer"] == "index.html"

    md = md_path.read_text()
    assert "**Coverage: 4 of 350 instances (domains: robotics 1, natural 2, human 1)" in md
    assert "1 video missing (never generated or lost): `clip_a`" in md
    assert f"| **Total** |  | {expected['total']:.2f} / 10 | {_ci(report['ci95']['total'])} |" in md
    assert "**No rank: 4 of 350 instances" in md
    assert "| Settings fingerprint | `" + fingerprint + "` |" in md
    assert "| GPU type | NVIDIA H200 |" in md
    assert report["judge"]["standin"] and "judged by the STAND-IN for the VILA judge" in md
    assert "judged by the STAND-IN for the VILA judge" in (out / "index.html").read_text()
    for name in ("scores.png", "domains.png", "contact_sheet.png"):
        assert f"]({name})" in md


def _ci(ci):
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def test_a_judge_failure_is_told_apart_from_a_missing_video(tmp_path, monkeypatch):
    run_dir, cfg = make_run(tmp_path, shards=2, missing=("clip_a",))
    shards = json.loads((run_dir / "judge" / "shards.json").read_text())["shards"]
    broken = next(i for i, sh in enumerate(shards) if "clip_a" not in sh)
    for i in range(2):
        if i == broken:
            monkeypatch.setenv("WMSUB_STANDIN_FAIL", "3")
            with pytest.raises(JudgeError):
                run_shard(str(run_dir), i)
            monkeypatch.delenv("WMSUB_STANDIN_FAIL")
        else:
            run_shard(str(run_dir), i)
    run_report(str(run_dir))
    report = json.loads((run_dir / "report" / "report.json").read_text())
    cov = report["coverage"]
    assert cov["video_missing"] == ["clip_a"]
    assert cov["judge_failed"] == shards[broken]  # their videos exist
    assert cov["judged"] == 5 - 1 - len(shards[broken])
    [failure] = cov["shard_failures"]
    assert failure["shard"] == broken and failure["stems"] == shards[broken]
    assert "exited with 3" in failure["why"] and "failing on request" in failure["log_tail"]
    md = (run_dir / "report" / "report.md").read_text()
    assert f"{len(shards[broken])} video exists, the judge failed on it" in md.replace("videos", "video")
    assert "stand-in judge: failing on request" in md


def results_file(path: Path, instruction: list, physics_pass: bool = True, common_pass: bool = True) -> Path:
    n = len(instruction)
    path.write_text(json.dumps({"model_name": "synthetic", "preds": {f"s{k:03d}": {} for k in range(n)},
                                "accs": {"instruction": instruction,
                                         "physical_laws": [physics_pass] * 5 * n,
                                         "common_sense": [common_pass] * 2 * n}}))
    return path


def test_only_full_coverage_is_ranked(tmp_path):
    # 350 videos, every question passed, instruction 2: total exactly 9.0, no sampling spread
    full = results_file(tmp_path / "full.json", [2.0] * 350)
    write_report(None, full, tmp_path / "full")
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    assert report["scores"]["total"] == pytest.approx(9.0)
    assert report["ci95"]["total"] == pytest.approx([9.0, 9.0])
    assert report["coverage"]["subset"] is False and report["coverage"]["judged"] == 350
    assert report["rank"] == 2 and report["open_rank"] == 1  # only KLING (9.10) is above
    assert report["indistinguishable"] == []
    # the same minus one video: a subset, no rank
    write_report(None, results_file(tmp_path / "sub.json", [2.0] * 349), tmp_path / "sub")
    sub = json.loads((tmp_path / "sub" / "report.json").read_text())
    assert sub["coverage"]["subset"] is True and sub["rank"] is None
    assert sub["coverage"]["label"].startswith("349 of 350 instances")
    assert "**No rank: 349 of 350 instances" in (tmp_path / "sub" / "report.md").read_text()


def test_leaderboard_gaps_inside_the_interval_are_named(tmp_path):
    # instruction: 193 threes and 157 zeros (mean 579/350), every other question passed:
    # total 8.654, with a sampling spread of about +-0.15
    path = results_file(tmp_path / "r.json", [3.0] * 193 + [0] * 157)
    write_report(None, path, tmp_path / "rep")
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["scores"]["total"] == pytest.approx(7 + 579 / 350)
    low, high = report["ci95"]["total"]
    assert 0.1 < report["scores"]["total"] - low < 0.2 and 0.1 < high - report["scores"]["total"] < 0.2
    board = load_leaderboard()["models"]
    assert report["indistinguishable"] == [m["name"] for m in sorted(board, key=lambda m: -m["total"])
                                           if low <= m["total"] <= high]
    assert {"Mochi 1-official", "Runway"} <= set(report["indistinguishable"])
    assert "KLING" not in report["indistinguishable"]
    mochi = next(r for r in report["leaderboard"] if r["name"] == "Mochi 1-official")
    assert mochi["gap"] == pytest.approx(8.66 - report["scores"]["total"], abs=1e-4)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Inside this run's 95% interval of the total (gap not significant): " in md


# the official site's leaderboard (its leaderboard_data.json): name -> (type, instruction,
# framewise, temporal, newton, mass, fluid, penetration, gravity, total)
SITE = {
    "KLING": ("closed", 2.32, .99, .97, 1.00, .90, 1.00, .93, .99, 9.10),
    "Minimax": ("closed", 2.28, .99, .93, 1.00, .86, .99, .88, .99, 8.92),
    "Mochi 1-official": ("closed", 2.00, .97, .89, 1.00, .88, 1.00, .93, .99, 8.66),
    "Runway": ("closed", 2.17, .99, .87, 1.00, .77, .98, .89, .96, 8.64),
    "Luma": ("closed", 1.98, .96, .81, 1.00, .70, .98, .87, .95, 8.24),
    "OpenSoraPlan-T2V": ("open", 1.72, .83, .85, 1.00, .77, .99, .91, .98, 8.04),
    "Mochi 1": ("open", 2.06, .78, .68, .99, .63, .99, .79, .98, 7.91),
    "CogVideoX-T2V": ("open", 2.03, .75, .60, .99, .58, .99, .73, .98, 7.65),
    "CogVideoX-I2V": ("open", 1.78, .61, .52, 1.00, .52, .99, .68, .99, 7.08),
    "Pandora": ("open", 1.56, .49, .53, 1.00, .55, .98, .79, .99, 6.90),
    "T2V-Turbo": ("open", 1.37, .64, .44, .99, .41, .99, .73, .98, 6.56),
    "OpenSora-T2V": ("open", 1.61, .40, .29, .98, .30, .98, .64, .97, 6.17),
    "OpenSora-I2V": ("open", 1.42, .36, .18, .98, .22, .98, .68, .98, 5.82),
}
SITE_KEYS = ("type", "instruction", "framewise", "temporal", "newton", "mass", "fluid", "penetration",
             "gravity", "total")


def test_the_leaderboard_holds_the_sites_13_models_under_its_names():
    board = load_leaderboard()
    models = board["models"]
    assert [m["name"] for m in models] == list(SITE)  # the site's names, by total
    for m in models:
        assert tuple(m[k] for k in SITE_KEYS) == SITE[m["name"]], m["name"]
        assert m["source"] == "site" and "leaderboard_data.json" in board["sources"]["site"]
        assert m["size"] is None  # the site gives none ('-'): not filled in
        # the parts add up to the site's sums and total, up to its rounding of each value
        # (KLING: 2.32 + 4.81 + 1.95 = 9.08, total 9.10): a mistyped digit does not
        physics = sum(m[k] for k in ("newton", "mass", "fluid", "penetration", "gravity"))
        assert physics == pytest.approx(m["physical_laws"], abs=0.03)
        assert m["framewise"] + m["temporal"] == pytest.approx(m["common_sense"], abs=0.03)
        assert m["instruction"] + m["physical_laws"] + m["common_sense"] == pytest.approx(m["total"], abs=0.03)
    assert {m["name"]: m.get("paper_name") for m in models if m.get("paper_name")} == {
        "Mochi 1-official": "Mochi-official", "Mochi 1": "Mochi"}
    # no I2V/T2V label is added to a name the site gives without one
    assert {m["name"] for m in models if "2V" in m["name"]} == {
        "OpenSoraPlan-T2V", "CogVideoX-T2V", "CogVideoX-I2V", "T2V-Turbo", "OpenSora-T2V", "OpenSora-I2V"}


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
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["index.html", "report.json", "report.md",
                                                                   "scores.png", "thumbs"]
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
    assert board["seed"]["total"] == 8.65
    tie = next(m for m in board["models"] if m["name"] == "Mochi 1-official")
    scores = {k: tie[k] for k in ("instruction", "framewise", "temporal", "newton", "mass", "fluid",
                                  "penetration", "gravity", "total")}
    rows = board_rows(board, "mine", scores, None, comparable=True)
    rank, open_rank = rank_of(rows)
    above = sum(1 for m in board["models"] if m["total"] >= tie["total"])
    assert rank == above + 1
    assert rows[above - 1]["name"] == "Mochi 1-official"
    assert open_rank == 1 + sum(1 for r in rows[:above] if r["type"] == "open")
    assert rank_of(board_rows(board, "mine", {"total": None}, None, True)) == (None, None)
    # a user engine's type is unknown: it gets a rank but no open-source rank
    unknown = board_rows(board, "mine", scores, None, comparable=True, model_type=None)
    assert rank_of(unknown) == (rank, None)
    assert next(r for r in unknown if r["this_run"])["type"] is None


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
    assert report["coverage"]["missing"] == [] and report["coverage"]["subset"]  # 5 of 350
    assert report["scores"]["total"] == pytest.approx(hand_scores([s for s, _ in BENCH])["total"])
    assert "video missing" not in (run_dir / "report" / "report.md").read_text()


def test_a_limited_run_in_one_domain_says_subset_and_is_not_ranked(tmp_path):
    # the case: bench.limit=4, all four in one domain, was "Rank 9 of 9"
    bench = [(f"r{i}", "robotics") for i in range(4)]
    run_dir, _ = make_run(tmp_path, shards=1, missing=(), bench=bench)
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data["bench"]["limit"] = 4
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    run_shard(str(run_dir), 0)
    run_report(str(run_dir))
    report = json.loads((run_dir / "report" / "report.json").read_text())
    cov = report["coverage"]
    assert (cov["judged"], cov["of"], cov["subset"], cov["selection"]) == (4, 350, True, ["bench.limit=4"])
    assert cov["label"] == ("4 of 350 instances (domains: robotics 4); selected with bench.limit=4: "
                            "not comparable with the leaderboard, no rank")
    assert report["rank"] is None and report["open_rank"] is None
    md = (run_dir / "report" / "report.md").read_text()
    assert f"**No rank: {cov['label']}.**" in md and "Rank " not in md
    assert "Rank " not in (run_dir / "report" / "index.html").read_text()


def test_the_subset_label_names_stems_and_domains_selections():
    from wmsub.score.report import coverage_label
    from wmsub.score.run_facts import selection
    cfg = Config()
    assert selection(cfg) == []
    cfg.bench.stems = ["a", "b", "c", "d", "e"]
    cfg.bench.domains = ["robotics", "human"]
    assert selection(cfg) == ["bench.stems=a,b,c,... (5 stems)", "bench.domains=robotics,human"]
    cov = {"judged": 3, "of": 350, "subset": True, "judged_domains": {"robotics": 2, "human": 1},
           "selection": selection(cfg)}
    assert coverage_label(cov) == ("3 of 350 instances (domains: robotics 2, human 1); selected with "
                                   "bench.stems=a,b,c,... (5 stems), bench.domains=robotics,human: "
                                   "not comparable with the leaderboard, no rank")
    assert coverage_label({**cov, "judged": 350, "subset": False}) == \
        "all 350 instances judged: comparable with the leaderboard"


def test_the_explorer_escapes_stems_and_model_names(tmp_path):
    # (prompts and judge answers holding markup: tests/procs/test_explorer_browser.py)
    stem = 'x"><img src=y onerror=alert(1)>'
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"model_name": "<script>alert(2)</script>", "preds": {stem: {}},
                                "accs": {"instruction": [2.0], "physical_laws": [True] * 5,
                                         "common_sense": [True, True]}}))
    write_report(None, path, tmp_path / "rep")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<img src=y" not in page and "<script>alert" not in page
    assert '<span class="stem">x&quot;&gt;&lt;img src=y onerror=alert(1)&gt;</span>' in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
