"""The sampler on a tiny random checkpoint in the official layout (CPU)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from wmsub.config import OFFICIAL_NEGATIVE_PROMPT, load_config
from wmsub.node.engines import checkpoint, shims
from wmsub.node.engines.parallel import init_distributed
from wmsub.dev.checkpoints import build_tiny_checkpoint
from tests.helpers.engine import make_instance
from wmsub.benchmark.sizes import best_output_size
from wmsub.node.engines.wan_ti2v import load_engine
from wmsub.node.worker import sample_instance

# the official code's CUDA autocast is inert on CPU and says so at every step
pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "frame.jpg"
    rng = np.random.RandomState(3)
    Image.fromarray(rng.randint(0, 256, (90, 130, 3), dtype=np.uint8)).save(path)
    return str(path)


def _cfg(tiny_dir, *extra):
    return load_config(None, [f"model.checkpoint_dir={tiny_dir}", "generate.max_area=64*96",
                              "generate.frame_num=5", "generate.sampling_steps=3",
                              "generate.parallel=none", "generate.device=cpu", *extra])


@pytest.fixture(scope="module")
def engine(tiny_dir):
    cfg = _cfg(tiny_dir)
    return load_engine(cfg, init_distributed(cfg.generate))


def test_tiny_checkpoint_is_official_layout_and_small(tiny_dir):
    wan_cfg = checkpoint.ti2v_config()
    assert checkpoint.check_checkpoint_dir(tiny_dir) == tiny_dir
    assert (tiny_dir / wan_cfg.t5_checkpoint).is_file() and (tiny_dir / wan_cfg.vae_checkpoint).is_file()
    size = sum(f.stat().st_size for f in tiny_dir.rglob("*") if f.is_file())
    assert size < 12 * 2**20
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_dir / wan_cfg.t5_tokenizer), local_files_only=True)
    ids = tok(["a red ball"], add_special_tokens=True).input_ids[0]
    assert ids[-1] == tok.eos_token_id and len(ids) >= 4 and tok.unk_token_id not in ids


def test_engine_uses_the_official_classes(engine):
    assert type(engine.text_encoder) is shims.wan_module("modules.t5").T5EncoderModel
    assert type(engine.vae) is shims.wan_module("modules.vae2_2").Wan2_2_VAE
    assert type(engine.model) is shims.wan_module("modules.model").WanModel
    assert engine.vae.model.z_dim == 48
    assert engine.neg_prompt == OFFICIAL_NEGATIVE_PROMPT  # empty config -> official default


def test_i2v_shape_range_and_determinism(engine, image_path):
    inst = make_instance(0, "frame", "a red ball rolls slowly", image_path)
    video = sample_instance(engine, inst, engine.gen.seed)
    ow, oh = best_output_size(130, 90, 32, 32, 64 * 96)
    assert video.shape == (3, 5, oh, ow) and video.dtype == torch.float32
    assert video.device.type == "cpu" and float(video.min()) >= -1 and float(video.max()) <= 1
    latent = engine.last_latent.clone()
    assert torch.equal(sample_instance(engine, inst, engine.gen.seed), video)
    assert torch.equal(engine.last_latent, latent)
    assert set(engine.last_timings) == {"text_s", "image_s", "steps_s", "s_per_step", "decode_s"}
    # the first latent frame is the encoded image, re-imposed after every step
    assert not torch.equal(latent[:, 0], torch.zeros_like(latent[:, 0]))


def test_prompt_and_seed_change_the_video(engine, image_path):
    base = make_instance(0, "frame", "a red ball rolls slowly", image_path)
    sample_instance(engine, base, engine.gen.seed)
    latent = engine.last_latent.clone()
    sample_instance(engine, make_instance(0, "frame", "a blue car moves quickly", image_path), engine.gen.seed)
    assert not torch.equal(engine.last_latent, latent)
    engine.gen.seed = 7
    try:
        sample_instance(engine, base, engine.gen.seed)
    finally:
        engine.gen.seed = 42
    assert not torch.equal(engine.last_latent, latent)


def test_t2v_shape(tiny_dir):
    cfg = _cfg(tiny_dir, "bench.prompt_mode=t2v")
    eng = load_engine(cfg, init_distributed(cfg.generate))
    video = sample_instance(eng, make_instance(1, "x", "a dog walks on the street", None), eng.gen.seed)
    w, h = eng.t2v_size()
    assert (w, h) == best_output_size(1280, 704, 32, 32, 64 * 96)
    assert video.shape == (3, 5, h, w)


def test_negative_prompt_cache_is_bitwise_neutral(tiny_dir, engine, image_path):
    inst = make_instance(0, "frame", "a cat falls", image_path)
    cached = sample_instance(engine, inst, engine.gen.seed)
    sample_instance(engine, inst, engine.gen.seed)  # second call uses the cache
    cached_again = engine.last_latent.clone()
    cfg = _cfg(tiny_dir, "generate.cache_negative_prompt=false")
    fresh = load_engine(cfg, init_distributed(cfg.generate))
    assert torch.equal(sample_instance(fresh, inst, fresh.gen.seed), cached)
    assert torch.equal(fresh.last_latent, cached_again)
    assert fresh._neg_cache is None


def test_custom_negative_prompt_is_used(tiny_dir, image_path):
    cfg = _cfg(tiny_dir, "generate.negative_prompt=blurry")
    eng = load_engine(cfg, init_distributed(cfg.generate))
    assert eng.neg_prompt == "blurry"


def test_missing_checkpoint_file_is_named(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "Wan2.2_VAE.pth").unlink()
    cfg = _cfg(broken)
    with pytest.raises(checkpoint.CheckpointError, match=r"Wan2\.2_VAE\.pth.*wmsub\.dev\.checkpoints"):
        load_engine(cfg, init_distributed(cfg.generate))


def test_fingerprint_records_engine_settings(engine):
    fp = engine.fingerprint()
    assert fp["engine"] == "wmsub.wan_ti2v" and fp["attention"] == "math"
    assert fp["parallel"] == "none" and fp["vae_dtype"] == "float32" and fp["exact"] is True
    assert fp["torch"] == torch.__version__
    assert fp["gpu"] is None and fp["device"] == "cpu"  # the report's GPU type: a name on CUDA only


def test_fast_path_is_applied_only_when_not_exact(tiny_dir, engine):
    pytest.importorskip("wmsub.node.engines.fast")  # owned by the speed-up helper
    assert engine.speedups == []  # exact: the fast module is never consulted
    cfg = _cfg(tiny_dir, "generate.exact=false", "generate.fast_blocks=true")
    fast_engine = load_engine(cfg, init_distributed(cfg.generate))
    fp = fast_engine.fingerprint()
    assert fp["exact"] is False and fp["speedups"] and fp["speedups"]["fast_blocks"] is True


def test_each_denoising_step_reaches_the_chunk_record_without_changing_the_video(
        engine, image_path, tmp_path):
    from wmsub.state.progress import ChunkProgress
    inst = make_instance(0, "frame", "a red ball rolls slowly", image_path)
    plain = sample_instance(engine, inst, engine.gen.seed)
    progress = ChunkProgress(tmp_path / "chunks" / "0.json", 0, ["frame"])
    progress.update(lambda r: r.update(current="frame"))
    report = progress.step_reporter("frame", interval_s=0.0)
    calls = []
    engine.step_callback = lambda step, steps: (calls.append((step, steps)), report(step, steps))
    try:
        reported = sample_instance(engine, inst, engine.gen.seed)
    finally:
        engine.step_callback = None
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert torch.equal(reported, plain)
    assert (progress.read()["step"], progress.read()["steps"]) == (3, 3)
