"""End to end on the dev cluster with a user engine named by import path: `launch.py
--config configs/smoke.yaml model.engine=tests.helpers.still_engine:StillFrameEngine
judge.enabled=true --wait` runs a real Slurm array (two CPU ranks per chunk), the judge
(the STAND-IN for VILA, wmsub/dev/standin_judge/) and the report, with no checkpoint folder.

The compute-node jobs import the engine because the job puts the checkout on PYTHONPATH
(login/submission.job_setup_lines) and tests/ is a package of the checkout; a user's own
package gets there by `pip install` in slurm.python's env or a `export PYTHONPATH=...` line
in slurm.setup (docs/ENGINES.md)."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers.e2e import jobs, latest_run, launch, run_logs
from tests.helpers.judge import STANDIN, make_judge_checkpoint
from tests.helpers.slurm import job_state_sacct
from tests.helpers.still_engine import NAME, StillFrameEngine
from wmsub.config import settings_fingerprint
from wmsub.state.runs import RunFolder
from wmsub.state.store import OutputStore
from wmsub.state.video_io import probe_mp4, read_frames

pytestmark = pytest.mark.usefixtures("slurm_cluster")

N = 4


def test_a_user_engine_by_import_path_through_slurm_judge_and_report(tmp_path, synthetic_bench):
    bench = synthetic_bench(N, seed=11)
    repo = tmp_path / "wmb_repo"
    repo.mkdir()
    shutil.copy(STANDIN, repo / "evaluation.py")
    shutil.copy(bench / "worldmodelbench.json", repo / "worldmodelbench.json")
    ckpt = tmp_path / "no-checkpoint-here"  # the engine has none: nothing may ask for it
    over = {
        "model.engine": NAME, "model.name": "still-frame-baseline", "model.checkpoint_dir": ckpt,
        "bench.root": bench, "run.logs_dir": tmp_path / "logs", "output.dir": tmp_path / "outputs",
        "slurm.executor": "slurm", "plan.chunks": 2,
        "judge.enabled": "true", "judge.python": sys.executable, "judge.repo": repo,
        "judge.checkpoint": make_judge_checkpoint(tmp_path / "vila-ewm-qwen2-1.5b"),
        "judge.shards": 1, "judge.partition": "low", "judge.cpus": 1, "judge.mem_gb": 1,
        "judge.report_partition": "low"}
    proc = launch("--config", "configs/smoke.yaml", *[f"{k}={v}" for k, v in over.items()],
                  "--wait", timeout_s=300)
    assert f"model.engine={NAME}" in proc.stdout, proc.stdout[-3000:]
    run_dir = latest_run(tmp_path / "logs")
    entries = jobs(run_dir)
    assert [e["stage"] for e in entries] == ["gen", "judge", "report"]
    for entry in entries:
        for task in entry["tasks"].values():
            assert job_state_sacct(task) == "COMPLETED", run_logs(run_dir)
    assert not ckpt.exists()

    # every video: the engine's size and frames, and a still frame (zero motion)
    cfg = RunFolder(run_dir).load_config()
    assert cfg.engine_spec is StillFrameEngine.spec
    entries_json = json.loads((bench / "worldmodelbench.json").read_text())
    stems = sorted(e["first_frame"].rsplit("/", 1)[-1].rsplit(".", 1)[0] for e in entries_json)
    made = sorted(p.stem for p in (tmp_path / "outputs").glob("*.mp4"))
    assert made == stems, run_logs(run_dir)
    for entry in entries_json:
        stem = entry["first_frame"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        with Image.open(bench / entry["first_frame"]) as img:
            width, height = StillFrameEngine.spec.i2v_size(img.width, img.height, cfg.generate.max_area)
        info = probe_mp4(tmp_path / "outputs" / f"{stem}.mp4")
        assert (info["width"], info["height"], info["frames"]) == (width, height, cfg.generate.frame_num)
        first, last = read_frames(tmp_path / "outputs" / f"{stem}.mp4", [0, cfg.generate.frame_num - 1])
        assert np.abs(first.astype(int) - last.astype(int)).mean() < 2.0  # codec noise only

    # the store: the folder's settings name the engine; each record carries its fingerprint
    store = OutputStore.for_config(cfg)
    saved = store.saved_settings()
    digest, settings = settings_fingerprint(cfg)
    assert saved["fingerprint"] == digest and saved["settings"]["model.engine"] == NAME
    for stem in stems:
        record = store.read_record(stem)
        assert record["engine"]["engine"] == NAME, record
        assert record["engine"]["group_size"] == 2 and record["engine"]["parallel"] == "sp"
        assert record["settings_fingerprint"] == digest

    # the judge ran on every video; the report names the model and the engine
    merged = json.loads((run_dir / "judge" / "results.json").read_text())
    assert sorted(merged["preds"]) == stems
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["model_name"] == "still-frame-baseline"
    assert report["coverage"]["judged"] == N
    assert report["settings"]["engine"] == NAME
    assert [e["engine"] for e in report["settings"]["engines"]] == [NAME]
    md = (run_dir / "report" / "report.md").read_text()
    assert md.startswith("# WorldModelBench report: still-frame-baseline")
    assert f"| Engine (model.engine) | `{NAME}` |" in md
