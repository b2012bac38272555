"""The login-node checks (wmsub/login/preflight.py and friends), each on a real bad setup:
real files, the real Slurm client where it is asked. The checks that ask real interpreters
(this checkout's, venvs lacking things, a judge env) are in tests/procs/test_preflight.py."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from wmsub.config import GuideScale, Config, load_config
from wmsub.login import limits, preflight
from wmsub.login.preflight import Context

SMOKE = "configs/smoke.yaml"


def _cfg(*overrides):
    return load_config(SMOKE, list(overrides))


def test_every_numeric_key_has_a_range():
    numeric = {f"{section.name}.{f.name}"
               for section in dataclasses.fields(Config)
               for f in dataclasses.fields(section.default_factory())
               if typing.get_type_hints(section.default_factory)[f.name] in (int, float, GuideScale)}
    assert numeric == set(limits.RANGES), numeric ^ set(limits.RANGES)
    assert limits.value_problems(Config()) == []  # the defaults are sensible
    assert limits.value_problems(load_config("configs/wan22_ti2v_5b.yaml")) == []


@pytest.mark.parametrize("override", [
    "slurm.time_min=0", "slurm.mem_gb=-1", "slurm.array_parallelism=0", "slurm.cpus_per_task=0",
    "slurm.signal_delay_s=-5", "plan.target_chunk_minutes=0", "plan.seconds_per_video=-1",
    "generate.seed=-1", "generate.max_area=7041280", "judge.time_min=0",
])
def test_each_value_out_of_range_is_named_with_its_range(override):
    key = override.split("=")[0]
    result = preflight.check_config(_cfg(override), Context(SMOKE))
    (problem,) = [p for p in result.problems if p.key == key]
    assert problem.what.startswith(f"{key}=") and " is outside " in problem.what
    assert problem.fix.startswith(f"set {key} within")


def test_cross_key_rules_and_names():
    result = preflight.check_config(_cfg("slurm.time_min=2", "slurm.signal_delay_s=120"), Context())
    assert [p.key for p in result.problems] == ["slurm.signal_delay_s"]
    assert "shorter than slurm.time_min*60=120 s" in result.problems[0].fix
    result = preflight.check_config(_cfg("plan.chunks=0", "plan.target_chunk_minutes=600"), Context())
    assert [w.key for w in result.warnings] == ["plan.target_chunk_minutes"]
    for name in ("a/b", "two\nlines", "../up"):
        result = preflight.check_config(_cfg(f"run.name={name}"), Context())
        assert [p.key for p in result.problems] == ["run.name"], name


def test_output_dir_must_be_a_writable_folder_and_node_local_paths_are_flagged(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    result = preflight.check_paths(_cfg(f"output.dir={a_file}", f"run.logs_dir={tmp_path}/logs"), Context())
    (problem,) = result.problems
    assert problem.key == "output.dir" and "is a file, not a folder" in problem.what
    result = preflight.check_paths(_cfg(f"output.dir={a_file}/sub"), Context())
    assert "cannot be created" in result.problems[0].what
    slurm = preflight.check_paths(_cfg("output.dir=/dev/shm/wmsub-out", "slurm.executor=slurm"), Context())
    assert [w.key for w in slurm.warnings if "/dev/shm" in w.what] == ["output.dir"]
    local = preflight.check_paths(_cfg("output.dir=/dev/shm/wmsub-out"), Context(force_local=True))
    assert not [w for w in local.warnings if "/dev/shm" in w.what]


def test_auto_without_sbatch_refuses_and_local_is_only_on_request(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    (problem,) = preflight.check_executor(_cfg("slurm.executor=auto"), Context()).problems
    assert str(problem) == ("slurm.executor: sbatch not found (slurm.executor=auto submits with it)"
                            " — fix: load Slurm, or pass --local")
    assert preflight.check_executor(_cfg("slurm.executor=auto"), Context(force_local=True)).ok


def test_generation_interpreter_that_does_not_exist(tmp_path):
    result = preflight.check_interpreter(_cfg("slurm.python=/nonexistent/python"), Context())
    (problem,) = result.problems
    assert problem.key == "slurm.python" and "/nonexistent/python does not exist" in problem.what
    assert "generation env's interpreter" in problem.fix


def test_all_problems_come_back_at_once_and_as_json(tmp_path):
    cfg = _cfg("slurm.mem_gb=-1", "model.checkpoint_dir=/no/such/dir", "slurm.python=/nonexistent/python",
               f"output.dir={__file__}", "slurm.executor=local")
    report = preflight.run_checks(cfg, SMOKE, skip=("benchmark",))
    keys = [p.key for p in report.problems]
    assert {"slurm.mem_gb", "model.checkpoint_dir", "slurm.python", "output.dir"} <= set(keys)
    data = report.to_json()
    assert data["ok"] is False and {c["name"] for c in data["checks"]} == set(preflight.CHECKS) - {"benchmark"}
    assert all({"key", "what", "fix"} == set(p) for p in data["problems"])


def test_on_node_memory_need_is_the_engines_own(tmp_path):
    from wmsub.login.onnode import _memory_problems
    rank = {"rank": 0, "host": "n1", "memory": {"free_gb": 79.0, "total_gb": 80.0, "name": "H100"}}

    def check(*overrides):
        cfg = load_config(None, [f"model.checkpoint_dir={tmp_path}", *overrides])
        warnings = []
        return _memory_problems(cfg, rank, warnings), warnings

    assert check("generate.parallel=dp") == ([], [])  # the 5B's 52.7 GB fits
    problems, _ = check("model.engine=wan22-i2v-a14b", "generate.parallel=dp")
    assert len(problems) == 1 and "~141.6 GB" in problems[0].what, problems
    problems, warnings = check("model.engine=wan22-i2v-a14b", "generate.parallel=sp")
    assert problems == [] and "sp shards it" in warnings[0].what
    assert check("model.engine=tests.helpers.still_engine:StillFrameEngine") == ([], [])
