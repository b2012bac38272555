"""Helpers shared by the tests, bench/ and tools/ (never a test module)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def real_bench_root() -> Path:
    """The real WorldModelBench (json + images): WMSUB_BENCH_ROOT, else ../shared beside
    the checkout. Tests that need it skip cleanly where it is absent."""
    env = os.environ.get("WMSUB_BENCH_ROOT")
    return Path(env) if env else REPO.parent / "shared" / "worldmodelbench"
