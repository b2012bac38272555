"""`make demo`: the whole pipeline on the embedded default (dev cluster + tiny model).

Builds the tiny checkpoint, picks the real benchmark when it is beside the checkout (or
WMSUB_BENCH_ROOT names it), otherwise writes a small synthetic one in the same format, runs
`python launch.py --config configs/smoke.yaml` with the judge stage enabled, waits for the
generation, judge and report jobs, and ends with the path of the HTML explorer.

The judge is the STAND-IN for the external VILA judge (wmsub/dev/standin_judge/): the real
one needs a GPU and the VILA environment (docs/JUDGE.md). Its verdicts come from a hash of
each stem, so the demo's scores show the pipeline, not the model.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from wmsub import CHECKOUT as REPO
from wmsub.dev.standin_judge import STANDIN_JUDGE, make_standin_checkpoint
from wmsub.state.runs import RunFolder, read_latest

JOBS_TIMEOUT_S = 900


def find_real_benchmark() -> Path | None:
    candidates = [os.environ.get("WMSUB_BENCH_ROOT"), REPO.parent / "shared" / "worldmodelbench"]
    for c in candidates:
        if c and (Path(c) / "worldmodelbench.json").is_file():
            return Path(c)
    return None


def standin_judge_repo(bench: Path) -> Path:
    """A folder laid out like the WorldModelBench repo root: the stand-in evaluation.py
    and the benchmark's worldmodelbench.json (the judge walks it)."""
    repo = REPO / "data" / "standin-judge-repo"
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copy(STANDIN_JUDGE, repo / "evaluation.py")
    shutil.copy(bench / "worldmodelbench.json", repo / "worldmodelbench.json")
    return repo


def judge_overrides(repo: Path) -> list[str]:
    return ["judge.enabled=true", f"judge.python={sys.executable}", f"judge.repo={repo}",
            # the stand-in loads no weights; the setup check still wants a model-shaped folder
            f"judge.checkpoint={make_standin_checkpoint(repo / 'no-weights-standin')}",
            "judge.shards=2", "judge.partition=low", "judge.cpus=1", "judge.mem_gb=1"]


def latest_run() -> Path | None:
    name = (read_latest(REPO / "logs") or "").strip()
    return REPO / "logs" / name if name else None


def wait_for_stages(run: Path, stages=("judge", "report")) -> None:
    """Until the run's judge and report jobs have left the queue."""
    ids = [str(e["job_id"]) for e in RunFolder(run).jobs() if e.get("stage") in stages]
    deadline = time.time() + JOBS_TIMEOUT_S
    print(f"waiting for the judge and report jobs {', '.join(ids)} ...", flush=True)
    while ids and time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i"],
                             capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(3)


def run_and_show(cmd: list[str]) -> tuple[int, str]:
    """Run `cmd`, showing its output as it comes; (exit code, the output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    return proc.wait(), "".join(lines)


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
    slurm = shutil.which("sbatch") is not None
    repo = standin_judge_repo(bench)
    judge = judge_overrides(repo) if slurm else []
    print("judge: the STAND-IN for the external VILA judge (wmsub/dev/standin_judge/): its verdicts "
          "come from a hash of each stem, so the scores are not real" if slurm else
          "judge: skipped (the judge stage runs as Slurm jobs; no sbatch here)")
    cmd = [sys.executable, "launch.py", "--config", "configs/smoke.yaml", f"bench.root={bench}",
           f"slurm.executor={'slurm' if slurm else 'local'}", *judge, "--wait"]
    print("$", " ".join(cmd), flush=True)
    rc, output = run_and_show(cmd)
    run = latest_run()
    if slurm and run is not None and "nothing to generate" in output:
        # every video exists from an earlier demo: judge and report the latest run again
        again = [sys.executable, "launch.py", "judge", "--run", run.name, *judge[1:]]
        print("$", " ".join(again), flush=True)
        rc = subprocess.run(again).returncode
    if slurm and run is not None:
        wait_for_stages(run)
    out = REPO / "outputs" / "smoke"
    videos = sorted(out.glob("*.mp4"))
    print(f"\n{len(videos)} video(s) in {out}:")
    for v in videos:
        print(f"  {v.name}  ({v.stat().st_size} bytes)")
    print("\nstatus table:")
    subprocess.run([sys.executable, "launch.py", "status"])
    report = RunFolder(run).report_dir if run is not None else None
    explorer = report / "index.html" if report is not None else None
    print("\nwhere things are:\n"
          f"  videos        {out}/<stem>.mp4\n"
          f"  sidecars      {out}/.wmsub/records/<stem>.json\n"
          f"  run folder    {run} (config, plan, jobs, chunk progress, judge shards, report)\n"
          f"  report        {report / 'report.md' if report else '-'} (judged by the STAND-IN judge)\n"
          f"  checkpoint    {ckpt}\n"
          f"  dev cluster   bash slurm/devcluster.sh status")
    if explorer is not None and explorer.is_file():
        print(f"\nHTML explorer (open it in a browser; scores from the STAND-IN judge):\n{explorer}")
    else:
        print("\nno HTML explorer: the report did not run (see the status table above)")
        rc = rc or 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
