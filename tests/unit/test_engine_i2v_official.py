"""The wan22-i2v-a14b engine against the official `wan.WanI2V.generate` source, on CPU.

WanI2V.__init__ hard-codes cuda:N, so the official object is built around the modules our
engine loaded (tools/verify_official_i2v.py `official_i2v_sharing_modules`, lightning=False);
what runs is generate()'s own code: its size rule, mask, noise draw, VAE conditioning,
schedulers, expert switch and guidance. tools/verify_official_i2v.py repeats the comparison
on a GPU at the real size with the official __init__.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wmsub.config import OFFICIAL_NEGATIVE_PROMPT, load_config
from wmsub.dev.checkpoints import build_tiny_i2v_checkpoint
from wmsub.node.engines.parallel import init_distributed

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


def _tool():
    spec = importlib.util.spec_from_file_location("wmsub_verify_official_i2v",
                                                  REPO / "tools" / "verify_official_i2v.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image(w, h, seed):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    from wmsub.node.engines.wan_i2v import WanI2VEngine
    ckpt = build_tiny_i2v_checkpoint(tmp_path_factory.mktemp("a14b") / "ckpt", seed=3)
    # 4 unipc steps at shift 5: t = 999, 937, 833, 625 -> high, high, low, low
    cfg = load_config(None, ["model.engine=wan22-i2v-a14b", f"model.checkpoint_dir={ckpt}",
                             "generate.max_area=64*96", "generate.frame_num=5",
                             "generate.sampling_steps=4", "generate.parallel=none",
                             "generate.device=cpu"])
    engine = WanI2VEngine(cfg, init_distributed(cfg.generate))
    tool = _tool()
    saved = {k: sys.modules[k] for k in ("wan.image2video",) if k in sys.modules}
    official = tool.official_i2v_sharing_modules(engine)
    yield tool, engine, official, cfg, ckpt
    sys.modules.pop("wan.image2video", None)  # imported with a torchvision stand-in
    sys.modules.update(saved)


def test_layout_and_config_are_the_official_ones(harness):
    from wmsub.node.engines import layout_i2v
    _, engine, _, cfg, ckpt = harness
    wan_cfg = engine.wan_cfg
    assert (wan_cfg.dim, wan_cfg.ffn_dim, wan_cfg.num_heads, wan_cfg.num_layers) == (
        layout_i2v.OFFICIAL_DIT["dim"], layout_i2v.OFFICIAL_DIT["ffn_dim"],
        layout_i2v.OFFICIAL_DIT["num_heads"], layout_i2v.OFFICIAL_DIT["num_layers"])
    assert (wan_cfg.high_noise_checkpoint, wan_cfg.low_noise_checkpoint) == layout_i2v.EXPERTS
    assert wan_cfg.vae_checkpoint == layout_i2v.VAE_CHECKPOINT
    assert (wan_cfg.t5_checkpoint, wan_cfg.t5_tokenizer) == (layout_i2v.T5_CHECKPOINT,
                                                             layout_i2v.T5_TOKENIZER)
    assert wan_cfg.sample_neg_prompt == OFFICIAL_NEGATIVE_PROMPT
    # the engine spec's defaults are the official config's
    assert list(wan_cfg.sample_guide_scale) == engine.spec.defaults["generate.guide_scale"]
    assert wan_cfg.sample_shift == engine.spec.defaults["generate.shift"]
    assert wan_cfg.sample_steps == engine.spec.defaults["generate.sampling_steps"]
    assert wan_cfg.sample_fps == engine.spec.defaults["generate.fps"]
    # in_dim 36 = 16 noise + 4 mask + 16 image latent channels
    high = json.loads((ckpt / "high_noise_model" / "config.json").read_text())
    low = json.loads((ckpt / "low_noise_model" / "config.json").read_text())
    assert (high["model_type"], high["in_dim"], high["out_dim"]) == ("i2v", 36, 16) == (
        low["model_type"], low["in_dim"], low["out_dim"])
    assert not torch.equal(engine.experts["high_noise_model"].patch_embedding.weight,
                           engine.experts["low_noise_model"].patch_embedding.weight)


def test_checkpoint_check_names_what_is_wrong(harness, tmp_path):
    import shutil
    from wmsub.node.engines.layout_i2v import inspect_checkpoint
    _, _, _, _, ckpt = harness
    broken = tmp_path / "ckpt"
    shutil.copytree(ckpt, broken)
    shutil.rmtree(broken / "low_noise_model")
    (broken / "Wan2.1_VAE.pth").write_bytes(b"PK\x03\x04 cut")
    config = json.loads((broken / "high_noise_model" / "config.json").read_text())
    (broken / "high_noise_model" / "config.json").write_text(json.dumps({**config, "in_dim": 48}))
    problems, _ = inspect_checkpoint(broken)
    text = "\n".join(p.what for p in problems)
    assert "low_noise_model/ (the low noise model expert) is missing" in text
    assert "Wan2.1 VAE" in text and "not a complete torch file" in text
    assert "in_dim=48 (I2V-A14B: 36)" in text
    assert inspect_checkpoint(tmp_path / "nope")[0][0].what.endswith("does not exist")


@pytest.mark.parametrize("size", [(150, 100), (100, 170)])
def test_bitwise_equal_to_official(harness, size):
    tool, engine, official, cfg, _ = harness
    img = _image(*size, seed=size[0])
    video_off, latent_off, _, used, y_off = tool.run_official_i2v(official, img.copy(),
                                                                  cfg.generate, record=True)
    video = engine.sample(tool.PROMPT, img.copy(), seed=cfg.generate.seed)
    assert tool._verify_official().bitwise_equal(engine.last_latent, latent_off)
    assert tool._verify_official().bitwise_equal(video, video_off)
    assert engine.last_experts == used
    w, h = engine.size_for(*size)
    assert video.shape == (3, 5, h, w)
    # the conditioning y = [mask, VAE latent of the frame + zeros] is the official one
    y, lat_h, lat_w = engine.condition(img.copy())
    assert tool._verify_official().bitwise_equal(y, y_off)
    assert y.shape == (4 + 16, 2, lat_h, lat_w)


def test_expert_switches_where_t_crosses_the_boundary(harness):
    tool, engine, official, cfg, _ = harness
    gen = engine.gen
    img = _image(120, 90, seed=4)
    old = gen.sampling_steps, gen.shift
    gen.sampling_steps, gen.shift = 5, 3.0  # t = 999, 900.2.., 818, ...: crosses at step 2/3
    try:
        _, timesteps = engine._scheduler(gen.sampling_steps, gen.shift)
        rule = ["high_noise_model" if float(t) >= 900 else "low_noise_model" for t in timesteps]
        assert "high_noise_model" in rule and "low_noise_model" in rule
        video_off, latent_off, _, used, _ = tool.run_official_i2v(official, img.copy(), gen,
                                                                  record=True)
        engine.sample(tool.PROMPT, img.copy(), seed=gen.seed)
    finally:
        gen.sampling_steps, gen.shift = old
    assert engine.last_experts == rule == used
    assert tool._verify_official().bitwise_equal(engine.last_latent, latent_off)


def test_guide_pair_is_low_then_high(harness):
    tool, engine, official, cfg, _ = harness
    verify = tool._verify_official()
    img = _image(110, 80, seed=6)
    engine.gen.guide_scale = [2.0, 6.0]  # low-noise 2, high-noise 6
    try:
        engine.sample(tool.PROMPT, img.copy(), seed=engine.gen.seed)
        ours = engine.last_latent.clone()
        _, right, _, _, _ = tool.run_official_i2v(official, img.copy(), engine.gen,
                                                  guide_scale=(2.0, 6.0))
        _, swapped, _, _, _ = tool.run_official_i2v(official, img.copy(), engine.gen,
                                                    guide_scale=(6.0, 2.0))
    finally:
        engine.gen.guide_scale = [3.5, 3.5]
    assert verify.bitwise_equal(ours, right)
    assert not torch.allclose(ours, swapped)
    assert engine.fingerprint()["guide_scale"] == {"low_noise": 3.5, "high_noise": 3.5}


def test_t2v_is_refused_and_fingerprint_names_the_engine(harness):
    _, engine, _, _, _ = harness
    with pytest.raises(ValueError, match="image-to-video only"):
        engine.sample("a ball", None, 42)
    fp = engine.fingerprint()
    assert fp["engine"] == "wan22-i2v-a14b" == engine.spec_name == engine.spec.name
    assert fp["boundary"] == 0.9 and fp["lightning"] is False
    assert set(fp["experts"]) == {"high_noise_model", "low_noise_model"}


def test_fast_path_keeps_q_k_v_unfused(harness):
    """The fast path on each expert, without the fused q/k/v copy (no room beside two fp32
    experts on an H200: out of memory at 480p, measured)."""
    from wmsub.node.engines.wan_i2v import WanI2VEngine
    _, _, _, _, ckpt = harness
    cfg = load_config(None, ["model.engine=wan22-i2v-a14b", f"model.checkpoint_dir={ckpt}",
                             "generate.max_area=64*96", "generate.frame_num=5",
                             "generate.sampling_steps=2", "generate.parallel=none",
                             "generate.device=cpu", "generate.exact=false",
                             "generate.fast_blocks=true", "generate.compile=false",
                             "generate.attention=math"])
    engine = WanI2VEngine(cfg, init_distributed(cfg.generate))
    for name in ("high_noise_model", "low_noise_model"):
        applied = engine.fingerprint()["speedups"][name]
        assert applied["fast_blocks"] and applied["interleaved_rope"], applied
        assert applied["fused_qkv"] is False, applied
        assert all("wmsub_qkv_weight" not in block.self_attn._buffers
                   for block in engine.experts[name].blocks)
    assert engine.sample("a ball", _image(96, 64, 5), 42).shape[1] == 5
