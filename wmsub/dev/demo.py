"""`make demo`: the main job on the embedded default (dev cluster + tiny model).

Builds the tiny checkpoint, picks the real benchmark when it is beside the checkout (or
WMSUB_BENCH_ROOT names it), otherwise writes a small synthetic one in the same format, runs
`python launch.py --config configs/smoke.yaml`, waits, and shows what came out.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from wmsub import CHECKOUT as REPO


def find_real_benchmark() -> Path | None:
    candidates = [os.environ.get("WMSUB_BENCH_ROOT"), REPO.parent / "shared" / "worldmodelbench"]
    for c in candidates:
        if c and (Path(c) / "worldmodelbench.json").is_file():
            return Path(c)
    return None


def main() -> int:
    os.chdir(REPO)
    ckpt = REPO / "checkpoints" / "tiny"
    if not (ckpt / "config.json").exists():
        print(f"building the tiny random-weight checkpoint in {ckpt} ...", flush=True)
        subprocess.run([sys.executable, "-m", "wmsub.dev.checkpoints", str(ckpt)], check=True)
    bench = find_real_benchmark()
    if bench is None:
        bench = REPO / "data" / "smoke-bench"
        if not (bench / "worldmodelbench.json").exists():
            from wmsub.dev.synthetic import write_synthetic_benchmark
            write_synthetic_benchmark(bench, n=6)
        print(f"real benchmark not found: using a synthetic one in {bench}")
    else:
        print(f"using the real benchmark in {bench} (first 6 instances)")
    executor = "slurm" if shutil.which("sbatch") else "local"
    cmd = [sys.executable, "launch.py", "--config", "configs/smoke.yaml", f"bench.root={bench}",
           f"slurm.executor={executor}", "--wait"]
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    out = REPO / "outputs" / "smoke"
    videos = sorted(out.glob("*.mp4"))
    print(f"\n{len(videos)} video(s) in {out}:")
    for v in videos:
        print(f"  {v.name}  ({v.stat().st_size} bytes)")
    print("\nstatus table:")
    subprocess.run([sys.executable, "launch.py", "status"])
    print("\nwhere things are:\n"
          f"  videos        {out}/<stem>.mp4\n"
          f"  sidecars      {out}/.wmsub/records/<stem>.json\n"
          f"  run folder    logs/$(cat logs/LATEST)/ (config, plan, jobs, chunk progress, submitit logs)\n"
          f"  checkpoint    {ckpt}\n"
          f"  dev cluster   bash slurm/devcluster.sh status")
    return rc


if __name__ == "__main__":
    sys.exit(main())
