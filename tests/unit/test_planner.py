"""Planner: official output sizes, cost-balanced deterministic chunks, the real 350."""
import ast
import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import real_bench_root

from wmsub.config import load_config
from wmsub.benchmark.manifest import Instance, ManifestError
from wmsub.benchmark.sizes import best_output_size, video_tokens
from wmsub.login.planner import build_plan, estimate_seconds, split_balanced
from wmsub.login.views import format_plan
from wmsub.state.store import OutputStore

from wmsub.state.store import SettingsMismatch





HAS_REAL = (real_bench_root() / "worldmodelbench.json").is_file()

# GUIDE section 3: output sizes of the 350 WorldModelBench first frames at max_area 704*1280
GUIDE_SIZES = {(1248, 704): 214, (1088, 800): 114, (960, 928): 14, (704, 1248): 5,
               (1152, 768): 2, (1312, 672): 1}


def official_best_output_size():
    """The function itself, read from the installed wan package (whose __init__ needs
    torchvision and CUDA, so it is parsed rather than imported)."""
    spec = importlib.util.find_spec("wan")
    source = Path(spec.submodule_search_locations[0], "utils", "utils.py").read_text()
    func = next(n for n in ast.parse(source).body
                if isinstance(n, ast.FunctionDef) and n.name == "best_output_size")
    namespace = {}
    exec(compile(ast.Module(body=[func], type_ignores=[]), "wan/utils/utils.py", "exec"), namespace)
    return namespace["best_output_size"]


def test_best_output_size_equals_official_on_many_shapes():
    official = official_best_output_size()
    rng = np.random.default_rng(0)
    shapes = [(1920, 1080), (640, 480), (406, 720), (512, 512), (1920, 960), (362, 360)]
    shapes += [tuple(int(v) for v in rng.integers(64, 4000, size=2)) for _ in range(400)]
    for area in (704 * 1280, 480 * 832, 256 * 256):
        for w, h in shapes:
            assert best_output_size(w, h, 32, 32, area) == official(w, h, 32, 32, area), (w, h, area)


def test_best_output_size_known_values():
    assert best_output_size(1920, 1080, 32, 32, 704 * 1280) == (1248, 704)
    assert best_output_size(640, 480, 32, 32, 704 * 1280) == (1088, 800)
    assert best_output_size(406, 720, 32, 32, 704 * 1280) == (704, 1248)
    assert video_tokens(1280, 704, 81) == 18480


@pytest.mark.skipif(not HAS_REAL, reason="real WorldModelBench data not present")
def test_real_350_plan_matches_guide_and_covers_every_stem(tmp_path):
    cfg = load_config(None, [f"bench.root={real_bench_root()}", f"output.dir={tmp_path / 'out'}"])
    plan = build_plan(cfg)
    sizes = Counter(best_output_size(*i.image_size, 32, 32, 704 * 1280) for i in plan.instances)
    assert sizes == GUIDE_SIZES
    data = plan.record().to_json()
    assert (data["instances"], data["done"], data["pending"], data["failed"]) == (350, 0, 350, 0)
    stems = [s for c in data["chunks"] for s in c["stems"]]
    assert sorted(stems) == sorted(i.stem for i in plan.instances) and len(set(stems)) == 350
    assert json.loads(json.dumps(data)) == data
    # ~8.5 h at 90 s per video over 120-minute chunks: 5 chunks of 70
    assert len(data["chunks"]) == 5 and {len(c["stems"]) for c in data["chunks"]} == {70}


def _cfg(bench_root, out, *extra):
    return load_config(None, [f"bench.root={bench_root}", f"output.dir={out}",
                              "generate.frame_num=5", *extra])


