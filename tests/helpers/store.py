"""An output store and frames for the store's tests (tests/unit/test_store.py,
tests/procs/test_store.py)."""
from __future__ import annotations

import numpy as np

from wmsub.state.store import OutputStore

FRAMES = 5
SETTINGS = {"generate.seed": 42, "generate.frame_num": FRAMES, "model.name": "Wan2.2-TI2V-5B"}


def make_store(out, fingerprint="fp-one", settings=None, **kw) -> OutputStore:
    return OutputStore(out, fingerprint, settings or SETTINGS, FRAMES, **kw)


def frames(n=FRAMES, w=64, h=48, shade=0) -> np.ndarray:
    f = np.zeros((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        f[i] = ((30 * i + shade) % 256, 120, 200 - 20 * i)
    return f
