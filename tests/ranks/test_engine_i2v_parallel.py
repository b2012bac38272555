"""wan22-i2v-a14b's parallel modes on 2 gloo ranks (CPU) against `none`, tiny A14B folder.

As tests/ranks/test_engine_parallel.py for the 5B engine, with the expert switch inside
each mode (3 steps at shift 5: high, high, low):
cfg  bitwise `none` (each rank one of the two batch-1 forwards of the step's expert);
sp   both experts FSDP + Ulysses: within a small relative error of `none`;
dp   each rank a world of one: each instance once, bitwise `none`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.engine import free_port
from wmsub.dev.checkpoints import build_tiny_i2v_checkpoint

REPO = Path(__file__).resolve().parents[2]
SP_LATENT_RTOL = 1e-3
SP_VIDEO_ATOL = 2e-2
EXPERTS_USED = ["high_noise_model", "high_noise_model", "low_noise_model"]

pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]


def rank_main() -> None:
    import warnings

    from tests.helpers.engine import make_instance
    from wmsub.config import load_config
    from wmsub.node.engines.parallel import init_distributed, shutdown
    from wmsub.node.engines.wan_i2v import WanI2VEngine
    from wmsub.node.worker import sample_instance

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    spec = json.loads(os.environ["WMSUB_TEST_SPEC"])
    cfg = load_config(None, ["model.engine=wan22-i2v-a14b", f"model.checkpoint_dir={spec['ckpt']}",
                             "generate.max_area=64*96", "generate.frame_num=5",
                             "generate.sampling_steps=3", "generate.device=cpu",
                             f"generate.parallel={spec['mode']}", "generate.dist_timeout_s=120"])
    ctx = init_distributed(cfg.generate)
    engine = WanI2VEngine(cfg, ctx)
    instances = [make_instance(i, s["stem"], s["prompt"], s["image"])
                 for i, s in enumerate(spec["instances"])]
    if ctx.mode == "dp":
        instances = instances[ctx.group_index::ctx.num_groups]
    result = {"videos": {}, "latents": {}, "experts": {}, "fingerprint": engine.fingerprint()}
    for inst in instances:
        video = sample_instance(engine, inst, engine.gen.seed)
        result["experts"][inst.stem] = list(engine.last_experts)
        if video is not None:
            result["videos"][inst.stem] = video
            result["latents"][inst.stem] = engine.last_latent.cpu()
    torch.save(result, Path(spec["out"]) / f"rank{ctx.rank}.pt")
    shutdown(ctx)


def _run_mode(tmp, ckpt, instances, mode, world):
    out = tmp / mode
    out.mkdir()
    spec = dict(ckpt=str(ckpt), mode=mode, out=str(out), instances=instances)
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, WMSUB_TEST_SPEC=json.dumps(spec), RANK=str(rank),
                   LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if world == 1:
            for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                env.pop(var)
        procs.append(subprocess.Popen(
            [sys.executable, "-c",
             "from tests.ranks.test_engine_i2v_parallel import rank_main; rank_main()"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, f"{mode} rank failed:\n{err[-3000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [torch.load(out / f"rank{i}.pt") for i in range(world)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("a14b-parallel")
    ckpt = build_tiny_i2v_checkpoint(tmp / "ckpt", seed=1)
    rng = np.random.RandomState(5)
    wide, tall = tmp / "wide.png", tmp / "tall.png"
    Image.fromarray(rng.randint(0, 256, (70, 110, 3), dtype=np.uint8)).save(wide)
    Image.fromarray(rng.randint(0, 256, (110, 70, 3), dtype=np.uint8)).save(tall)
    instances = [dict(stem="img.1", prompt="a ball falls on the table", image=str(wide)),
                 dict(stem="img.2", prompt="a robot arm moves", image=str(tall))]
    (baseline,) = _run_mode(tmp, ckpt, instances, "none", 1)
    assert all(e == EXPERTS_USED for e in baseline["experts"].values())
    return tmp, ckpt, instances, baseline


def test_cfg_is_bitwise_equal_to_none(setup):
    tmp, ckpt, instances, base = setup
    r0, r1 = _run_mode(tmp, ckpt, instances, "cfg", 2)
    assert r0["fingerprint"]["parallel"] == "cfg" and r1["videos"] == {}
    assert r1["experts"] == r0["experts"]  # both ranks switch experts at the same step
    for stem, video in r0["videos"].items():
        assert torch.equal(r0["latents"][stem], base["latents"][stem]), stem
        assert torch.equal(video, base["videos"][stem]), stem


def test_sp_matches_none_within_tolerance(setup):
    tmp, ckpt, instances, base = setup
    r0, r1 = _run_mode(tmp, ckpt, instances, "sp", 2)
    assert r0["fingerprint"]["parallel"] == "sp" and r1["videos"] == {}
    assert r0["experts"]["img.1"] == EXPERTS_USED
    for stem, video in r0["videos"].items():
        ref = base["latents"][stem]
        err = float((r0["latents"][stem] - ref).abs().max() / ref.abs().max())
        print(f"a14b sp vs none {stem}: latent rel err {err:.2e}")
        assert err < SP_LATENT_RTOL, (stem, err)
        assert float((video - base["videos"][stem]).abs().max()) < SP_VIDEO_ATOL, stem


def test_dp_makes_each_instance_once_bitwise_as_none(setup):
    tmp, ckpt, instances, base = setup
    r0, r1 = _run_mode(tmp, ckpt, instances, "dp", 2)
    made = list(r0["videos"]) + list(r1["videos"])
    assert sorted(made) == sorted(i["stem"] for i in instances)
    for r in (r0, r1):
        for stem, video in r["videos"].items():
            assert torch.equal(video, base["videos"][stem]), stem
