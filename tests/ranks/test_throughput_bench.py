"""bench.throughput at tiny size on the CPU: it runs `launch.py --local` (submitit's local
executor, two real worker ranks, the real wan modules) and reports from the chunk records."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.throughput import compile_seconds, steady_seconds

REPO = Path(__file__).resolve().parents[2]


def _video(t, size="64x64", steps_s=1.0, rank=0):
    return {"finished_at": t, "size": size, "steps_s": steps_s, "rank": rank}


def test_steady_state_leaves_out_the_first_video_and_each_first_of_a_size():
    videos = [_video(100.0, steps_s=9.0), _video(104.0), _video(108.0),
              _video(120.0, "96x64", steps_s=7.0), _video(125.0, "96x64", steps_s=2.0)]
    # gaps 4, 4 (64x64) and 5 (96x64); 12 s before the first 96x64 is its compile
    assert steady_seconds(videos) == 4.0
    assert steady_seconds(videos[:1]) is None
    assert compile_seconds({0: videos}) == {"64x64": 8.0, "96x64": 5.0}


def test_tiny_dp_run_reports_from_its_chunk_records(tmp_path, synthetic_bench):
    bench = synthetic_bench(4, seed=0)
    out = tmp_path / "throughput.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--bench-root", str(bench),
         "--config", "configs/smoke.yaml", "--parallel", "dp", "--instances", "4",
         "--steps", "2", "--gpus", "2", "--tiny", "--work", str(tmp_path / "work"),
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    run = res["runs"][0]
    assert run["exit"] == 0 and run["states"] == ["finished"] and run["videos"] == 4
    assert res["parallel"] == "dp" and res["sampling_steps"] == 2 and res["attention"] == "math"
    assert "not 50" in res["steps_note"]

    # the figures are the chunk record's, recomputed here from the file itself
    record = json.loads((tmp_path / "work/logs/throughput-0/chunks/0.json").read_text())
    assert {s["rank"] for s in record["starts"]} == {0, 1}
    slowest = max(s["process_age_at_run_s"] + s["ready_after_s"] for s in record["starts"])
    assert res["load_s"] == round(slowest, 2)
    for part in ("read_t5_s", "read_dit_s", "read_vae_s", "engine_s", "imports_s"):
        assert res["load_parts_s"][part] >= 0.0, part
    assert {v["size"] for v in record["videos"]} == {"64x64"}
    for rank in (0, 1):  # each rank its own videos first, then the other's leftovers
        times = sorted(v["finished_at"] for v in record["videos"] if v["rank"] == rank)
        gaps = [b - a for a, b in zip(times, times[1:])]
        expected = round(statistics.median(gaps), 2) if gaps else None
        assert run["steady_s_per_video_by_rank"].get(str(rank)) == expected, (rank, times)
    per_hour = res["videos_per_hour_per_job"]
    assert per_hour > 0 and res["gpu_hours_for_350"] == round(350 / per_hour * 2, 2)
    scaled = res["scaled_to_full_steps"]
    assert scaled["steady_s_per_video_per_rank"] > res["steady_s_per_video_per_rank"]
    assert scaled["videos_per_hour_per_job"] < per_hour
