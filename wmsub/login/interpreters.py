"""Asking the jobs' interpreters what they can import, from the login node.

The generation interpreter (`slurm.python`) and the judge's (`judge.python`) run in a
non-interactive bash after the job's setup lines, as the batch script runs them, within a
timeout; the probes themselves live in wmsub/node/probe.py. This module turns their
reports into problems, each with its fix (the on-node check reuses the same wording).
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from wmsub import CHECKOUT
from wmsub.config import Config
from wmsub.node.probe import JUDGE_IMPORTS, parse_report
from wmsub.problems import Problem

INTERPRETER_TIMEOUT_S = 180  # torch + the wan modules from a cold shared filesystem
MIN_PYTHON = (3, 10)
JUDGE_NUMPY = "1.26.4"
SETUP_FAILED = re.compile(r"^WMSUB_SETUP_FAILED (\d+) (\d+)$", re.M)
GEN_ENV = "README.md, 'Setting up on a real cluster'"


@dataclass
class ShellRun:
    """One probe run through bash after the job's setup lines."""
    returncode: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    setup_failures: list[tuple[int, int]] = field(default_factory=list)  # (line index, exit status)
    report: dict | None = None  # the probe's JSON report, when it got that far


def run_in_job_shell(python: str, args: list[str], setup: list[str], *, timeout_s: float,
                     cwd: str | None = None) -> ShellRun:
    """`python args...` after `setup` in `bash -c`, each setup line's failure noted (a batch
    script carries on past a failing line; so does this, to see what follows from it)."""
    from wmsub.login.submission import job_setup_lines
    lines = []
    for i, line in enumerate(setup):
        lines += [line, f'__wmsub_rc=$?; [ "$__wmsub_rc" -eq 0 ] || '
                        f'echo "WMSUB_SETUP_FAILED {i} $__wmsub_rc" >&2']
    lines += job_setup_lines([])
    lines.append("exec " + " ".join([shlex.quote(python), *map(shlex.quote, args)]))
    t0 = time.time()
    proc = subprocess.Popen([shutil.which("bash") or "/bin/bash", "-c", "\n".join(lines)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    failures = [(int(i), int(s)) for i, s in SETUP_FAILED.findall(err)]
    return ShellRun(rc, out, err, round(time.time() - t0, 2), failures, parse_report(out))


# ---- the generation interpreter -------------------------------------------------------------

def generation_python(cfg: Config) -> str:
    return cfg.slurm.python or sys.executable


def check_generation_interpreter(cfg: Config, timeout_s: float = INTERPRETER_TIMEOUT_S):
    """(problems, warnings, info) of `slurm.python` after `slurm.setup`."""
    python = generation_python(cfg)
    if os.sep in python and not Path(python).exists():
        return [Problem("slurm.python", f"{python} does not exist", _gen_fix(cfg))], [], {"python": python}
    code = "from wmsub.node.probe import main; import sys; sys.exit(main())"
    run = run_in_job_shell(python, ["-c", code, "interpreter", "--device", cfg.generate.device,
                                   "--engine", cfg.engine_spec.loader],
                           cfg.slurm.setup, timeout_s=timeout_s)
    warnings = setup_warnings(_setup_keys(cfg, judge=False), run.setup_failures)
    info = {"python": python}
    if run.report is None:
        return [_no_report(cfg, python, run, timeout_s)], warnings, info
    problems, found = interpreter_problems(cfg, run.report)
    info.update(found)
    if problems and run.setup_failures:
        problems = [Problem(p.key, p.what + " (a slurm.setup line failed before it; see the warnings)",
                            p.fix) for p in problems]
    return problems, warnings, info


def interpreter_problems(cfg: Config, report: dict) -> tuple[list[Problem], dict]:
    """Problems of an `interpreter_report` (login or on-node) and the versions it found."""
    python = str(report.get("python"))
    checks = {c["name"]: c for c in report.get("checks", [])}
    info = {"python": report.get("python"), "python_version": report.get("python_version"),
            **{name: c.get("detail") for name, c in checks.items() if c.get("ok") and c.get("detail")}}
    problems = []
    version = tuple(int(x) for x in str(report.get("python_version", "0")).split(".")[:2])
    if version < MIN_PYTHON:
        problems.append(Problem("slurm.python", f"{python} is Python {report.get('python_version')}; "
                                f"wmsub needs {'.'.join(map(str, MIN_PYTHON))} or newer", _gen_fix(cfg)))
    fixes = {
        "wmsub": f"install wmsub's dependencies in that env: pip install -e '{CHECKOUT}[gen]'",
        "wmsub.node.worker": f"install wmsub's dependencies in that env: pip install -e '{CHECKOUT}[gen]'",
        "torch": _gen_fix(cfg, "install a CUDA build of torch there (pip install torch --index-url "
                               "https://download.pytorch.org/whl/cu124), then pip install -e "
                               f"'{CHECKOUT}[gen]'"),
        "engine": _engine_fix(cfg),
        "wan": "pip install --no-deps wan22==2.2.11 in that env (the official Wan2.2 modules)",
        "imageio_ffmpeg": "pip install imageio-ffmpeg==0.8.1 in that env (the mp4 encoder)",
    }
    for name, fix in fixes.items():
        c = checks.get(name)
        if c is not None and not c["ok"]:
            problems.append(Problem("slurm.python", f"{python} cannot import {name}: {c['error']}", fix))
    wmsub_at = checks.get("wmsub", {}).get("detail")
    if wmsub_at and Path(wmsub_at).resolve() != CHECKOUT.resolve():
        problems.append(Problem("slurm.python", f"{python} imports wmsub from {wmsub_at}, not from this "
                                f"checkout {CHECKOUT}", "pip uninstall wmsub in that env (the jobs put "
                                "this checkout on PYTHONPATH), or launch from the checkout it has"))
    torch_ok = checks.get("torch", {}).get("ok")
    if torch_ok and cfg.generate.device != "cpu" and not report.get("torch_cuda"):
        problems.append(Problem(
            "slurm.python", f"{python} has torch {checks['torch']['detail']}, a CPU build; "
            f"generate.device={cfg.generate.device} needs a CUDA build",
            _gen_fix(cfg, "install a CUDA build (pip install torch --index-url "
                          "https://download.pytorch.org/whl/cu124), or set generate.device=cpu "
                          "(tiny test models only)")))
    return problems, info


def _engine_fix(cfg: Config) -> str:
    """How model.engine's module becomes importable in the generation env."""
    if cfg.engine_spec.loader.startswith("wmsub."):
        return f"pip install -e '{CHECKOUT}[gen]' in that env"
    return (f"make model.engine={cfg.model.engine} importable there: pip install its package in "
            "that env, or add `export PYTHONPATH=<its folder>:$PYTHONPATH` to slurm.setup")


def _gen_fix(cfg: Config, what: str = "") -> str:
    head = (f"{what}; or " if what else "") + "set slurm.python to the generation env's interpreter, " \
           f"e.g. /path/to/envs/wan/bin/python ({GEN_ENV})"
    if not cfg.slurm.python:
        head += ("; slurm.python is empty, so the jobs use this launching interpreter "
                 f"({sys.executable}), and a login-node install has no torch")
    return head


def _no_report(cfg: Config, python: str, run: ShellRun, timeout_s: float) -> Problem:
    if run.returncode is None:
        return Problem("slurm.python", f"{python} did not finish importing torch and the wan modules "
                       f"within {timeout_s:.0f} s", f"check that `{python} -c 'import torch'` works "
                       "and is not stuck on a slow filesystem")
    tail = "\n".join((run.stderr or run.stdout).strip().splitlines()[-6:])
    if run.returncode in (126, 127):
        return Problem("slurm.python", f"{python} cannot be run (exit {run.returncode}): {tail}",
                       _gen_fix(cfg))
    if "No module named 'wmsub'" in tail:
        return Problem("slurm.python", f"{python} cannot import wmsub from this checkout: {tail}",
                       f"keep the checkout {CHECKOUT} on a filesystem the jobs see")
    return Problem("slurm.python", f"{python} failed before reporting (exit {run.returncode}): {tail}",
                   _gen_fix(cfg))


def _setup_keys(cfg: Config, judge: bool) -> list[tuple[str, str]]:
    """(key, line) of each setup line a job runs, in order."""
    keyed = [(f"slurm.setup[{i}]", line) for i, line in enumerate(cfg.slurm.setup)]
    if judge:
        keyed += [(f"judge.setup[{i}]", line) for i, line in enumerate(cfg.judge.setup)]
    return keyed


def setup_warnings(keyed: list[tuple[str, str]], failures: list[tuple[int, int]]) -> list[Problem]:
    out = []
    for index, status in failures:
        key, line = keyed[index] if index < len(keyed) else ("slurm.setup", "?")
        if "conda activate" in line:
            fix = ("`conda activate` needs conda's shell hook in a non-interactive shell: put "
                   "`source <conda>/etc/profile.d/conda.sh` in a line before it, or drop it and give "
                   "the env's interpreter by path (slurm.python / judge.python)")
        elif line.strip().startswith("module "):
            fix = ("check the module name (`module avail`); if it exists only on compute nodes, "
                   "confirm with `launch.py check --on-node`")
        else:
            fix = "fix the line or drop it; each line runs on its own, as in the job's batch script"
        out.append(Problem(key, f"`{line}` failed here with exit {status} in a "
                           "non-interactive bash, as the job runs it (the job carries on without it)", fix))
    return out


# ---- the judge interpreter ------------------------------------------------------------------

def judge_statements(evaluation_py: Path) -> list[str]:
    """Every absolute import statement of the judge script, in order, as written (those
    inside functions too: the official script imports `llava` where it loads the judge)."""
    tree = ast.parse(evaluation_py.read_text())
    source = evaluation_py.read_text()
    statements = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level
                                            and node.module != "__future__"):
            text = ast.get_source_segment(source, node)
            if text and text not in statements:
                statements.append(text)
    return statements


_JUDGE_FIXES = {
    "numpy": f"pip install numpy=={JUDGE_NUMPY} in the judge env (VILA needs numpy 1.x; docs/JUDGE.md)",
    "rich": f"pip install rich mmengine numpy=={JUDGE_NUMPY} in the judge env (docs/JUDGE.md)",
    "mmengine": f"pip install rich mmengine numpy=={JUDGE_NUMPY} in the judge env (docs/JUDGE.md)",
    "llava": ("install VILA into the judge env (docs/JUDGE.md). If the error names ps3: VILA's "
              "llava/model/builder.py imports ps3 unconditionally; make that import lazy "
              "(try/except ImportError) in your VILA checkout"),
}


def judge_import_problems(cfg: Config, report: dict, where: str = "") -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) of a JUDGE_IMPORTS report (login or on-node)."""
    python = f"{cfg.judge.python}{where}"
    if "error" in report:
        return [Problem("judge.python", f"{python} could not run: {report['error']}",
                        "give the judge env's interpreter by path, e.g. /path/to/envs/vila/bin/python; "
                        "wmsub calls it directly, so no `conda activate` is needed (it fails in "
                        "non-interactive shells)")], []
    problems = []
    for entry in report.get("imports", []):
        if entry["ok"]:
            continue
        top = re.split(r"[ .]", entry["statement"].split(None, 1)[1])[0]
        fix = _JUDGE_FIXES.get(top, f"install {top} into the judge env")
        where_failed = f" (at {entry['where']})" if entry.get("where") else ""
        problems.append(Problem("judge.python", f"{python} cannot run `{entry['statement']}` from "
                                f"evaluation.py: {entry['error']}{where_failed}", fix))
    warnings = []
    numpy = report.get("numpy")
    if numpy and numpy != JUDGE_NUMPY:
        warnings.append(Problem("judge.python", f"the judge env has numpy {numpy}, not {JUDGE_NUMPY}",
                                f"pip install numpy=={JUDGE_NUMPY} in the judge env (the seed's judge "
                                "ran with it; VILA breaks on numpy 2)"))
    return problems, warnings


def check_judge_interpreter(cfg: Config, python: str, timeout_s: float = INTERPRETER_TIMEOUT_S):
    """(problems, warnings, info) of the judge's imports in `python` (as given), run from
    judge.repo after the judge job's setup lines."""
    statements = judge_statements(Path(cfg.judge.repo) / "evaluation.py")
    run = run_in_job_shell(python, ["-c", JUDGE_IMPORTS, json.dumps(statements)],
                           cfg.slurm.setup + cfg.judge.setup, timeout_s=timeout_s, cwd=cfg.judge.repo)
    warnings = setup_warnings(_setup_keys(cfg, judge=True), run.setup_failures)
    report = run.report
    if report is None:
        why = ("timed out" if run.returncode is None else
               f"exit {run.returncode}: " + " ".join((run.stderr or run.stdout).strip().splitlines()[-4:]))
        report = {"error": why}
    problems, more = judge_import_problems(cfg, report)
    info = {"python": python, "imports tried": len(statements), "numpy": report.get("numpy")}
    return problems, warnings + more, info
