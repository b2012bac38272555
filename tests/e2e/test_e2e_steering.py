"""Steering a run on the dev cluster: status while it runs, cancel, resubmit."""
from __future__ import annotations

import json

import pytest

from tests.helpers.e2e import (chunk_record, jobs, launch, smoke_overrides, squeue_ids,
                               submit_smoke, wait_until)

pytestmark = pytest.mark.usefixtures("slurm_cluster")


def _status(tmp_path) -> dict:
    return json.loads(launch("status", "--logs", tmp_path / "logs", "--json").stdout)


def test_status_cancel_resubmit(tmp_path, synthetic_bench, tiny_checkpoint):
    bench = synthetic_bench(6, seed=11)
    over = smoke_overrides(tmp_path, bench, tiny_checkpoint, **{
        "plan.chunks": 2, "generate.sampling_steps": 30})
    run_dir, gen = submit_smoke(tmp_path, over)
    wait_until(lambda: len(chunk_record(run_dir, 0).get("done", [])) >= 1, 600, "a first video")

    status = _status(tmp_path)
    on_disk = {p.stem for p in (tmp_path / "outputs").glob("*.mp4")}
    assert {c["job_id"] for c in status["chunks"]} == set(gen["tasks"].values())
    assert status["totals"]["total"] == 6
    # status counts a video done only once it is complete on disk
    assert status["totals"]["done"] <= len(on_disk) + 1

    cancelled = json.loads(launch("cancel", "--logs", tmp_path / "logs", "--json").stdout)
    assert cancelled is not None
    assert not squeue_ids(gen["job_id"]), "a job of the run is still queued after cancel"
    claims = list((tmp_path / "outputs" / ".wmsub" / "claims").glob("*.claim"))
    assert not claims, f"claims left behind: {claims}"
    kept = {p.stem for p in (tmp_path / "outputs").glob("*.mp4")}
    assert on_disk <= kept, "cancel lost a finished video"

    launch("resubmit", "--logs", tmp_path / "logs", "--wait", timeout_s=900)
    entries = jobs(run_dir)
    assert [e["stage"] for e in entries] == ["gen", "gen"]
    resubmitted = {s for i in entries[1]["chunks"] for s in chunk_record(run_dir, i)["stems"]}
    assert len(list((tmp_path / "outputs").glob("*.mp4"))) == 6
    status = _status(tmp_path)
    assert status["totals"]["done"] == 6
    again = {c["index"]: c for c in status["chunks"]}
    assert entries[1]["chunks"], "the resubmission should have covered the chunks cut short"
    for index in entries[1]["chunks"]:  # each resubmitted chunk shows its new, completed job
        assert again[index]["job_id"] == entries[1]["tasks"][str(index)]
        assert again[index]["state"] == "completed", again[index]
    assert resubmitted
