"""The engine interface: what the worker needs of a video model, and how one is loaded.

The worker, store, planner, judge and report know engines only through this Protocol and
their spec (wmsub/engine_specs.py). `model.engine` picks the class: a built-in or a user's
`package.module:Class`.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Protocol, runtime_checkable

from wmsub.engine_specs import EngineSpec, engine_spec, import_object


@runtime_checkable
class Engine(Protocol):
    """A video model loaded once per chunk job, sampling one video per call."""

    spec: ClassVar[EngineSpec]
    """The engine's defaults, size rule and cost (what the login node knows of it)."""
    step_callback: Callable[[int, int], None] | None
    """Called as step_callback(step, steps) after each denoising step (progress); None: not."""
    last_timings: dict
    """Seconds of the last sample's parts: text_s, image_s, steps_s, s_per_step, decode_s."""
    load_timings: dict
    """Seconds of each part of the load."""

    def __init__(self, cfg, ctx) -> None:
        """Load everything once, for this rank of the job (`ctx`: parallel.DistContext)."""

    def sample(self, prompt: str, image, seed: int):
        """One video: (3, F, H, W) float in [-1, 1] (a CPU torch tensor or a numpy array) on
        the writer rank, None on the other ranks. `image` is an RGB PIL image, or None in
        t2v mode. Its size should be spec.i2v_size's (`adopt` checks videos against it)."""

    def fingerprint(self) -> dict:
        """Everything of this loaded engine that changes the numbers (versions, dtypes,
        kernel, parallel mode); recorded with every video."""


def engine_class(cfg) -> type:
    """The class model.engine names (imports its module: torch may load here)."""
    spec = engine_spec(cfg.model.engine)
    return import_object(spec.loader)


def load_engine(cfg, ctx) -> Engine:
    """model.engine's class, loaded for this rank."""
    return engine_class(cfg)(cfg, ctx)
