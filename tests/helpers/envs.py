"""Real Python environments that lack something, as users' environments do: a login-node
venv without torch, a report environment without imageio-ffmpeg, a bare judge venv.

`venv_without` makes a venv of the base interpreter whose site-packages links every
package of the test environment except the ones named: a real interpreter that really
cannot import them, built in a second without a network.
"""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def bare_venv(dest: Path) -> Path:
    """A venv with nothing installed (no numpy, no pip); returns its python."""
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(dest)], check=True)
    return dest / "bin" / "python"


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return Path(out)


def venv_without(dest: Path, *excluded: str) -> Path:
    """A venv holding this environment's packages but `excluded` (import names, e.g. torch,
    imageio_ffmpeg); wmsub itself comes from the checkout, as the jobs import it."""
    python = bare_venv(dest)
    target = _site_packages(python)
    source = Path(sysconfig.get_paths()["purelib"])
    for entry in source.iterdir():
        top = entry.name.split("-")[0].split(".")[0]
        if top in excluded or "wmsub" in entry.name.lower() or entry.name == "__pycache__":
            continue
        (target / entry.name).symlink_to(entry)
    return python
