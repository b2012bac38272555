"""The judge's interpreter kept exactly as given: a real venv's python, not the base
interpreter it links to (the sbatch parameters: tests/unit/test_submission_params.py)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from wmsub.config import load_config
from wmsub.score.judge import judge_command


def test_a_venv_judge_python_is_passed_as_given_not_resolved_to_the_base_interpreter(tmp_path):
    venv = tmp_path / "judge-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    assert python.is_symlink()
    cfg = load_config(None, [f"judge.python={python}", f"judge.checkpoint={tmp_path}"])
    cmd = judge_command(cfg, tmp_path, "m", "s")
    assert cmd[0] == str(python)
    prefix = subprocess.run([cmd[0], "-c", "import sys; print(sys.prefix)"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert Path(prefix) == venv  # the venv, not the interpreter it links to
