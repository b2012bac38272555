"""`launch.py judge` on the dev cluster: a run whose judge environment was broken is
judged again after the fix, only where needed, and the report tells the judge's failure
from a missing video. The judge program is the STAND-IN (wmsub/dev/standin_judge/);
the videos are real mp4s made by tests/helpers/judge.make_run (no generation needed)."""
from __future__ import annotations

import json
import re
import sys

import pytest
import yaml

from tests.helpers.e2e import launch, squeue_ids, wait_until
from tests.helpers.judge import BENCH, hand_scores, make_run
from wmsub.state.runs import PlanRecord, RunFolder

pytestmark = pytest.mark.usefixtures("slurm_cluster")
JUDGED = [s for s, _ in BENCH if s != "clip_a"]


def job_ids(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^\s+(judge|report) job (\d+)", stdout, re.M))


def wait_for_jobs(ids: dict[str, str]) -> None:
    wait_until(lambda: not any(squeue_ids(j) for j in ids.values()), 600, f"jobs {ids}")


def test_judge_after_fixing_a_broken_judge_env(tmp_path):
    run_dir, cfg = make_run(tmp_path, shards=2, missing=("clip_a",))
    RunFolder(run_dir).save_plan(PlanRecord(stems=[s for s, _ in BENCH], domains=dict(BENCH)))
    # A judge env that passes the login node's import check (`python -c ...`) but whose
    # VILA install is missing where the judge runs, as with an env that differs between the
    # login and the compute nodes: the judge job fails on the node.
    broken = tmp_path / "broken-python"
    broken.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} "$@"\n'
                      "echo \"ModuleNotFoundError: No module named 'llava'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data["judge"].update({"python": str(broken), "partition": "low", "cpus": 1, "mem_gb": 1})
    data["slurm"]["partition"] = "low"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))

    first = launch("judge", "--run", str(run_dir))
    ids = job_ids(first.stdout)
    assert set(ids) == {"judge", "report"}, first.stdout
    assert "judge again 2 shard(s), 0 complete and current" in first.stdout
    wait_for_jobs(ids)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    cov = report["coverage"]
    assert cov["judged"] == 0 and cov["video_missing"] == ["clip_a"]
    assert sorted(cov["judge_failed"]) == sorted(JUDGED)  # the videos exist: the judge failed
    assert all("No module named 'llava'" in f["log_tail"] for f in cov["shard_failures"])
    assert "No module named 'llava'" in (run_dir / "report" / "report.md").read_text()

    fixed = launch("judge", "--run", str(run_dir), f"judge.python={sys.executable}")
    ids = job_ids(fixed.stdout)
    assert set(ids) == {"judge", "report"}, fixed.stdout
    assert "shard 0: judge failed" in fixed.stdout and "shard 1: judge failed" in fixed.stdout
    wait_for_jobs(ids)
    report = json.loads((run_dir / "report" / "report.json").read_text())
    cov = report["coverage"]
    assert (cov["judged"], cov["judge_failed"], cov["video_missing"]) == (len(JUDGED), [], ["clip_a"])
    assert report["scores"]["total"] == pytest.approx(hand_scores(JUDGED)["total"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["judge"]["python"] == sys.executable

    # complete and current: nothing to judge, only the report is submitted
    again = launch("judge", "--run", str(run_dir))
    assert "judge again 0 shard(s), 2 complete and current" in again.stdout
    assert set(job_ids(again.stdout)) == {"report"}
    wait_for_jobs(job_ids(again.stdout))
    stages = [e["stage"] for e in RunFolder(run_dir).jobs()]
    assert stages == ["judge", "report", "judge", "report", "report"]


def _queued() -> list[str]:
    import subprocess
    return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()


def test_judge_refuses_non_judge_keys_and_a_missing_judge_before_the_queue(tmp_path):
    run_dir, _ = make_run(tmp_path, shards=1)
    RunFolder(run_dir).save_plan(PlanRecord(stems=[s for s, _ in BENCH], domains=dict(BENCH)))
    proc = launch("judge", "--run", str(run_dir), "bench.limit=3", check=False)
    assert proc.returncode == 2 and "judge.* overrides only; refused: bench.limit=3" in proc.stderr
    latest = run_dir.parent / "LATEST"
    latest.write_text("an-earlier-run\n")
    queued = _queued()
    proc = launch("judge", "--run", str(run_dir), "judge.python=", "judge.checkpoint=", check=False)
    assert proc.returncode == 1 and "judge.python: is empty" in proc.stderr
    assert "fix: set it to the VILA environment's interpreter" in proc.stderr, proc.stderr
    assert "judge.checkpoint: is empty" in proc.stderr and not (run_dir / "jobs.json").exists()
    assert latest.read_text() == "an-earlier-run\n" and _queued() == queued
