"""Every valid first frame plans and generates, or is refused at validation with a clear
message: elongated (300x40, 40x300), tiny (2x2, 1x64) and huge (6000x4000) frames, through
the real manifest, planner, CLI and the tiny engine (real wan modules)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wmsub.cli import main as cli_main
from wmsub.config import load_config
from wmsub.benchmark.manifest import ManifestError
from wmsub.login.planner import build_plan, output_size

pytestmark = [pytest.mark.filterwarnings("ignore:CUDA is not available"),
              pytest.mark.filterwarnings("ignore:`torch.cuda.amp.autocast")]

FRAMES = {"wide_300x40": (300, 40), "tall_40x300": (40, 300), "tiny_2x2": (2, 2),
          "thin_1x64": (1, 64), "huge_6000x4000": (6000, 4000)}


def _bench(root: Path) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    for stem, (w, h) in FRAMES.items():
        path = root / "images" / f"{stem}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        # a smooth gradient plus a little noise keeps the 6000x4000 JPEG small and quick
        y, x = np.mgrid[0:h, 0:w]
        pixels = np.stack([x * 255 // max(w, 1), y * 255 // max(h, 1), (x + y) % 256], -1)
        pixels = (pixels + rng.integers(0, 8, pixels.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
        entries.append({"domain": "human", "subdomain": "s", "text_first_frame": stem,
                        "text_instruction": f"the {stem} scene moves", "first_frame": f"images/{stem}.jpg"})
    (root / "worldmodelbench.json").write_text(json.dumps(entries))
    return root


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """The five frames' benchmark, made once for the module (the 6000x4000 frame takes a few
    seconds); the tests only read it."""
    return _bench(tmp_path_factory.mktemp("extreme") / "bench")


def _overrides(bench, out, area, *extra):
    return [f"bench.root={bench}", f"output.dir={out}", f"generate.max_area={area}",
            "generate.frame_num=5", *extra]


def test_too_elongated_frames_are_refused_at_validation_all_at_once(tmp_path, capsys, bench):
    cfg = load_config(None, _overrides(bench, tmp_path / "out", "64*64"))
    with pytest.raises(ManifestError) as refused:
        build_plan(cfg)
    text = str(refused.value)
    # 300x40 and 40x300 (7.5:1) and 1x64 have no 32-aligned size of their aspect in 64*64
    for stem in ("wide_300x40", "tall_40x300", "thin_1x64"):
        assert f"stem '{stem}'" in text and "too elongated" in text, text
    for stem in ("tiny_2x2", "huge_6000x4000"):
        assert stem not in text, text
    assert "fix:" in text and "generate.max_area" in text
    assert not (tmp_path / "out").exists()  # refused before the output folder is touched

    # the command line says the same, with no traceback
    rc = cli_main(["plan", *_overrides(bench, tmp_path / "out", "64*64")])
    err = capsys.readouterr().err
    assert rc == 1 and "benchmark validation failed; nothing was submitted" in err, err
    assert "Traceback" not in err and "ZeroDivisionError" not in err and "thin_1x64" in err


def test_every_extreme_frame_plans_and_generates_where_the_area_allows(tmp_path, tiny_checkpoint, bench):
    from wmsub.node.engines.parallel import init_distributed
    from wmsub.node.engines.wan_ti2v import load_engine
    from wmsub.node.worker import sample_instance

    # at 256*256 every frame has a size: 1x64 becomes a 32x2048 strip
    cfg = load_config(None, _overrides(bench, tmp_path / "out", "256*256", "generate.parallel=none",
                                       "generate.device=cpu", "generate.sampling_steps=2",
                                       f"model.checkpoint_dir={tiny_checkpoint}"))
    plan = build_plan(cfg)
    assert sorted(plan.pending) == sorted(FRAMES) and not plan.notes, plan.notes
    sizes = {i.stem: output_size(i, cfg) for i in plan.instances}
    assert sizes["thin_1x64"][0] == 32 and sizes["wide_300x40"][0] > sizes["wide_300x40"][1]
    engine = load_engine(cfg, init_distributed(cfg.generate))
    for inst in plan.instances:
        video = sample_instance(engine, inst, cfg.generate.seed)
        width, height = sizes[inst.stem]
        assert tuple(video.shape) == (3, 5, height, width), (inst.stem, tuple(video.shape))
        assert bool(video.isfinite().all()), inst.stem
