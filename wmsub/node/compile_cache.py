"""Where torch.compile keeps what it compiled: a folder on the shared filesystem
(`generate.compile_cache_dir`), so every chunk and job after the first one reuses the
kernels of each output size instead of compiling them again (~15 s per size on an H200).

Inductor's caches (its FX graph and AOTAutograd caches, and the Triton binaries it builds,
which it keeps under the same folder) are keyed by the graph, the torch version and the
device, and written atomically: chunks on several nodes can share one folder. Dynamo's
tracing is not cached; it is what a warm start still pays (~4-5 s per size).
No torch here: the folder must be set before torch compiles anything.
"""
from __future__ import annotations

import os
from pathlib import Path

INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"


def compile_cache_dir(cfg) -> Path:
    """The folder `cfg` asks for: generate.compile_cache_dir, by default
    `<run.logs_dir>/compile-cache` (shared by every run in that logs folder). A site whose
    shared filesystem misbehaves under it can name a node-local folder instead."""
    value = cfg.generate.compile_cache_dir.strip()
    return Path(value) if value else Path(cfg.run.logs_dir) / "compile-cache"


def use_compile_cache(cfg, environ=os.environ) -> Path:
    """Point inductor's caches at the configured folder (created if missing); returns it."""
    folder = compile_cache_dir(cfg)
    inductor = folder / "inductor"
    inductor.mkdir(parents=True, exist_ok=True)
    environ[INDUCTOR_ENV] = str(inductor)
    # on by default in recent torch; said here so an older default cannot switch it off
    environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    return folder
