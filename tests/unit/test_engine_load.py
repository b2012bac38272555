"""The chunk-start load: DiT read straight onto the device from safetensors, T5 memory-mapped,
the three read concurrently. The result must equal the official loads bit for bit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from wmsub.config import load_config
from wmsub.dev.checkpoints import TINY_DIT, build_tiny_checkpoint
from wmsub.node.engines.checkpoint import CheckpointError, dit_weight_files, load_dit
from wmsub.node.engines.parallel import init_distributed
from wmsub.node.engines.shims import wan_module
from wmsub.node.engines.wan_ti2v import load_engine

pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return build_tiny_checkpoint(tmp_path_factory.mktemp("load") / "ckpt", seed=4)


def _assert_same_module(ours, official):
    a, b = ours.state_dict(), official.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    assert torch.equal(ours.freqs, official.freqs) and ours.freqs.dtype == official.freqs.dtype
    assert dict(ours.config) == {k: v for k, v in official.config.items() if k != "_name_or_path"}
    assert not any(p.is_meta for p in ours.parameters())


def test_dit_read_from_safetensors_equals_from_pretrained(ckpt):
    wan_model = wan_module("modules.model").WanModel
    official = wan_model.from_pretrained(str(ckpt), low_cpu_mem_usage=False)
    _assert_same_module(load_dit(ckpt), official)


@pytest.mark.parametrize("dtype, shard", [(torch.bfloat16, "10MB"), (torch.float32, "50KB")])
def test_bf16_and_sharded_checkpoints_load_as_from_pretrained_does(tmp_path, dtype, shard):
    wan_model = wan_module("modules.model").WanModel
    torch.manual_seed(0)
    model = wan_model(**TINY_DIT).to(dtype)
    model.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size=shard)
    files = dit_weight_files(tmp_path)
    assert (len(files) > 1) == (shard == "50KB")
    ours = load_dit(tmp_path)
    official = wan_model.from_pretrained(str(tmp_path), low_cpu_mem_usage=False)
    assert next(ours.parameters()).dtype == torch.float32  # cast as load_state_dict copies
    _assert_same_module(ours, official)


def test_dit_weights_that_do_not_match_the_config_are_named(tmp_path, ckpt):
    for f in ckpt.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_layers"] = 3  # one block more than the weights hold
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"do not match .*config.json: missing \['blocks.2"):
        load_dit(tmp_path)


def test_concurrent_load_gives_bitwise_the_video_of_the_official_loads(ckpt):
    cfg = load_config(None, [f"model.checkpoint_dir={ckpt}", "generate.max_area=64*96",
                             "generate.frame_num=5", "generate.sampling_steps=3",
                             "generate.parallel=none", "generate.device=cpu"])
    engine = load_engine(cfg, init_distributed(cfg.generate))
    parts = engine.load_timings
    for name in ("setup_s", "build_dit_s", "read_t5_s", "read_vae_s", "read_dit_s",
                 "read_all_s", "shard_t5_s", "place_dit_s", "load_s"):
        assert isinstance(parts[name], float) and parts[name] >= 0.0, name
    assert parts["read_all_s"] <= parts["load_s"]
    image = Image.fromarray(np.random.RandomState(3).randint(0, 256, (70, 110, 3), dtype=np.uint8))
    video = engine.sample("a ball falls", image.copy(), seed=42)
    latent = engine.last_latent.clone()

    # the official loads: WanModel.from_pretrained, and the T5 file read without mmap
    wan_model = wan_module("modules.model").WanModel
    official_dit = wan_model.from_pretrained(str(ckpt), low_cpu_mem_usage=False)
    engine.model = official_dit.eval().requires_grad_(False)
    t5_file = ckpt / engine.wan_cfg.t5_checkpoint
    engine.text_encoder.model.load_state_dict(torch.load(t5_file, map_location="cpu"))
    official_video = engine.sample("a ball falls", image.copy(), seed=42)
    assert torch.equal(engine.last_latent, latent)
    assert torch.equal(official_video, video)


def test_the_chunk_start_logs_no_accelerate_warning(ckpt):
    """diffusers' from_pretrained warns "`accelerate` was not found" on every load without
    accelerate (it filled each chunk log); the chunk start never calls it."""
    import importlib.util
    import logging
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("diffusers")  # diffusers' modules log under it
    logger.addHandler(handler)
    try:
        cfg = load_config(None, [f"model.checkpoint_dir={ckpt}", "generate.parallel=none",
                                 "generate.device=cpu"])
        load_engine(cfg, init_distributed(cfg.generate))
        ours = [r.getMessage() for r in records]
        wan_module("modules.model").WanModel.from_pretrained(str(ckpt))  # the control
        plain = [r.getMessage() for r in records[len(ours):]]
    finally:
        logger.removeHandler(handler)
    assert not [m for m in ours if "accelerate" in m], ours
    if importlib.util.find_spec("accelerate") is None:
        assert [m for m in plain if "accelerate" in m], "the control: from_pretrained warns"
