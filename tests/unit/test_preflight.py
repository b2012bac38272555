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


def test_a_refused_output_dir_leaves_the_benchmark_check_to_the_manifest(tmp_path, synthetic_bench):
    """output.dir naming a file is the paths check's problem, said once; the benchmark check
    still validates the manifest and does not crash on the folder."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cfg = _cfg(f"bench.root={synthetic_bench(2)}", f"output.dir={a_file}", f"run.logs_dir={tmp_path}/logs")
    report = preflight.run_checks(cfg, SMOKE, skip=("checkpoint", "interpreter"), force_local=True)
    assert [str(p) for p in report.problems] == [
        f"output.dir: {a_file} is a file, not a folder — fix: point output.dir at a folder you can "
        "write (videos land in <output.dir>/<stem>.mp4)"]
    bench = next(r for r in report.results if r.name == "benchmark")
    assert bench.ok and bench.info["instances"] == 2
    bad = _cfg(f"bench.root={tmp_path}/nobench", f"output.dir={a_file}")
    (problem,) = preflight.check_benchmark(bad, Context(earlier=[preflight.check_paths(bad, Context())])).problems
    assert problem.key == "bench.root" and "worldmodelbench.json: file does not exist" in problem.what


def test_an_output_folder_of_other_settings_is_one_problem_with_one_fix(tmp_path, synthetic_bench):
    import numpy as np
    from wmsub.login.planner import build_plan
    from wmsub.state.store import OutputStore
    over = [f"bench.root={synthetic_bench(2)}", f"output.dir={tmp_path / 'out'}"]
    assert preflight.check_benchmark(_cfg(*over), Context()).ok
    assert not (tmp_path / "out").exists()  # check changes nothing in the folder
    stem = build_plan(_cfg(*over)).pending[0]  # a run pins the folder and makes a video
    OutputStore.for_config(_cfg(*over)).write_video(stem, np.zeros((5, 16, 16, 3), np.uint8), 24, {})
    (problem,) = preflight.check_benchmark(_cfg(*over, "generate.seed=7"), Context()).problems
    assert problem.key == "output.dir" and "belongs to other generation settings" in problem.what
    assert "generate.seed: 42 -> 7" in problem.what and "fix:" not in problem.what
    assert problem.fix.startswith("pick a new output.dir") and "output.allow_settings_mismatch=true" in problem.fix


def test_gpu_type_names_and_a_run_name_already_used_are_refused(tmp_path):
    result = preflight.check_config(_cfg("slurm.gpu_type=h100:2", "judge.gpu_type=a100,h100"), Context())
    assert [str(p) for p in result.problems] == [
        "slurm.gpu_type: slurm.gpu_type='h100:2' is not a GPU type name — fix: give the type alone, "
        "e.g. h100 (sinfo -o '%G' lists them)",
        "judge.gpu_type: judge.gpu_type='a100,h100' is not a GPU type name — fix: give the type alone, "
        "e.g. h100 (sinfo -o '%G' lists them)"]
    (tmp_path / "logs" / "used").mkdir(parents=True)
    (tmp_path / "logs" / "used" / "jobs.json").write_text("[]")
    cfg = _cfg(f"run.logs_dir={tmp_path / 'logs'}", "run.name=used", f"output.dir={tmp_path / 'out'}")
    (problem,) = preflight.check_paths(cfg, Context()).problems
    assert str(problem) == (f"run.name: the run folder {tmp_path / 'logs' / 'used'} already holds submitted "
                            "jobs — fix: pick another run.name, or continue that run with "
                            "`python launch.py resubmit --run used`")
    assert preflight.check_paths(cfg, Context(resubmit=True)).ok


@pytest.mark.parametrize("stage, said, key", [
    ("gen", "sbatch: error: invalid partition specified: gpu", "slurm.partition"),
    ("judge", "sbatch: error: invalid partition specified: gpu", "judge.partition"),
    ("report", "sbatch: error: invalid partition specified: cpu", "judge.report_partition"),
    ("gen", "sbatch: error: Invalid account or account/partition combination specified", "slurm.account"),
    ("gen", "sbatch: error: Invalid qos specification", "slurm.qos"),
    ("gen", "sbatch: error: Invalid generic resource (gres) specification", "slurm.gpu_type"),
    ("judge", "sbatch: error: Invalid generic resource (gres) specification", "judge.gpu_type"),
    ("gen", "sbatch: error: Memory specification can not be satisfied", "slurm.mem_gb"),
    ("judge", "sbatch: error: Requested time limit is invalid (missing or exceeds some limit)", "judge.time_min"),
    ("gen", "sbatch: error: Requested node configuration is not available",
     "slurm.gpus_per_job / gpu_type / cpus_per_task / mem_gb"),
    ("gen", "sbatch: unrecognized option '--bogus'", "slurm.additional"),
])
def test_an_sbatch_refusal_names_the_key_behind_it(stage, said, key):
    assert preflight._sbatch_key(said, stage) == key


def test_an_interpreter_report_names_each_missing_piece_with_its_fix():
    from wmsub import CHECKOUT
    from wmsub.login.interpreters import interpreter_problems
    report = {"python": "/envs/wan/bin/python", "python_version": "3.9.18", "torch_cuda": "12.4", "checks": [
        {"name": "wmsub", "ok": True, "detail": "/elsewhere/wmsub-old"},
        {"name": "wmsub.node.worker", "ok": True, "detail": ""},
        {"name": "torch", "ok": True, "detail": "2.5.1+cu124"},
        {"name": "engine", "ok": True, "detail": "wmsub.node.engines.wan_ti2v:WanTI2VEngine"},
        {"name": "wan", "ok": False, "error": "ImportError: the official Wan2.2 code is not installed"},
        {"name": "imageio_ffmpeg", "ok": False, "error": "ModuleNotFoundError: No module named 'imageio_ffmpeg'"}]}
    problems, info = interpreter_problems(_cfg("slurm.python=/envs/wan/bin/python"), report)
    assert [p.key for p in problems] == ["slurm.python"] * 4
    what = [p.what for p in problems]
    assert what[0] == "/envs/wan/bin/python is Python 3.9.18; wmsub needs 3.10 or newer"
    assert what[1] == "/envs/wan/bin/python cannot import wan: ImportError: the official Wan2.2 code is not installed"
    assert problems[1].fix.startswith("pip install --no-deps wan22==2.2.11 in that env")
    assert what[2].startswith("/envs/wan/bin/python cannot import imageio_ffmpeg: ModuleNotFoundError")
    assert problems[2].fix.startswith("pip install imageio-ffmpeg==0.8.1 in that env")
    assert what[3] == f"/envs/wan/bin/python imports wmsub from /elsewhere/wmsub-old, not from this checkout {CHECKOUT}"
    assert problems[3].fix.startswith("pip uninstall wmsub in that env")
    assert info["torch"] == "2.5.1+cu124"
    # a user engine that this env cannot import: the fix says how to make it importable there
    user = _cfg("slurm.python=/envs/wan/bin/python", "model.engine=tests.helpers.still_engine:StillFrameEngine")
    report = {"python": "/envs/wan/bin/python", "python_version": "3.11.7", "torch_cuda": None, "checks": [
        {"name": "torch", "ok": True, "detail": "2.5.1+cpu"},
        {"name": "engine", "ok": False, "error": "ModuleNotFoundError: No module named 'tests'"}]}
    (problem,) = interpreter_problems(user, report)[0]
    assert problem.what.endswith("cannot import engine: ModuleNotFoundError: No module named 'tests'")
    assert problem.fix == ("make model.engine=tests.helpers.still_engine:StillFrameEngine importable there: pip "
                           "install its package in that env, or add `export PYTHONPATH=<its folder>:$PYTHONPATH` "
                           "to slurm.setup")


def test_setup_line_failures_are_warnings_with_a_fix_per_kind_of_line():
    from wmsub.login.interpreters import setup_warnings
    keyed = [("slurm.setup[0]", "conda activate wan"), ("slurm.setup[1]", "module load cuda/12.4"),
             ("judge.setup[0]", "source /no/such/file")]
    conda, module, other = setup_warnings(keyed, [(0, 127), (1, 127), (2, 1)])
    assert str(conda).startswith("slurm.setup[0]: `conda activate wan` failed here with exit 127 in a "
                                 "non-interactive bash, as the job runs it (the job carries on without it)")
    assert "profile.d/conda.sh" in conda.fix
    assert module.key == "slurm.setup[1]" and module.fix.startswith("check the module name (`module avail`)")
    assert other.key == "judge.setup[0]" and other.fix.startswith("fix the line or drop it")


def test_on_node_rank_reports_become_problems_naming_rank_host_and_fix():
    from wmsub.login.onnode import rank_problems
    from wmsub.node.ranks import rank_gpu_problem
    cfg = load_config(None, ["model.checkpoint_dir=/gone", "generate.parallel=dp", "output.dir=/scratch/out",
                             "judge.enabled=true", "judge.python=/envs/vila/bin/python"])
    fine = {"name": "torch", "ok": True, "detail": "2.5.1+cu124"}
    interp = {"python": "/envs/wan/bin/python", "python_version": "3.11.7", "torch_cuda": "12.4", "checks": [fine]}
    ranks = [
        {"rank": 0, "host": "node7", "gpu": "2", "interpreter": interp, "output": {"ok": True},
         "dist": {"ok": False, "error": "RuntimeError: connection refused"},
         "memory": {"free_gb": 30.1, "total_gb": 40.0, "name": "A100-40GB"},
         "judge": {"imports": [{"statement": "import llava", "ok": False,
                                "error": "ModuleNotFoundError: No module named 'ps3'",
                                "where": "/vila/llava/model/builder.py:12"}], "numpy": "1.26.4"}},
        {"rank": 1, "host": "node7", "gpu": "2", "interpreter": interp,
         "gpu_problem": rank_gpu_problem("2", None, None),
         "output": {"ok": False, "path": "/scratch/out", "error": "PermissionError: [Errno 13] Permission denied"}},
        {"rank": 2, "host": "node7", "gpu": "3", "interpreter": interp, "output": {"ok": True}},
    ]
    problems, warnings = rank_problems(cfg, ranks)
    said = [str(p) for p in problems]
    assert said[0] == ("slurm.gpus_per_job: the job ran 3 rank(s), not 2 — fix: check slurm.additional "
                       "for flags that change the task count")
    assert ("generate.dist_timeout_s: rank 0 on node7: process group / all-reduce failed: RuntimeError: "
            "connection refused — fix: check that the ranks reach each other (MASTER_ADDR/PORT, firewall, "
            "NCCL_SOCKET_IFNAME in slurm.setup)") in said
    assert ("slurm.gpu_type: rank 0 on node7: 30.1 GB free on its GPU (A100-40GB), the model needs ~52.7 GB "
            "(wan22-ti2v-5b's figure, docs/ENGINES.md) — fix: pick GPUs with more memory (slurm.gpu_type), or "
            "generate.offload_t5=true (-11.4 GB)") in said
    assert any(s.startswith("judge.python: /envs/vila/bin/python on node7 cannot run `import llava` from "
                            "evaluation.py: ModuleNotFoundError: No module named 'ps3' (at "
                            "/vila/llava/model/builder.py:12)") and "ps3 unconditionally" in s for s in said)
    assert any(s.startswith("slurm.gpus_per_job: rank 1 on node7: Slurm bound no GPU to the task") for s in said)
    assert "slurm.gpus_per_job: ranks 0 and 1 both take GPU 2 on node7 — fix: ask Slurm for one GPU per task " \
           "(slurm.gpus_per_job = tasks per node)" in said
    assert ("output.dir: /scratch/out is not writable from node7: PermissionError: [Errno 13] Permission denied "
            "— fix: put output.dir on a filesystem the compute nodes mount read-write") in said
    assert len(problems) == 7 and warnings == [], said
