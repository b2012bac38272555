"""The fingerprint covers everything that changes the numbers: the parallel mode (cfg and dp
share none's, sp differs) and the attention kernel as the node resolved it (one per folder),
and folders of the earlier fingerprint format stay readable."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wmsub.config import (legacy_settings_fingerprint, load_config, parallel_numerics,
                          settings_fingerprint)
from wmsub.login.planner import build_plan
from wmsub.state.store import OutputStore, SettingsMismatch

FRAMES = np.zeros((5, 32, 48, 3), np.uint8)


def _cfg(*extra):
    return load_config("configs/wan22_ti2v_5b.yaml", list(extra))


def test_parallel_mode_in_the_fingerprint_cfg_and_dp_share_none():
    fp = {mode: settings_fingerprint(_cfg(f"generate.parallel={mode}"))[0]
          for mode in ("none", "cfg", "dp", "sp")}
    assert fp["cfg"] == fp["dp"] == fp["none"] != fp["sp"]
    assert settings_fingerprint(_cfg("slurm.gpus_per_job=4"))[0] != fp["sp"]  # sp:4 is not sp:2
    assert settings_fingerprint(_cfg("slurm.gpus_per_job=1"))[0] == fp["none"]  # sp alone runs as none
    assert settings_fingerprint(_cfg())[1]["generate.parallel"] == "sp:2"
    assert parallel_numerics("cfg", 2) == parallel_numerics("dp", 8) == "none"


def test_the_seed_config_pins_the_official_kernel():
    assert _cfg().generate.attention == "official" and _cfg().generate.exact is True


def test_node_kernel_follows_the_seed_under_exact_unless_named_explicitly():
    from wmsub.node.kernel import KernelRefused, node_kernel
    # no flash_attn here: the seed's kernel cannot run on "cuda", and auto may not drift
    for attention in ("official", "auto"):
        with pytest.raises(KernelRefused, match="generate.attention=cudnn") as refused:
            node_kernel(_cfg(f"generate.attention={attention}").generate, "cuda")
        assert "flash-attn" in str(refused.value)
    assert node_kernel(_cfg("generate.attention=cudnn").generate, "cuda") == "cudnn"  # explicit
    assert node_kernel(_cfg("generate.exact=false", "generate.attention=auto").generate, "cuda") == "cudnn"
    assert node_kernel(_cfg().generate, "cpu") == "math"  # one kernel family on CPU
    with pytest.raises(KernelRefused, match="flash_attn is not installed"):
        node_kernel(_cfg("generate.attention=flash2").generate, "cuda")


def test_one_kernel_per_folder_and_the_login_reads_it(tmp_path):
    cfg = _cfg(f"output.dir={tmp_path}", "generate.frame_num=5")
    login = OutputStore.for_config(cfg)
    login.check_settings()  # a fresh folder: nobody knows the kernel yet
    assert login.kernel is None
    node = OutputStore.for_config(cfg, kernel="cudnn")
    node.write_video("a", FRAMES, 24)
    assert json.loads((tmp_path / ".wmsub" / "kernel.json").read_text())["kernel"] == "cudnn"
    assert node.fingerprint != node.settings_fingerprint  # the kernel is folded in

    login = OutputStore.for_config(cfg)
    assert login.scan(["a"]).done == ["a"] and login.kernel == "cudnn"
    assert login.fingerprint == node.fingerprint

    other = OutputStore.for_config(cfg, kernel="flash")
    with pytest.raises(SettingsMismatch, match=r"generate.attention \(as resolved on the node\): "
                                               r"'cudnn' -> 'flash'") as refused:
        other.check_settings()
    assert "generate.attention=cudnn" in str(refused.value)  # the fix names the folder's kernel
    cfg.output.allow_settings_mismatch = True
    allowed = OutputStore.for_config(cfg, kernel="flash")
    assert any("cudnn -> flash" in n for n in allowed.check_settings())
    assert allowed.check("a")[0] == "other_settings"  # a cudnn video never counts for flash


def _legacy_folder(cfg, out, engines: dict) -> None:
    """A folder as the store wrote it before this change: the legacy fingerprint and
    settings, and each sidecar's engine record naming its kernel and parallel mode."""
    legacy_settings = dict(settings_fingerprint(cfg)[1])
    legacy_settings.pop("generate.parallel")
    old = OutputStore(out, legacy_settings_fingerprint(cfg), legacy_settings, cfg.generate.frame_num)
    for stem, (kernel, parallel, ranks) in engines.items():
        old.write_video(stem, FRAMES, 24, {"engine": {"attention": kernel, "parallel": parallel,
                                                      "group_size": ranks}})


