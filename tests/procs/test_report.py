"""The report in a fresh interpreter that cannot import a module, as on a login node that
lacks it: without torch it runs; without matplotlib it is an error naming it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers.judge import make_run
from wmsub.score.judge import run_shard

REPO = Path(__file__).resolve().parents[2]


def _python_without(module: str, code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where importing `module` fails, as on a login
    node that lacks it."""
    prelude = f"import sys; sys.modules[{module!r}] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=REPO, capture_output=True, text=True)


def test_the_report_runs_without_torch(tmp_path):
    run_dir, _ = make_run(tmp_path, shards=1, missing=("clip_a",), images=True)
    run_shard(str(run_dir), 0)
    proc = _python_without("torch", f"""
from wmsub.score.report import run_report
run_report({str(run_dir)!r})
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
""")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((run_dir / "report" / "report.json").read_text())
    assert report["coverage"]["judged"] == 4 and (run_dir / "report" / "thumbs" / "0.jpg").is_file()


def test_a_missing_report_dependency_is_an_error_naming_it(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"model_name": "m", "preds": {"x": {}}, "accs": {
        "instruction": [2.0], "physical_laws": [True] * 5, "common_sense": [True, True]}}))
    proc = _python_without("matplotlib", f"""
from pathlib import Path
from wmsub.score.report import write_report
write_report(None, Path({str(path)!r}), Path({str(tmp_path / 'rep')!r}))
""")
    assert proc.returncode != 0
    assert "ReportDependencyError" in proc.stderr and "the report needs matplotlib==3.11.2" in proc.stderr
    assert "pip install matplotlib==3.11.2" in proc.stderr and not (tmp_path / "rep" / "report.md").exists()