def test_chunks_cover_every_stem_once_deterministic_and_balanced(synthetic_bench, tmp_path):
    root = synthetic_bench(23)
    cfg = _cfg(root, tmp_path / "out", "plan.chunks=4")
    plan = build_plan(cfg)
    assert [c.index for c in plan.chunks] == [0, 1, 2, 3]
    stems = [s for c in plan.chunks for s in c.stems]
    assert sorted(stems) == sorted(i.stem for i in plan.instances) and len(stems) == 23
    for c in plan.chunks:  # manifest order inside a chunk
        assert [i.index for i in c.instances] == sorted(i.index for i in c.instances)
    assert build_plan(cfg).record().to_json() == plan.record().to_json()
    costs = [estimate_seconds(i, cfg) for i in plan.instances]
    loads = [c.est_s for c in plan.chunks]
    assert max(loads) - min(loads) <= max(costs) + 1e-9
    assert sum(loads) == pytest.approx(sum(costs))


def _instances(n):
    return [Instance(index=i, stem=f"s{i:02d}", prompt="p", image="x.jpg", domain="d",
                     subdomain="s", image_size=None) for i in range(n)]


def test_lpt_matches_hand_computation():
    # costs 7..1 into 3 chunks, dearest first to the least loaded (ties: lowest index):
    # 7->0, 6->1, 5->2, 4->2, 3->1, 2->0, 1->0  =>  loads 10, 9, 9
    instances = _instances(7)
    costs = {f"s{i:02d}": float(c) for i, c in enumerate([7, 6, 5, 4, 3, 2, 1])}
    chunks = split_balanced(instances, costs, 3)
    assert [(c.est_s, c.stems) for c in chunks] == [
        (10.0, ["s00", "s05", "s06"]), (9.0, ["s01", "s04"]), (9.0, ["s02", "s03"])]
    # the input order does not matter
    assert [c.stems for c in split_balanced(instances[::-1], costs, 3)] == [c.stems for c in chunks]


def test_lpt_balances_mixed_costs():
    instances = _instances(30)
    costs = {inst.stem: float(c) for inst, c in zip(instances, [100, 1, 1, 1, 50, 50] * 5)}
    chunks = split_balanced(instances, costs, 3)
    loads = [c.est_s for c in chunks]
    assert sum(loads) == sum(costs.values())
    assert max(loads) - min(loads) <= max(costs.values())
    assert sorted(s for c in chunks for s in c.stems) == sorted(costs)


def test_chunk_count_from_target_minutes_and_seconds_per_video(synthetic_bench, tmp_path):
    root = synthetic_bench(12)
    # t2v: every video is 1280x704, the anchor size; 81 frames and 50 steps: 100 s each
    cfg = load_config(None, [f"bench.root={root}", f"output.dir={tmp_path / 'out'}",
                             "bench.prompt_mode=t2v", "plan.seconds_per_video=100",
                             "plan.target_chunk_minutes=5"])
    plan = build_plan(cfg)
    assert [c.est_s for c in plan.chunks] == [300.0] * 4
    # half the steps, half the cost: 600 s in total, two chunks
    cfg.generate.sampling_steps = 25
    cfg.output.dir = str(tmp_path / "out-25-steps")  # other settings, other folder
    assert len(build_plan(cfg).chunks) == 2
    cfg.plan.chunks = 50  # more chunks than instances: one per instance
    assert len(build_plan(cfg).chunks) == 12


def test_plan_skips_done_and_failed_and_formats(synthetic_bench, tmp_path):
    root = synthetic_bench(6)
    cfg = _cfg(root, tmp_path / "out", "plan.chunks=2", "slurm.partition=gpu-low",
               "slurm.gpus_per_job=4", "slurm.mem_gb=128", "slurm.time_min=90")
    store = OutputStore.for_config(cfg)
    first, second = build_plan(cfg).instances[:2]
    store.write_video(first.stem, np.zeros((5, 32, 48, 3), np.uint8), 24, {"seed": 42})
    for _ in range(cfg.output.max_attempts):
        store.record_failure(second.stem, "CUDA error: out of memory", "tb")
    plan = build_plan(cfg)
    data = plan.record().to_json()
    assert (data["instances"], data["done"], data["pending"], data["failed"]) == (6, 1, 4, 1)
    chunk_stems = {s for c in data["chunks"] for s in c["stems"]}
    assert first.stem not in chunk_stems and second.stem not in chunk_stems
    text = format_plan(plan, cfg)
    for fragment in ("6 instances", "1 done, 4 pending, 1 failed", "4 GPU(s)", "8 CPUs",
                     "128 GB", "90 min", "partition gpu-low", "chunk   0", "out of memory"):
        assert fragment in text, fragment
    retried = build_plan(cfg, retry_failed=True).record().to_json()
    assert retried["pending"] == 5 and retried["failed"] == 0


