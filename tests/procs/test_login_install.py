"""The two installs (pyproject.toml): the core one is the login node's and has no torch,
yet plans, checks, shows status and reports; the `[gen]` extra is the compute nodes'.
Tested in a real venv holding the core packages only."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import pytest

from tests.helpers.envs import venv_without
from tests.helpers.e2e import REPO
from tests.helpers.judge import make_run
from tests.helpers.refusals import launch_with
from wmsub.config import absolutize_paths, load_config
from wmsub.score.judge import merge_shards, run_shard
from wmsub.state.runs import create_run

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(requirements: list[str]) -> list[str]:
    return [re.split(r"[=<>\[ ]", r, maxsplit=1)[0].lower() for r in requirements]


def test_the_core_install_has_no_torch_and_the_gen_extra_has_the_model_stack():
    core, gen = _names(PROJECT["dependencies"]), _names(PROJECT["optional-dependencies"]["gen"])
    assert "torch" not in core and {"torch", "diffusers", "transformers", "safetensors"} <= set(gen)
    assert {"submitit", "pyyaml", "matplotlib", "imageio-ffmpeg"} <= set(core)


@pytest.fixture(scope="module")
def login_python(tmp_path_factory):
    """A venv with the core packages and none of the `[gen]` extra's."""
    gen = _names(PROJECT["optional-dependencies"]["gen"])
    python = venv_without(tmp_path_factory.mktemp("login") / "venv", *gen)
    out = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert "No module named 'torch'" in out.stderr
    return python


def test_plan_check_status_and_report_run_in_the_login_install(login_python, tmp_path, synthetic_bench,
                                                                tiny_checkpoint):
    over = [f"bench.root={synthetic_bench(2)}", f"model.checkpoint_dir={tiny_checkpoint}",
            f"run.logs_dir={tmp_path / 'logs'}", f"output.dir={tmp_path / 'out'}",
            f"slurm.python={sys.executable}", "slurm.executor=local"]
    for args in (["--help"], ["plan", "--config", "configs/smoke.yaml", *over],
                 ["check", "--config", "configs/smoke.yaml", *over]):
        proc = launch_with(*args, python=login_python)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    create_run(absolutize_paths(load_config("configs/smoke.yaml", over)), "configs/smoke.yaml")
    status = launch_with("status", "--logs", tmp_path / "logs", python=login_python)
    assert status.returncode == 0 and status.stdout.startswith("run smoke-"), status.stderr
    run_dir, _ = make_run(tmp_path / "judged", shards=1)
    run_shard(str(run_dir), 0)
    results = merge_shards(run_dir)
    proc = launch_with("report", "--results", results, "--out", tmp_path / "report",
                       f"output.dir={tmp_path / 'judged' / 'outputs'}", python=login_python)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "report" / "contact_sheet.png").is_file()


def test_a_report_without_imageio_ffmpeg_is_a_clear_error_not_blank_tiles(tmp_path):
    python = venv_without(tmp_path / "venv", "imageio_ffmpeg")
    run_dir, _ = make_run(tmp_path / "judged", shards=1)
    run_shard(str(run_dir), 0)
    results = merge_shards(run_dir)
    proc = launch_with("report", "--results", results, "--out", tmp_path / "report", python=python)
    assert proc.returncode == 1
    assert "the report needs imageio-ffmpeg==0.8.1" in proc.stderr and "pip install imageio-ffmpeg" in proc.stderr
    assert not (tmp_path / "report").exists()
