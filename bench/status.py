"""How fast `launch.py status` answers for a run of 350 instances in 35 chunks (prints JSON).

Needs a Slurm cluster (the dev cluster: `bash slurm/devcluster.sh up`): the 35 chunks are the
tasks of one held array, so squeue and sacct are really asked.

    python -m bench.status [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.monitor import build_350_in_35, sbatch, scancel_quietly  # noqa: E402
from wmsub.login import monitor, views  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.status", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    master = sbatch("--hold", "--array=0-34", "-o", "/dev/null", "--wrap", "true")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_folder, now, _ = build_350_in_35(Path(tmp), master)
            collect, total = [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                status = monitor.collect_status(run_folder.path, now=now)
                collect.append(time.perf_counter() - t0)
                views.render_status(status)
                total.append(time.perf_counter() - t0)
    finally:
        scancel_quietly(master)
    print(json.dumps({"benchmark": "status_350_instances_35_chunks", "repeat": args.repeat,
                      "collect_s_median": round(statistics.median(collect), 3),
                      "collect_and_render_s_median": round(statistics.median(total), 3),
                      "collect_and_render_s_max": round(max(total), 3), "target_s": 2.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
