"""Our sampler against the official WanTI2V.i2v / t2v code itself, on CPU, bitwise.

WanTI2V.__init__ hard-codes cuda:N, so here the official object is built around the
modules our engine loaded (tools/verify_official.py, `official_sharing_modules`); what
runs is the official generate/i2v/t2v source with the official best_output_size,
masks_like, schedulers and draw order. tools/verify_official.py repeats this on a GPU
at the real size with the official __init__.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wmsub.config import OFFICIAL_NEGATIVE_PROMPT, load_config
from wmsub.node.engines.checkpoint import ti2v_config
from wmsub.node.engines.parallel import init_distributed
from wmsub.dev.checkpoints import build_tiny_checkpoint
from wmsub.node.engines.wan_ti2v import load_engine

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]


def _verify_module():
    spec = importlib.util.spec_from_file_location("wmsub_verify_official",
                                                  REPO / "tools" / "verify_official.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    ckpt = build_tiny_checkpoint(tmp_path_factory.mktemp("official") / "ckpt", seed=2)
    cfg = load_config(None, [f"model.checkpoint_dir={ckpt}", "generate.max_area=96*128",
                             "generate.frame_num=5", "generate.sampling_steps=4",
                             "generate.parallel=none", "generate.device=cpu"])
    engine = load_engine(cfg, init_distributed(cfg.generate))
    verify = _verify_module()
    saved = {k: sys.modules[k] for k in ("wan.textimage2video", "wan.utils.utils") if k in sys.modules}
    official = verify.official_sharing_modules(engine)
    yield verify, engine, official, cfg
    # the official modules were imported with a torchvision stand-in: do not leak them
    for name in ("wan.textimage2video", "wan.utils.utils"):
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def test_config_negative_prompt_is_the_official_one():
    assert OFFICIAL_NEGATIVE_PROMPT == ti2v_config().sample_neg_prompt


@pytest.mark.parametrize("size", [(150, 100), (100, 170)])
def test_i2v_bitwise_equal_to_official(harness, size):
    verify, engine, official, cfg = harness
    rng = np.random.RandomState(size[0])
    img = Image.fromarray(rng.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    video_off, latent_off, _ = verify.run_official(official, img.copy(), cfg.generate)
    video = engine.sample(verify.PROMPT, img.copy(), seed=cfg.generate.seed)
    assert verify.bitwise_equal(engine.last_latent, latent_off)
    assert verify.bitwise_equal(video, video_off)
    assert video.shape[0] == 3 and video.shape[1] == 5


def test_t2v_bitwise_equal_to_official(harness):
    verify, engine, official, cfg = harness
    gen = cfg.generate
    video_off = official.t2v(verify.PROMPT, size=engine.t2v_size(), frame_num=gen.frame_num,
                             shift=gen.shift, sample_solver=gen.sample_solver,
                             sampling_steps=gen.sampling_steps, guide_scale=gen.guide_scale,
                             n_prompt="", seed=gen.seed, offload_model=False)
    video = engine.sample(verify.PROMPT, None, seed=gen.seed)
    assert verify.bitwise_equal(video, video_off.cpu())


def test_dpm_solver_bitwise_equal_to_official(harness):
    verify, engine, official, cfg = harness
    img = Image.fromarray(np.random.RandomState(9).randint(0, 256, (80, 120, 3), dtype=np.uint8))
    engine.gen.sample_solver = "dpm++"
    try:
        video_off, latent_off, _ = verify.run_official(official, img.copy(), engine.gen)
        video = engine.sample(verify.PROMPT, img.copy(), seed=engine.gen.seed)
    finally:
        engine.gen.sample_solver = "unipc"
    assert verify.bitwise_equal(engine.last_latent, latent_off)
    assert verify.bitwise_equal(video, video_off)


def test_bitwise_equal_detects_a_one_ulp_change():
    verify = _verify_module()
    a = torch.randn(10)
    b = a.clone()
    b[3] = torch.nextafter(b[3], torch.tensor(float("inf")))
    assert verify.bitwise_equal(a, a.clone()) and not verify.bitwise_equal(a, b)
