"""The engines wmsub runs, as the login node sees them: names, defaults, size rule, cost.

`model.engine` names one: a built-in (`wan22-ti2v-5b`, `wan22-i2v-a14b`) or a user's own
engine class by import path, `package.module:Class`. An engine is two things:

- its spec (`EngineSpec`, here, no torch): the config defaults it declares, the size of the
  video it makes from a first frame, its tokens per forward and its cost for the planner,
  and the torch-free check of its checkpoint folder;
- its class (wmsub/node/engines/base.py `Engine`, on the compute node): loads once per
  chunk and samples videos.

A user's class carries its spec as the class attribute `spec`; its module must import
without torch at the top (import torch inside the methods), because the login node reads
the spec. docs/ENGINES.md shows one.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping

from wmsub.benchmark import sizes

DEFAULT_ENGINE = "wan22-ti2v-5b"


class EngineSpecError(ValueError):
    """model.engine names no engine, or a user engine whose spec cannot be read."""


@dataclass(frozen=True)
class EngineSpec:
    """What the login node knows of one engine (the planner, the config, preflight)."""

    name: str
    """The value of model.engine; it goes into the settings fingerprint."""
    loader: str
    """`module:Class` of the engine class, imported on the compute node only."""
    i2v_size: Callable[[int, int, int], tuple[int, int]]
    """(frame width, frame height, generate.max_area) -> (video width, height); raises
    benchmark.sizes.SizeError where no size fits."""
    tokens: Callable[[int, int, int], int]
    """(width, height, frame_num) -> DiT tokens of one forward: the planner's cost unit."""
    reference_video: tuple[int, int, int, int]
    """(width, height, frames, steps) of the video that plan.seconds_per_video times."""
    defaults: Mapping[str, object] = field(default_factory=dict)
    """Config keys -> the engine's official values, used where the config sets none."""
    t2v_size: Callable[[int], tuple[int, int]] | None = None
    """generate.max_area -> (width, height) of a text-only video; None: image-to-video only."""
    checkpoint_check: str = ""
    """`module:function`, (checkpoint_dir) -> (problems, warnings) of wmsub.problems.Problem,
    torch-free; "": none. A `dit_config(checkpoint_dir) -> dict | None` in the same module
    lets preflight check that sp's ranks divide the attention heads."""
    gpu_memory_gb: float = 0.0
    """GPU memory one GPU holding the whole model needs, T5 resident (a measured peak; the
    on-node check compares it with each rank's free memory); 0: unknown, not checked."""
    config: str = ""
    """The config file (relative to the checkout) `launch.py` reads when `model.engine=` is
    given without --config; "": none, the engine's defaults alone."""
    guide_pair: bool = False
    """Whether generate.guide_scale may be a [low-noise, high-noise] pair (two experts)."""
    description: str = ""
    """One line for `launch.py check` and the docs."""

    @property
    def reference_tokens(self) -> int:
        w, h, frames, _ = self.reference_video
        return self.tokens(w, h, frames)

    def seconds(self, width: int, height: int, frames: int, steps: int,
                seconds_per_reference: float) -> float:
        """The planner's cost model: tokens x steps x the cost of one token-step, anchored at
        `seconds_per_reference` for the reference video (attention makes the true cost a
        little superlinear in tokens; the anchor keeps the common size right)."""
        per_token_step = seconds_per_reference / (self.reference_tokens * self.reference_video[3])
        return self.tokens(width, height, frames) * steps * per_token_step