def test_a_folder_of_the_earlier_fingerprint_stays_readable(tmp_path, synthetic_bench):
    bench = synthetic_bench(4)
    cfg = _cfg(f"output.dir={tmp_path / 'out'}", f"bench.root={bench}", "generate.frame_num=5")
    from wmsub.benchmark.manifest import load_manifest
    stems = load_manifest(cfg.bench).stems
    _legacy_folder(cfg, tmp_path / "out", {stems[0]: ("cudnn", "sp", 2), stems[1]: ("cudnn", "sp", 2),
                                           stems[2]: ("flash", "sp", 2), stems[3]: ("cudnn", "dp", 1)})
    plan = build_plan(cfg)  # upgraded in place: no SettingsMismatch
    assert sorted(plan.done) == sorted(stems[:2]), plan.notes
    assert sorted(plan.pending) == sorted(stems[2:])  # another kernel; another parallel mode
    assert any("pinned from 3 existing video record" in n for n in plan.notes), plan.notes
    assert any("mixes attention kernels" in n and "flash (1)" in n for n in plan.notes), plan.notes
    settings = json.loads((tmp_path / "out" / ".wmsub" / "settings.json").read_text())
    assert settings["fingerprint"] == settings_fingerprint(cfg)[0] and settings["previous"]
    node = OutputStore.for_config(cfg, kernel="cudnn")
    node.check_settings()
    assert node.is_done(stems[0]) and not node.is_done(stems[2])
    with pytest.raises(SettingsMismatch, match="'cudnn' -> 'flash2'"):
        OutputStore.for_config(cfg, kernel="flash2").check_settings()


def test_a_chunk_whose_kernel_differs_from_the_folder_is_refused_before_generating(
        tmp_path, synthetic_bench, tiny_checkpoint):
    from wmsub.node.worker import ChunkWorker
    from wmsub.state.runs import create_run
    cfg = load_config("configs/smoke.yaml", [
        f"bench.root={synthetic_bench(2)}", f"model.checkpoint_dir={tiny_checkpoint}",
        f"output.dir={tmp_path / 'out'}", f"run.logs_dir={tmp_path / 'logs'}",
        "generate.parallel=none", "slurm.gpus_per_job=1"])
    OutputStore.for_config(cfg, kernel="cudnn").check_settings()  # made on GPUs with cuDNN
    plan = build_plan(cfg)
    run = create_run(cfg, None)
    run.save_plan(plan.record())
    with pytest.raises(SettingsMismatch):
        ChunkWorker(str(run.path), 0, list(plan.chunks[0].instances))()  # CPU: math
    record = json.loads(run.chunk_record(0).read_text())
    assert record["state"] == "failed" and "refused before generating" in record["error"]
    assert "'cudnn' -> 'math'" in record["error"] and not list((tmp_path / "out").glob("*.mp4"))


def test_a_read_only_check_on_the_login_side_reads_the_pinned_kernel(tmp_path):
    cfg = _cfg(f"output.dir={tmp_path}", "generate.frame_num=5")
    OutputStore.for_config(cfg, kernel="cudnn").write_video("a", FRAMES, 24)
    login = OutputStore.for_config(cfg)  # no check_settings: status and tests check directly
    assert login.is_done("a") and login.kernel == "cudnn"


def test_plan_notes_an_explicit_kernel_under_exact_and_the_pinned_one(tmp_path, synthetic_bench):
    over = [f"output.dir={tmp_path}", f"bench.root={synthetic_bench(2)}", "generate.frame_num=5"]
    assert not any("attention" in n for n in build_plan(_cfg(*over)).notes)  # official: the seed's
    OutputStore.for_config(_cfg(*over), kernel="cudnn").check_settings()
    notes = build_plan(_cfg(*over, "generate.attention=cudnn")).notes
    assert any("generate.attention=cudnn under generate.exact=true: not the seed's" in n for n in notes)
    assert any("use the cudnn attention kernel (pinned" in n for n in notes), notes