def test_bad_benchmark_fails_before_touching_the_output_folder(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "worldmodelbench.json").write_text('[{"domain": "human"}]')
    cfg = _cfg(bench, tmp_path / "out")
    with pytest.raises(ManifestError, match="missing key 'first_frame'"):
        build_plan(cfg)
    assert not (tmp_path / "out").exists()


def _one_video(cfg, stem):
    frames = np.zeros((cfg.generate.frame_num, 16, 16, 3), dtype=np.uint8)
    OutputStore.for_config(cfg).write_video(stem, frames, cfg.generate.fps, {})


def test_changed_settings_are_refused_by_the_plan(synthetic_bench, tmp_path):
    root = synthetic_bench(3)
    first = build_plan(_cfg(root, tmp_path / "out"))
    _one_video(_cfg(root, tmp_path / "out"), first.pending[0])
    with pytest.raises(SettingsMismatch, match="generate.sampling_steps: 50 -> 10"):
        build_plan(_cfg(root, tmp_path / "out", "generate.sampling_steps=10"))
    with pytest.raises(SettingsMismatch, match="generate.sampling_steps: 50 -> 10"):
        build_plan(_cfg(root, tmp_path / "out", "generate.sampling_steps=10"), preview=True)
    ok = build_plan(_cfg(root, tmp_path / "out", "generate.sampling_steps=10",
                         "output.allow_settings_mismatch=true"))
    assert any("generate.sampling_steps" in n for n in ok.notes)


def test_a_folder_that_holds_no_video_takes_new_settings(synthetic_bench, tmp_path):
    """Settings pinned by a run that made nothing (sbatch refused it, or it was cancelled
    before its first video) protect nothing: the next run's settings replace them."""
    root = synthetic_bench(3)
    build_plan(_cfg(root, tmp_path / "out"))
    plan = build_plan(_cfg(root, tmp_path / "out", "generate.sampling_steps=10"))
    assert any("the folder holds no video yet" in n and "generate.sampling_steps" in n
               for n in plan.notes), plan.notes
    saved = json.loads((tmp_path / "out/.wmsub/settings.json").read_text())
    assert saved["settings"]["generate.sampling_steps"] == 10 and len(saved["previous"]) == 1
    # a compute node never takes a folder from another run this way
    node = OutputStore.for_config(_cfg(root, tmp_path / "out", "generate.sampling_steps=20"),
                                  kernel="math")
    with pytest.raises(SettingsMismatch):
        node.check_settings()


def test_a_preview_plan_changes_nothing_in_the_folder(synthetic_bench, tmp_path):
    """plan, check and --dry-run: no settings pinned, no file quarantined, no temp removed."""
    root = synthetic_bench(3)
    out = tmp_path / "out"
    stems = build_plan(_cfg(root, tmp_path / "probe"), preview=True).pending
    assert not (tmp_path / "probe").exists()
    out.mkdir()
    (out / f"{stems[0]}.mp4").write_bytes(b"not an mp4")  # no sidecar: a run quarantines it
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    plan = build_plan(_cfg(root, out), preview=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [s for s, _ in plan.quarantined] == [stems[0]] and stems[0] in plan.pending
    assert any("will be quarantined at the run" in n for n in plan.notes), plan.notes
    assert "1 to quarantine at the run" in format_plan(plan, _cfg(root, out))
    # then build_plan for a run does both
    real = build_plan(_cfg(root, out))
    assert (out / ".wmsub/settings.json").is_file() and not (out / f"{stems[0]}.mp4").exists()
    assert "1 quarantined now" in format_plan(real, _cfg(root, out))
