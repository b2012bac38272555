"""The fast T5 load (meta device + assigned weights) equals the official constructor."""
import torch

from wmsub.node.engines.checkpoint import load_text_encoder, read_dims
from wmsub.node.engines.shims import wan_module
from wmsub.dev.checkpoints import build_tiny_checkpoint


def test_meta_built_t5_equals_the_official_constructor(tmp_path):
    ckpt = build_tiny_checkpoint(tmp_path / "tiny", seed=3)
    wan_cfg = wan_module("configs.wan_ti2v_5B").ti2v_5B
    dims = read_dims(ckpt)
    ours = load_text_encoder(ckpt, wan_cfg, dims)

    t5 = wan_module("modules.t5")
    original = t5.umt5_xxl
    t5.umt5_xxl = lambda **kw: original(**{**kw, **dims.get("t5", {})})
    try:
        official = t5.T5EncoderModel(
            text_len=wan_cfg.text_len, dtype=wan_cfg.t5_dtype, device=torch.device("cpu"),
            checkpoint_path=str(ckpt / wan_cfg.t5_checkpoint),
            tokenizer_path=str(ckpt / wan_cfg.t5_tokenizer))
    finally:
        t5.umt5_xxl = original
    a, b = ours.model.state_dict(), official.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    assert not any(p.requires_grad for p in ours.model.parameters())
    prompt = ["a ball rolls off the table"]
    for x, y in zip(ours(prompt, torch.device("cpu")), official(prompt, torch.device("cpu"))):
        assert torch.equal(x, y)
