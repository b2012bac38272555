"""The login side of the checkpoint checks imports no torch: each module imported in a fresh
interpreter (the layout itself: tests/unit/test_checkpoint_layout.py)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from wmsub import CHECKOUT


@pytest.mark.parametrize("module", ["wmsub.node.engines.layout", "wmsub.login.preflight",
                                    "wmsub.login.interpreters", "wmsub.login.onnode",
                                    "wmsub.login.limits", "wmsub.node.probe"])
def test_the_login_side_of_the_checks_imports_no_torch(module):
    code = (f"import sys, {module}; from wmsub.login.preflight import run_checks; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CHECKOUT)
