"""The checkpoint folder's layout (wmsub/node/engines/layout.py): one owner of the file
names and dimensions, read by the loader and by the login node's check without torch."""
from __future__ import annotations

import json
import shutil

import pytest

from wmsub.node.engines import layout


def test_the_layout_names_and_dimensions_are_the_official_configs():
    from wmsub.node.engines.checkpoint import ti2v_config
    official = ti2v_config()
    assert layout.T5_CHECKPOINT == official.t5_checkpoint
    assert layout.T5_TOKENIZER == official.t5_tokenizer
    assert layout.VAE_CHECKPOINT == official.vae_checkpoint
    assert tuple(official.patch_size) == layout.PATCH_SIZE
    for key in ("dim", "ffn_dim", "freq_dim", "num_heads", "num_layers", "text_len"):
        assert layout.OFFICIAL_DIT[key] == official[key], key


def _copy(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    return folder


def test_a_tiny_checkpoint_passes_with_a_warning_that_it_is_not_the_model(tiny_checkpoint):
    problems, warnings = layout.inspect_checkpoint(tiny_checkpoint)
    assert problems == []
    assert [w.key for w in warnings] == ["model.checkpoint_dir"] and "not the official" in warnings[0].what


def test_every_problem_of_a_broken_folder_is_named_at_once(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    weights = ckpt / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # an interrupted download
    t5 = ckpt / layout.T5_CHECKPOINT
    t5.write_bytes(t5.read_bytes()[:5000])
    (ckpt / layout.VAE_CHECKPOINT).unlink()
    (ckpt / layout.T5_TOKENIZER / "tokenizer.json").unlink()
    problems, _ = layout.inspect_checkpoint(ckpt)
    text = "\n".join(map(str, problems))
    assert len(problems) == 4, text
    assert "diffusion_pytorch_model.safetensors is cut short: its header promises" in text
    assert f"{layout.T5_CHECKPOINT} (the T5 encoder) is not a complete torch file" in text
    assert f"{layout.VAE_CHECKPOINT} (the VAE) is missing" in text
    assert "has neither tokenizer.json nor spiece.model" in text
    assert all(p.key == "model.checkpoint_dir" and p.fix for p in problems)
    with pytest.raises(layout.CheckpointError) as e:
        layout.check_checkpoint_dir(ckpt)
    assert "Wan2.2_VAE.pth (the VAE) is missing" in str(e.value)


def test_dimensions_must_be_ti2v_5b_unless_the_folder_says_it_is_tiny(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    (ckpt / layout.DIMS_FILE).unlink()  # now it claims to be the official model
    problems, _ = layout.inspect_checkpoint(ckpt)
    (problem,) = problems
    assert "is not the Wan2.2-TI2V-5B DiT" in problem.what
    assert "dim=64 (TI2V-5B: 3072)" in problem.what and "num_layers=2 (TI2V-5B: 30)" in problem.what


def test_weights_that_disagree_with_config_json_are_refused(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config.update(dim=128, num_layers=3)
    (ckpt / "config.json").write_text(json.dumps(config))
    text = "\n".join(map(str, layout.inspect_checkpoint(ckpt)[0]))
    assert "patch_embedding.weight has shape [64, 48, 1, 2, 2], config.json says [128, 48, 1, 2, 2]" in text
    assert "the weights hold 2 blocks, config.json says num_layers=3" in text


def test_a_sharded_dit_needs_every_shard_its_index_names(tiny_checkpoint, tmp_path):
    ckpt = _copy(tiny_checkpoint, tmp_path)
    (ckpt / layout.DIT_INDEX).write_text(json.dumps({"weight_map": {
        "a": "diffusion_pytorch_model.safetensors", "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}))
    (problem,) = layout.inspect_checkpoint(ckpt)[0]
    assert "diffusion_pytorch_model-00002-of-00002.safetensors (named in" in problem.what


def test_a_missing_folder_is_one_problem_with_the_download_fix(tmp_path):
    (problem,) = layout.inspect_checkpoint(tmp_path / "nope")[0]
    assert problem.key == "model.checkpoint_dir" and "does not exist" in problem.what
    assert "huggingface-cli download Wan-AI/Wan2.2-TI2V-5B" in problem.fix
