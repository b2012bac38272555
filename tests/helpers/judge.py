"""Judge-side test helpers: a judge repo holding the stand-in judge, run folders with
shards and real mp4s, and the stand-in's verdicts recomputed by hand."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from wmsub.config import Config
from wmsub.dev.standin_judge import make_standin_checkpoint
from wmsub.score.judge import write_shards_file

# The one stand-in allowed: the external VILA judge cannot run here (see its docstring).
# It lives in wmsub/dev/ because `make demo` runs it too.
from wmsub.dev.standin_judge import STANDIN_JUDGE as STANDIN  # noqa: E402
# stems with dots, as in the real benchmark; two domains
BENCH = [("000000007259.2", "robotics"), ("clip_a", "robotics"), ("000000001069.10", "natural"),
         ("clip-b", "natural"), ("clip_c", "human")]


def make_mp4(path: Path, frames: int = 5, size: int = 64, shade: int = 0) -> Path:
    import imageio.v2 as imageio
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, format="FFMPEG", fps=8, codec="libx264", macro_block_size=16) as w:
        for i in range(frames):
            frame = np.full((size, size, 3), (shade + 40 * i) % 256, np.uint8)
            frame[:, : size // 2, 0] = 255
            w.append_data(frame)
    return path


def make_judge_checkpoint(folder: Path) -> Path:
    """The STAND-IN judge's weights folder (wmsub.dev.standin_judge), as `make demo` makes it."""
    return make_standin_checkpoint(folder)


def make_judge_repo(root: Path, bench=BENCH, instructions: dict | None = None,
                    images: bool = False) -> Path:
    """A folder laid out like the WorldModelBench repo root, holding the stand-in;
    `instructions` replaces some stems' text_instruction; `images` writes the first
    frames (a red-and-grey JPEG each) under images/."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(STANDIN, root / "evaluation.py")
    instructions = instructions or {}
    entries = [{"domain": d, "subdomain": "x", "text_first_frame": "a scene",
                "text_instruction": instructions.get(s, f"do something with {s}"),
                "first_frame": f"images/{s}.jpg"}
               for s, d in bench]
    (root / "worldmodelbench.json").write_text(json.dumps(entries))
    if images:
        from PIL import Image
        (root / "images").mkdir(exist_ok=True)
        for i, (s, _) in enumerate(bench):
            frame = np.full((48, 64, 3), 60 + 30 * i, np.uint8)
            frame[:, :32, 0] = 255
            Image.fromarray(frame).save(root / "images" / f"{s}.jpg")
    return root


def make_run(tmp: Path, shards: int = 2, missing=("clip_a",), bench=BENCH, cot: bool = True,
             instructions: dict | None = None, images: bool = False):
    """Run folder with config.yaml and judge/shards.json; videos for all but `missing`."""
    repo = make_judge_repo(tmp / "wmb_repo", bench, instructions, images)
    cfg = Config()
    cfg.output.dir = str(tmp / "outputs")
    cfg.judge.python = sys.executable
    cfg.judge.repo = str(repo)
    cfg.judge.checkpoint = str(make_judge_checkpoint(tmp / "vila-ewm-qwen2-1.5b"))
    cfg.judge.cot = cot
    cfg.judge.shards = shards
    cfg.bench.root = str(repo)
    run_dir = tmp / "logs" / "run1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    for i, (stem, _) in enumerate(bench):
        if stem not in missing:
            make_mp4(Path(cfg.output.dir) / f"{stem}.mp4", shade=30 * i)
    write_shards_file(run_dir, cfg, [s for s, _ in bench], dict(bench))
    return run_dir, cfg


def standin_verdict(stem: str):
    """The stand-in's answers, recomputed here from its documented rule:
    instruction = sha256[0] % 4; physics j passes when bit j of sha256[1] is set;
    common sense j passes when bit j of sha256[2] is set."""
    d = hashlib.sha256(stem.encode()).digest()
    return d[0] % 4, [d[1] >> j & 1 for j in range(5)], [d[2] >> j & 1 for j in range(2)]


def hand_scores(stems) -> dict:
    v = [standin_verdict(s) for s in stems]
    n = len(v)
    out = {"instruction": sum(x[0] for x in v) / n}
    for j, name in enumerate(("newton", "mass", "fluid", "penetration", "gravity")):
        out[name] = sum(x[1][j] for x in v) / n
    out["framewise"] = sum(x[2][0] for x in v) / n
    out["temporal"] = sum(x[2][1] for x in v) / n
    out["physical_laws"] = out["newton"] + out["mass"] + out["fluid"] + out["penetration"] + out["gravity"]
    out["common_sense"] = out["framewise"] + out["temporal"]
    out["total"] = out["instruction"] + out["physical_laws"] + out["common_sense"]
    return out


def calls(repo: Path) -> list:
    log = repo / "standin_calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
