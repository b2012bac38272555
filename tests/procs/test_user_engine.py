"""A user engine's spec is read without torch: checked in a fresh interpreter, as the login
node reads it (the user engine in one process: tests/unit/test_user_engine.py)."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers.still_engine import NAME
from wmsub import CHECKOUT


def test_the_spec_is_read_without_torch():
    """The login node reads the spec: the engine's module must not import torch at the top."""
    code = ("import sys; from wmsub.engine_specs import engine_spec; "
            f"engine_spec({NAME!r}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=CHECKOUT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"
