"""`launch.py adopt` on a folder made the old way: our own tiny generation outputs (real wan
modules) minus their sidecars, one of them truncated and one of the wrong size."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wmsub.cli import main as cli_main
from wmsub.config import load_config
from wmsub.login.monitor import collect_status
from wmsub.login.planner import build_plan, output_size
from wmsub.login.views import render_status
from wmsub.score.report import generation_stats
from wmsub.state import video_io
from wmsub.state.runs import create_run
from wmsub.state.store import OutputStore

pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]

REPO = Path(__file__).resolve().parents[2]


def _overrides(bench, ckpt, out, tmp):
    return [f"bench.root={bench}", f"model.checkpoint_dir={ckpt}", f"output.dir={out}",
            f"run.logs_dir={tmp / 'logs'}", "generate.parallel=none", "generate.sampling_steps=2",
            "bench.limit=5"]


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory, tiny_checkpoint):
    """What the original script leaves: `<stem>.mp4` only. Five videos of ours with their
    `.wmsub` removed; one cut in half, one replaced by a video of another size; plus an mp4
    of a stem the benchmark does not have."""
    from wmsub.dev.synthetic import write_synthetic_benchmark
    from wmsub.node.engines.parallel import init_distributed
    from wmsub.node.engines.wan_ti2v import load_engine
    from wmsub.node.worker import sample_instance

    tmp = tmp_path_factory.mktemp("adopt")
    bench = write_synthetic_benchmark(tmp / "bench", n=5, seed=21)
    out = tmp / "made"
    cfg = load_config(str(REPO / "configs" / "smoke.yaml"), _overrides(bench, tiny_checkpoint, out, tmp))
    store = OutputStore.for_config(cfg)
    engine = load_engine(cfg, init_distributed(cfg.generate))
    plan = build_plan(cfg)
    for inst in plan.instances:
        video = sample_instance(engine, inst, cfg.generate.seed)
        store.write_video(inst.stem, video_io.frames_to_uint8(video), cfg.generate.fps)
    shutil.rmtree(out / ".wmsub")  # the old script writes no sidecars
    stems = [i.stem for i in plan.instances]
    truncated, wrong = stems[1], stems[3]
    data = (out / f"{truncated}.mp4").read_bytes()
    (out / f"{truncated}.mp4").write_bytes(data[: len(data) // 2])
    w, h = output_size(plan.instances[3], cfg)
    frames = np.full((cfg.generate.frame_num, h + 32, w, 3), 90, np.uint8)
    video_io.write_mp4(out / f"{wrong}.mp4", frames, cfg.generate.fps)
    video_io.write_mp4(out / "not_in_the_benchmark.mp4", frames, cfg.generate.fps)
    return {"tmp": tmp, "bench": bench, "out": out, "stems": stems, "truncated": truncated,
            "wrong": wrong, "good": [s for s in stems if s not in (truncated, wrong)],
            "ckpt": tiny_checkpoint}


def _copy(old_folder, name) -> Path:
    target = old_folder["tmp"] / name
    shutil.copytree(old_folder["out"], target)
    return target


def _cli(*args) -> int:
    return cli_main([*map(str, args)])


def test_without_adopt_plan_quarantines_the_old_folder(old_folder):
    out = _copy(old_folder, "plan-only")
    cfg = load_config(str(REPO / "configs" / "smoke.yaml"),
                      _overrides(old_folder["bench"], old_folder["ckpt"], out, old_folder["tmp"]))
    plan = build_plan(cfg)
    assert plan.done == [] and len(plan.quarantined) == 5  # nothing adopted implicitly


def test_adopt_in_place_then_plan_counts_the_adopted_as_done(old_folder, capsys):
    out = _copy(old_folder, "in-place")
    over = _overrides(old_folder["bench"], old_folder["ckpt"], out, old_folder["tmp"])
    assert _cli("adopt", "--config", "configs/smoke.yaml", *over) == 0
    text = capsys.readouterr().out
    assert "6 mp4(s) without a sidecar" not in text  # the foreign stem is skipped, not a candidate
    assert "5 mp4(s) without a sidecar" in text and "3 adopted, 2 quarantined, 1 skipped" in text, text
    assert f"quarantined {old_folder['truncated']}: incomplete mp4" in text, text
    assert f"quarantined {old_folder['wrong']}:" in text and "expected" in text and "output size" in text
    assert "skipped not_in_the_benchmark.mp4: not an instance" in text

    cfg = load_config(str(REPO / "configs" / "smoke.yaml"), over)
    for stem in old_folder["good"]:
        record = json.loads((out / ".wmsub" / "records" / f"{stem}.json").read_text())
        assert record["adopted"] is True and record["settings_assumed"] is True
        assert record["provenance"]["from"] == str((out / f"{stem}.mp4").resolve())
        assert record["provenance"]["origin"] == "output.dir"
        assert record["checks"]["frames"] == cfg.generate.frame_num
        assert "full decode" in record["checks"]["passed"]
        assert record["settings"]["generate.sampling_steps"] == 2
    quarantine = out / ".wmsub" / "quarantine"
    whys = [json.loads(p.read_text()) for p in quarantine.glob("*.why.json")]
    assert sorted(w["stem"] for w in whys) == sorted([old_folder["truncated"], old_folder["wrong"]])
    assert (out / "not_in_the_benchmark.mp4").exists()  # not ours to judge: left alone

    plan = build_plan(cfg)
    assert sorted(plan.done) == sorted(old_folder["good"])
    assert sorted(plan.pending) == sorted([old_folder["truncated"], old_folder["wrong"]])
    # a compute node, whatever kernel it resolves, sees them as done too (settings assumed)
    node_store = OutputStore.for_config(cfg, kernel="math")
    node_store.check_settings()
    assert all(node_store.is_done(s, verify="decode") for s in old_folder["good"])

    # status and the report say how many of the run's videos were adopted
    run = create_run(cfg, "configs/smoke.yaml")
    run.save_plan(plan.record())
    status = collect_status(run.path, use_sacct=False)
    assert status["totals"]["adopted"] == 3 and status["totals"]["done"] == 3
    assert "adopted: 3 of the done videos were made elsewhere" in render_status(status)
    assert generation_stats(run.path, cfg)["adopted"] == 3

    # adopting again finds nothing new
    assert _cli("adopt", "--config", "configs/smoke.yaml", *over) == 0
    assert "0 mp4(s) without a sidecar" in capsys.readouterr().out


def test_adopt_from_a_folder_copies_valid_videos_and_leaves_the_source_alone(old_folder, capsys):
    source = _copy(old_folder, "source")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.glob("*.mp4")}
    out = old_folder["tmp"] / "fresh-out"
    over = _overrides(old_folder["bench"], old_folder["ckpt"], out, old_folder["tmp"])
    assert _cli("adopt", "--config", "configs/smoke.yaml", *over, "--from", source) == 0
    text = capsys.readouterr().out
    assert "3 adopted, 2 quarantined, 1 skipped" in text, text
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in source.glob("*.mp4")} == before
    assert sorted(p.stem for p in out.glob("*.mp4")) == sorted(old_folder["good"])
    for stem in old_folder["good"]:
        record = json.loads((out / ".wmsub" / "records" / f"{stem}.json").read_text())
        assert record["provenance"]["from"] == str((source / f"{stem}.mp4").resolve())
        assert record["sha256"] == before[f"{stem}.mp4"]
    copies = sorted(p.name.split(".")[0] for p in (out / ".wmsub" / "quarantine").glob("*.mp4"))
    assert copies == sorted([old_folder["truncated"], old_folder["wrong"]])
    cfg = load_config(str(REPO / "configs" / "smoke.yaml"), over)
    assert sorted(build_plan(cfg).done) == sorted(old_folder["good"])


def test_adopt_refuses_a_folder_of_other_settings(old_folder, capsys):
    out = _copy(old_folder, "other-settings")
    over = _overrides(old_folder["bench"], old_folder["ckpt"], out, old_folder["tmp"])
    assert _cli("adopt", "--config", "configs/smoke.yaml", *over) == 0
    capsys.readouterr()
    assert _cli("adopt", "--config", "configs/smoke.yaml", *over, "generate.seed=7") == 1
    err = capsys.readouterr().err
    assert "nothing was adopted" in err and "generate.seed: 42 -> 7" in err, err


def test_help_names_adopt(capsys):
    assert _cli("--help") == 0
    out = capsys.readouterr().out
    assert "launch.py adopt [-h] [--config CONFIG] [--from DIR] [key=value ...]" in out, out


def test_each_check_of_adopt_can_refuse_a_video(tmp_path):
    """Frame count, size and frame rate are each checked (the folder above plants only a
    truncated and a wrong-size file); an empty file is incomplete, not a crash."""
    from wmsub.login.adopt import Expected, check_video
    frames = np.full((5, 64, 96, 3), 90, np.uint8)
    expected = Expected(frames=5, width=96, height=64, fps=24)
    probe, problems = check_video(video_io.write_mp4(tmp_path / "good.mp4", frames, 24), expected)
    assert problems == [] and (probe["frames"], probe["width"], probe["height"]) == (5, 96, 64), probe
    longer = video_io.write_mp4(tmp_path / "longer.mp4", np.concatenate([frames, frames]), 24)
    assert check_video(longer, expected)[1] == ["10 frames, expected 5 (generate.frame_num)"]
    slower = video_io.write_mp4(tmp_path / "slower.mp4", frames, 16)
    assert check_video(slower, expected)[1] == ["16 fps, expected 24 (generate.fps)"]
    wider = video_io.write_mp4(tmp_path / "wider.mp4", np.full((5, 64, 128, 3), 90, np.uint8), 24)
    (problem,) = check_video(wider, expected)[1]
    assert problem.startswith("128x64, expected 96x64"), problem
    (tmp_path / "empty.mp4").write_bytes(b"")
    (problem,) = check_video(tmp_path / "empty.mp4", expected)[1]
    assert problem.startswith("incomplete mp4"), problem


def test_a_video_whose_payload_is_damaged_does_not_decode(tmp_path):
    """Structure intact, some bytes of the picture data flipped: ffmpeg alone conceals the
    damage and exits 0; `adopt` (probe_mp4 with -xerror) calls it what it is."""
    from wmsub.login.adopt import Expected, check_video
    frames = np.random.default_rng(0).integers(0, 256, (9, 96, 128, 3), dtype=np.uint8)
    path = video_io.write_mp4(tmp_path / "damaged.mp4", frames, 24)
    expected = Expected(frames=9, width=128, height=96, fps=24)
    assert check_video(path, expected)[1] == []
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 3, 2 * len(data) // 3, 997):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not video_io.mp4_structure_problem(path)  # only a full decode can tell
    (problem,) = check_video(path, expected)[1]
    assert problem.startswith("does not decode") and "error while decoding" in problem, problem