WAN22_TI2V_5B = EngineSpec(
    name="wan22-ti2v-5b",
    loader="wmsub.node.engines.wan_ti2v:WanTI2VEngine",
    i2v_size=sizes.i2v_size,
    t2v_size=sizes.t2v_size,
    tokens=sizes.video_tokens,
    reference_video=(1280, 704, 81, 50),
    defaults={"model.name": "Wan2.2-TI2V-5B", "model.checkpoint_dir": "checkpoints/Wan2.2-TI2V-5B",
              "generate.max_area": 704 * 1280, "generate.frame_num": 81,
              "generate.sampling_steps": 50, "generate.sample_solver": "unipc",
              "generate.shift": 5.0, "generate.guide_scale": 5.0, "generate.fps": 24,
              "plan.seconds_per_video": 90.0},
    checkpoint_check="wmsub.node.engines.layout:inspect_checkpoint",
    gpu_memory_gb=52.7,  # peak at 704x1280x81 on an H100, official and ours alike (docs/ENGINE.md)
    config="configs/wan22_ti2v_5b.yaml",
    description="Wan2.2-TI2V-5B (wan.WanTI2V): the seed's model, text+image to video",
)

WAN22_I2V_A14B = EngineSpec(
    name="wan22-i2v-a14b",
    loader="wmsub.node.engines.wan_i2v:WanI2VEngine",
    i2v_size=sizes.wan_i2v_size,
    tokens=sizes.wan_i2v_tokens,
    reference_video=(1280, 720, 81, 40),
    defaults={"model.name": "Wan2.2-I2V-A14B", "model.checkpoint_dir": "checkpoints/Wan2.2-I2V-A14B",
              "generate.max_area": 720 * 1280, "generate.frame_num": 81,
              "generate.sampling_steps": 40, "generate.sample_solver": "unipc",
              "generate.shift": 5.0, "generate.guide_scale": [3.5, 3.5], "generate.fps": 16,
              # measured: 720p, sp on 2 H200s, 40 x 14.91 s/step + 13 s (docs/A14B.md)
              "plan.seconds_per_video": 610.0},
    checkpoint_check="wmsub.node.engines.layout_i2v:inspect_checkpoint",
    # 121.3 GiB peak at 480p on an H200 with T5 offloaded (docs/A14B.md), plus T5's 11.4 GB;
    # a lower bound: exact 720p ran out of memory on one H200 (139.8 GiB), measured
    gpu_memory_gb=141.6,
    config="configs/wan22_i2v_a14b.yaml",
    guide_pair=True,
    description="Wan2.2-I2V-A14B (wan.WanI2V): two 14B experts, image to video",
)

BUILT_IN = {s.name: s for s in (WAN22_TI2V_5B, WAN22_I2V_A14B)}


def import_object(path: str, key: str = "model.engine"):
    """`package.module:Name` -> the object, or EngineSpecError saying what failed."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise EngineSpecError(f"{key}={path!r}: expected a built-in engine "
                              f"({', '.join(BUILT_IN)}) or an import path package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EngineSpecError(
            f"{key}={path!r}: cannot import {module_name} here ({e}) — fix: put its package on "
            "PYTHONPATH (or pip install it) in this environment, and import heavy packages "
            "such as torch inside the engine's methods, not at the module's top") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        import difflib
        names = [n for n in vars(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1)
        raise EngineSpecError(f"{key}={path!r}: {module_name} ({getattr(module, '__file__', '?')}) has "
                              f"no {attr} — fix: name one of its classes after the colon"
                              + (f"; did you mean {module_name}:{close[0]}?" if close else "")) from None


def engine_spec(name: str) -> EngineSpec:
    """The spec model.engine names: a built-in, or the `spec` of a user's class."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if ":" not in name:
        import difflib
        close = difflib.get_close_matches(name, list(BUILT_IN), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise EngineSpecError(f"model.engine={name!r} is not a built-in engine{hint} (built-in: "
                              f"{', '.join(BUILT_IN)}; a user engine is package.module:Class)")
    cls = import_object(name)
    spec = getattr(cls, "spec", None)
    if not isinstance(spec, EngineSpec):
        raise EngineSpecError(f"model.engine={name!r}: the class has no `spec` EngineSpec "
                              "attribute — fix: give it spec = EngineSpec(...) (docs/ENGINES.md)")
    if spec.name != name or spec.loader != name:
        raise EngineSpecError(f"model.engine={name!r}: its spec says name={spec.name!r}, "
                              f"loader={spec.loader!r} — fix: set both to {name!r}")
    return spec
