"""The login-node checks that ask real interpreters (wmsub/login/interpreters.py), each on a
real setup: this checkout's generation interpreter (torch and the wan modules imported in a
subprocess), venvs lacking torch or everything, a judge env run as given."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.e2e import REPO
from tests.helpers.envs import bare_venv, venv_without
from tests.helpers.judge import make_judge_checkpoint
from wmsub.config import load_config
from wmsub.login import preflight
from wmsub.login.preflight import Context

SMOKE = "configs/smoke.yaml"


def _cfg(*overrides):
    return load_config(SMOKE, list(overrides))


def test_generation_interpreter_without_torch_and_a_failing_conda_activate(tmp_path):
    python = venv_without(tmp_path / "login-venv", "torch")
    cfg = _cfg(f"slurm.python={python}", "slurm.setup=conda activate wan")
    result = preflight.check_interpreter(cfg, Context())
    text = "\n".join(map(str, result.problems))
    assert f"{python} cannot import torch: ModuleNotFoundError: No module named 'torch'" in text
    assert "a slurm.setup line failed before it" in text and "cu124" in text
    (warning,) = result.warnings
    assert warning.key == "slurm.setup[0]" and "profile.d/conda.sh" in warning.fix


def test_generation_interpreter_of_this_checkout_passes_and_reports_versions():
    result = preflight.check_interpreter(_cfg(f"slurm.python={sys.executable}"), Context())
    assert result.ok, result.problems
    assert result.info["torch"].startswith("2.") and result.info["wan"] == "2.2.11"
    # a GPU run needs a CUDA build; this machine's torch is a CPU build
    gpu = preflight.check_interpreter(_cfg(f"slurm.python={sys.executable}", "generate.device=auto"), Context())
    (problem,) = gpu.problems
    assert "a CPU build" in problem.what and "generate.device=auto needs a CUDA build" in problem.what


def _judge_repo(tmp_path, imports: str):
    repo = tmp_path / "wmb"
    repo.mkdir()
    (repo / "evaluation.py").write_text(imports + "\n\ndef load():\n    import llava\n")
    (repo / "worldmodelbench.json").write_text("[]")
    return repo


def test_judge_env_without_its_packages_names_each_with_the_known_pitfalls(tmp_path):
    repo = _judge_repo(tmp_path, "import numpy as np\nfrom rich.console import Console\n"
                                 "from mmengine import load, dump\n")
    python = bare_venv(tmp_path / "judge-venv")
    cfg = _cfg("judge.enabled=true", f"judge.python={python}", f"judge.repo={repo}",
               f"judge.checkpoint={make_judge_checkpoint(tmp_path / 'weights')}")
    result = preflight.check_judge(cfg, Context())
    text = "\n".join(map(str, result.problems))
    assert len(result.problems) == 4, text
    assert "cannot run `import numpy as np` from evaluation.py: ModuleNotFoundError" in text
    assert "pip install numpy==1.26.4" in text and "pip install rich mmengine numpy==1.26.4" in text
    assert "cannot run `import llava`" in text and "ps3" in text


def test_judge_python_of_a_venv_is_run_as_given(tmp_path):
    python = bare_venv(tmp_path / "judge-venv")
    site = next((tmp_path / "judge-venv" / "lib").glob("python*/site-packages"))
    (site / "only_in_this_venv.py").write_text("")
    repo = _judge_repo(tmp_path, "import only_in_this_venv")
    (repo / "evaluation.py").write_text("import only_in_this_venv\n")
    cfg = _cfg("judge.enabled=true", f"judge.python={python}", f"judge.repo={repo}",
               f"judge.checkpoint={make_judge_checkpoint(tmp_path / 'weights')}")
    result = preflight.check_judge(cfg, Context())
    assert result.ok and not result.warnings, result.problems


def test_numpy_other_than_1_26_4_in_the_judge_env_is_a_warning(tmp_path):
    repo = _judge_repo(tmp_path, "import numpy")
    (repo / "evaluation.py").write_text("import numpy\n")
    cfg = _cfg("judge.enabled=true", f"judge.python={sys.executable}", f"judge.repo={repo}",
               f"judge.checkpoint={make_judge_checkpoint(tmp_path / 'weights')}")
    result = preflight.check_judge(cfg, Context())
    assert result.ok
    (warning,) = result.warnings
    assert "not 1.26.4" in warning.what and warning.key == "judge.python"


def test_judging_a_run_again_checks_the_judge_and_not_the_generation_side(tmp_path):
    repo = _judge_repo(tmp_path, "import numpy as np")
    (repo / "evaluation.py").write_text("import numpy as np\n")
    cfg = _cfg("judge.enabled=true", f"judge.python={bare_venv(tmp_path / 'vila')}", f"judge.repo={repo}",
               "judge.checkpoint=/nonexistent", "slurm.python=/gone/python", "model.checkpoint_dir=/gone",
               "slurm.executor=local")
    report = preflight.run_judge_checks(cfg, SMOKE)
    assert {r.name for r in report.results} == {"config", "executor", "paths", "judge", "report", "slurm"}
    assert {p.key for p in report.problems} == {"judge.checkpoint", "judge.python"}


def test_the_report_check_names_what_the_launching_interpreter_lacks_for_the_report_job(tmp_path):
    """The report job runs in the launching interpreter: without imageio-ffmpeg its contact
    sheet would be blank tiles, so `check` refuses (key judge.report) with the pip line."""
    python = venv_without(tmp_path / "venv", "imageio_ffmpeg")
    code = ("import json; from wmsub.config import load_config; from wmsub.login import preflight; "
            "r = preflight.check_report(load_config('configs/smoke.yaml', ['judge.enabled=true']), "
            "preflight.Context()); print(json.dumps([p.to_json() for p in r.problems]))")
    out = subprocess.run([str(python), "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    (problem,) = json.loads(out.stdout)
    assert problem == {"key": "judge.report",
                       "what": f"this interpreter ({python}) lacks imageio-ffmpeg==0.8.1, which the report "
                               "job needs for its charts and contact sheet",
                       "fix": "pip install imageio-ffmpeg==0.8.1 (or the login-node install: pip install -e .)"}
    assert preflight.check_report(_cfg("judge.enabled=true"), Context()).ok  # this env has it
    assert preflight.check_report(_cfg(), Context()).skipped  # no judge, no report job
