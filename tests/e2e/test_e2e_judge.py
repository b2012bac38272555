"""End to end on the dev cluster: generation array → judge shards (a Slurm dependency,
afterany) → report, with no manual step. The judge program is the STAND-IN in
wmsub/dev/standin_judge/ (the external VILA judge cannot run here)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.helpers.e2e import jobs, latest_run, launch, run_logs, smoke_overrides, squeue_ids, wait_until
from tests.helpers.slurm import job_state_sacct, scontrol_job
from tests.helpers.judge import STANDIN, hand_scores, make_judge_checkpoint

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def test_generation_then_judge_then_report(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(6, seed=7)
    repo = tmp_path / "wmb_repo"
    repo.mkdir()
    shutil.copy(STANDIN, repo / "evaluation.py")
    shutil.copy(bench / "worldmodelbench.json", repo / "worldmodelbench.json")
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 2, "judge.enabled": "true", "judge.python": sys.executable,
        "judge.repo": repo, "judge.checkpoint": make_judge_checkpoint(tmp_path / "vila-ewm-qwen2-1.5b"),
        "judge.shards": 2, "judge.partition": "low", "judge.cpus": 1, "judge.mem_gb": 1,
        "judge.report_partition": "low", "slurm.additional": "{mail-type: FAIL}",
        "generate.sampling_steps": 20})
    launch("--config", "configs/smoke.yaml", *over)
    run_dir = latest_run(tmp_path / "logs")
    entries = jobs(run_dir)
    gen, judge_entry, report_entry = entries
    assert [e["stage"] for e in entries] == ["gen", "judge", "report"]
    # slurm.additional reaches the judge and report jobs; the judge asks for one GPU, the report none
    judge_job, report_job = scontrol_job(judge_entry["tasks"]["0"]), scontrol_job(report_entry["job_id"])
    assert judge_job["MailType"] == report_job["MailType"] == "FAIL"
    assert "gres/gpu=1" in judge_job["TRES"] and "gpu" not in report_job["TRES"]
    # a generation chunk fails: the judge must still run on what exists (afterany)
    subprocess.run(["scancel", gen["tasks"]["1"]], check=True)
    wait_until(lambda: not squeue_ids(report_entry["job_id"]) and not squeue_ids(gen["job_id"])
               and not squeue_ids(judge_entry["job_id"]), 900, "generation, judge and report")
    def final_state(job):  # the accounting database may lag the queue by a moment
        return wait_until(lambda: job_state_sacct(job) or None, 60, f"sacct to record {job}")
    assert final_state(report_entry["job_id"]) == "COMPLETED", run_logs(run_dir)
    for task in judge_entry["tasks"].values():
        assert final_state(task) == "COMPLETED", run_logs(run_dir)
    made = sorted(p.stem for p in (tmp_path / "outputs").glob("*.mp4"))
    assert 0 < len(made) < 6
    merged = json.loads((run_dir / "judge" / "results.json").read_text())
    assert sorted(merged["preds"]) == made
    report = json.loads((run_dir / "report" / "report.json").read_text())
    # the report's numbers are the official formulas over the stand-in's answers
    expected = hand_scores(made)
    for key in ("instruction", "physical_laws", "common_sense", "total"):
        assert report["scores"][key] == pytest.approx(expected[key]), key
    assert report["coverage"]["judged"] == len(made)
    assert report["coverage"]["expected"] == 6
    assert (run_dir / "report" / "report.md").exists()
