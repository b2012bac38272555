"""The synthetic benchmark's command line (`python -m wmsub.dev.synthetic`) writes the
official format; run as a user runs it."""
from __future__ import annotations

import json
from pathlib import Path

from wmsub.benchmark.manifest import load_manifest
from wmsub.config import BenchConfig
from wmsub.dev.synthetic import DOMAINS, write_synthetic_benchmark


def _bench(root, **kw) -> BenchConfig:
    return BenchConfig(root=str(root), **kw)


def test_synthetic_cli_writes_official_format(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "syn"
    subprocess.run([sys.executable, "-m", "wmsub.dev.synthetic", str(out), "9"], check=True,
                   cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL)
    entries = json.loads((out / "worldmodelbench.json").read_text())
    assert len(entries) == 9
    assert {e["domain"] for e in entries} == {d for d, _ in DOMAINS}
    assert all(set(e) == {"domain", "subdomain", "text_first_frame", "text_instruction",
                          "first_frame"} for e in entries)
    assert load_manifest(_bench(out)).stems == [Path(e["first_frame"]).stem for e in entries]
    # deterministic for a seed
    again = write_synthetic_benchmark(tmp_path / "again", n=9)
    assert (again / "images" / "synthetic_0004.jpg").read_bytes() == \
        (out / "images" / "synthetic_0004.jpg").read_bytes()
