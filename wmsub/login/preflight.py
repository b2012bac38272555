"""Fail before the queue: every check of a setup that would otherwise fail on a compute
node, hours later. `launch.py check` prints them; `run`, `--dry-run` and `resubmit` run
the same `run_checks` and submit nothing when one fails.

Each check returns a `CheckResult`: problems (each naming the key or file, what is wrong
and the fix), warnings of the same shape, and what it found. No torch is imported here:
the interpreters are asked in subprocesses (login/interpreters.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wmsub.config import Config
from wmsub.problems import Problem

NODE_LOCAL = ("/tmp", "/dev/shm", "/var/tmp", "/run")  # each node has its own


@dataclass
class CheckResult:
    """What one check found."""
    name: str  # e.g. "config", "interpreter"
    problems: list[Problem] = field(default_factory=list)  # each one refuses the submit
    warnings: list[Problem] = field(default_factory=list)  # shown, never refusing
    info: dict = field(default_factory=dict)  # what it found: versions, paths, executor
    seconds: float = 0.0
    skipped: str = ""  # why it did not run ("" when it ran)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"name": self.name, "ok": self.ok, "skipped": self.skipped or None,
                "seconds": round(self.seconds, 2), "info": self.info,
                "problems": [p.to_json() for p in self.problems],
                "warnings": [w.to_json() for w in self.warnings]}


@dataclass
class Preflight:
    """Every check's result, in the order they ran."""
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def problems(self) -> list[Problem]:
        return [p for r in self.results for p in r.problems]

    @property
    def warnings(self) -> list[Problem]:
        return [w for r in self.results for w in r.warnings]

    def to_json(self) -> dict:
        return {"ok": self.ok, "problems": [p.to_json() for p in self.problems],
                "warnings": [w.to_json() for w in self.warnings],
                "checks": [r.to_json() for r in self.results]}

    def format(self, verbose: bool = True) -> str:
        lines = []
        if verbose:
            for r in self.results:
                state = "skipped" if r.skipped else ("ok" if r.ok else "FAILED")
                found = r.skipped or ", ".join(f"{k} {v}" for k, v in r.info.items() if _shown(v))
                lines.append(f"  {state:<8}{r.name:<12}{r.seconds:5.1f}s  {found}".rstrip())
        for title, items in (("problem", self.problems), ("warning", self.warnings)):
            if items:
                lines.append(f"{len(items)} {title}{'s' if len(items) != 1 else ''}:")
                lines += [f"  - {p}" for p in items]
        if verbose:
            lines.append("all checks passed" if self.ok else
                         f"{len(self.problems)} problem(s): nothing would be submitted")
        return "\n".join(lines)


def _shown(value) -> bool:
    return value not in (None, "", [], {}) and len(str(value)) < 120


# ---- the checks ------------------------------------------------------------------------------

@dataclass
class Context:
    """What a check may need besides the config."""
    config_path: str | None = None
    force_local: bool = False  # --local
    resubmit: bool = False  # the run folder exists and holds jobs: that is the point
    stages: tuple[str, ...] = ("gen", "judge", "report")  # the jobs about to be submitted
    earlier: list[CheckResult] = field(default_factory=list)  # results of the checks before

    def known(self) -> set[str]:
        """Keys that earlier checks already named (a later check need not say it again)."""
        return {p.key for r in self.earlier for p in r.problems}


def check_config(cfg: Config, ctx: Context) -> CheckResult:
    from wmsub.login.limits import rule_problems, value_problems
    problems, warnings = rule_problems(cfg)
    return CheckResult("config", value_problems(cfg) + problems, warnings,
                       {"file": ctx.config_path or "(defaults)", "engine": cfg.model.engine})


def executor(cfg: Config, ctx: Context) -> str:
    """"slurm" or "local", or "" when sbatch is missing for a Slurm run."""
    if ctx.force_local or cfg.slurm.executor == "local":
        return "local"
    return "slurm" if shutil.which("sbatch") else ""


def check_executor(cfg: Config, ctx: Context) -> CheckResult:
    from wmsub.login.submission import NO_SBATCH
    kind = executor(cfg, ctx)
    if not kind:
        what, _, fix = NO_SBATCH.partition(": ")
        return CheckResult("executor", [Problem("slurm.executor", f"{what} (slurm.executor="
                                                f"{cfg.slurm.executor} submits with it)", fix)],
                           info={"executor": "none"})
    info = {"executor": kind}
    warnings = []
    if kind == "local":
        warnings.append(Problem("slurm.executor", "chunks run here, as local processes: slurm.partition, "
                                "gres and the time limit do not apply", "drop --local / slurm.executor=local "
                                "to submit to Slurm"))
    return CheckResult("executor", [], warnings, info)


def check_paths(cfg: Config, ctx: Context) -> CheckResult:
    problems, warnings = [], []
    slurm = executor(cfg, ctx) != "local"
    for key, fix in (("output.dir", "point output.dir at a folder you can write (videos land in "
                                    "<output.dir>/<stem>.mp4)"),
                     ("run.logs_dir", "point run.logs_dir at a folder you can write")):
        value = getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])
        why = writable_dir_problem(Path(value))
        if why:
            problems.append(Problem(key, f"{value} {why}", fix))
        local = next((p for p in NODE_LOCAL if _under(Path(value), Path(p))), None)
        if slurm and local:
            warnings.append(Problem(key, f"{value} is under {local}, which is local to each node: "
                                    "what a job writes there stays on its node", f"put {key} on a "
                                    "filesystem the login node and the compute nodes share"))
    name = cfg.run.name
    if name and not ctx.resubmit and (Path(cfg.run.logs_dir) / name / "jobs.json").exists():
        problems.append(Problem("run.name", f"the run folder {Path(cfg.run.logs_dir) / name} already "
                                "holds submitted jobs", f"pick another run.name, or continue that run "
                                f"with `python launch.py resubmit --run {name}`"))
    return CheckResult("paths", problems, warnings, {"output.dir": cfg.output.dir})


def writable_dir_problem(path: Path) -> str | None:
    """Why `path` is not, and cannot become, a folder we can write; None when it can."""
    if path.exists():
        if not path.is_dir():
            return "is a file, not a folder"
        return None if os.access(path, os.W_OK | os.X_OK) else "is not writable by you"
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable by you"
    return None


def _under(path: Path, root: Path) -> bool:
    resolved = Path(os.path.abspath(path))
    return resolved == root or root in resolved.parents


def check_checkpoint(cfg: Config, ctx: Context) -> CheckResult:
    import importlib
    from wmsub.engine_specs import import_object
    spec = cfg.engine_spec
    if not spec.checkpoint_check:
        return CheckResult("checkpoint", skipped=f"model.engine={spec.name} declares no checkpoint check")
    inspect_checkpoint = import_object(spec.checkpoint_check, "model.engine's checkpoint_check")
    problems, warnings = inspect_checkpoint(cfg.model.checkpoint_dir)
    # the DiT's config.json, where the layout module can read it (the heads sp divides)
    layout = importlib.import_module(spec.checkpoint_check.partition(":")[0])
    dit_config = getattr(layout, "dit_config", lambda ckpt: None)
    config = dit_config(cfg.model.checkpoint_dir) or {}
    heads, gpus = config.get("num_heads"), cfg.slurm.gpus_per_job
    if cfg.generate.parallel == "sp" and isinstance(heads, int) and gpus > 1 and heads % gpus:
        problems.append(Problem("slurm.gpus_per_job", f"parallel=sp splits the model's {heads} attention "
                                f"heads over the ranks; {gpus} ranks do not divide them",
                                f"use a slurm.gpus_per_job that divides {heads}, or parallel=dp"))
    info = {k: config[k] for k in ("dim", "num_layers", "num_heads") if k in config}
    return CheckResult("checkpoint", problems, warnings, info)


def check_interpreter(cfg: Config, ctx: Context) -> CheckResult:
    from wmsub.login.interpreters import check_generation_interpreter
    problems, warnings, info = check_generation_interpreter(cfg)
    return CheckResult("interpreter", problems, warnings, info)


def check_judge(cfg: Config, ctx: Context) -> CheckResult:
    if not cfg.judge.enabled:
        return CheckResult("judge", skipped="judge.enabled is false")
    from wmsub.login.interpreters import check_judge_interpreter
    from wmsub.score.judge import judge_setup_problems, path_from_here
    problems = judge_setup_problems(cfg)
    if any(p.key in ("judge.python", "judge.repo") for p in problems):
        return CheckResult("judge", problems, info={"imports": "not tried (fix the paths first)"})
    more, warnings, info = check_judge_interpreter(cfg, path_from_here(cfg.judge.python))
    return CheckResult("judge", problems + more, warnings, info)


def check_report(cfg: Config, ctx: Context) -> CheckResult:
    if not (cfg.judge.enabled and cfg.judge.report):
        return CheckResult("report", skipped="no report job (judge.enabled / judge.report)")
    # the report job runs in this interpreter (login/submission.py submits it without python=)
    return CheckResult("report", report_dependency_problems("judge.report"))


def report_dependency_problems(key: str) -> list[Problem]:
    """The report's chart and video-frame modules, missing from this interpreter."""
    from wmsub.score.report import missing_report_modules
    missing = missing_report_modules()
    if not missing:
        return []
    return [Problem(key, f"this interpreter ({sys.executable}) lacks {', '.join(missing)}, which the "
                    "report job needs for its charts and contact sheet",
                    f"pip install {' '.join(missing)} (or the login-node install: pip install -e .)")]


def check_slurm(cfg: Config, ctx: Context) -> CheckResult:
    """`sbatch --test-only` of each job the run would submit: the partition, account, qos,
    gres and resources as Slurm itself reads them, without queueing anything."""
    if executor(cfg, ctx) != "slurm":
        return CheckResult("slurm", skipped="not submitting to Slurm")
    from wmsub.login.submission import sbatch_preview
    from wmsub.state.runs import RunFolder
    stages = [("gen", 1)] if "gen" in ctx.stages else []
    if cfg.judge.enabled and "judge" in ctx.stages:
        stages.append(("judge", cfg.judge.shards))
    if cfg.judge.enabled and cfg.judge.report and "report" in ctx.stages:
        stages.append(("report", 1))
    problems, info = [], {}
    with tempfile.TemporaryDirectory(prefix="wmsub-check-") as tmp:
        run = RunFolder(Path(tmp) / "check")
        for stage, count in stages:
            script = Path(tmp) / f"{stage}.sh"
            script.write_text(sbatch_preview(cfg, run, count, stage))
            proc = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True,
                                  text=True, timeout=60)
            said = " ".join((proc.stderr + proc.stdout).split())
            key = _sbatch_key(said, stage)
            if proc.returncode != 0 and key not in ctx.known():
                problems.append(Problem(key, f"sbatch refuses the {stage} job: "
                                        f"{said}", _SBATCH_FIX))
            info[stage] = "accepted" if proc.returncode == 0 else "refused"
    return CheckResult("slurm", problems, [], info)


_SBATCH_FIX = ("correct the value sbatch names: `sinfo -s` lists partitions, `sinfo -o '%P %G'` "
               "their GPUs, `sacctmgr show assoc user=$USER` your accounts and qos")


def _sbatch_key(said: str, stage: str) -> str:
    """The config key(s) behind an sbatch refusal of the gen, judge or report job."""
    text, gen = said.lower(), stage == "gen"
    if "invalid account" in text:  # "Invalid account or account/partition combination specified"
        return "slurm.account"
    if "partition" in text:
        return {"gen": "slurm.partition", "judge": "judge.partition",
                "report": "judge.report_partition"}[stage]
    for word, key in (("account", "slurm.account"), ("qos", "slurm.qos")):
        if word in text:
            return key
    if "gres" in text or "generic resource" in text:
        return "slurm.gpu_type" if gen else "judge.gpu_type"
    if "mem" in text:
        return "slurm.mem_gb" if gen else "judge.mem_gb"
    if "time limit" in text:
        return "slurm.time_min" if gen else "judge.time_min"
    if "node configuration" in text:
        return ("slurm.gpus_per_job / gpu_type / cpus_per_task / mem_gb" if gen
                else "judge.gpu_type / cpus / mem_gb")
    return "slurm.additional"


def check_benchmark(cfg: Config, ctx: Context) -> CheckResult:
    """The manifest and the output folder, as the planner reads them (`check` only: `run`
    plans anyway and reports these with the other problems)."""
    from wmsub.benchmark.manifest import ManifestError, load_manifest
    from wmsub.login.planner import build_plan, check_output_sizes
    from wmsub.state.store import SettingsMismatch
    try:
        if "output.dir" in ctx.known():  # refused above (a file, say): the manifest alone
            manifest = load_manifest(cfg.bench)
            check_output_sizes(manifest, cfg)
            return CheckResult("benchmark", info={"instances": len(manifest.instances),
                                                  "outputs": "not scanned (output.dir is refused)"})
        plan = build_plan(cfg, preview=True)
    except ManifestError as e:
        return CheckResult("benchmark", [_manifest_problem(p) for p in e.problems])
    except SettingsMismatch as e:
        what, _, fix = str(e).partition("\nfix: ")  # the message carries its own fix
        return CheckResult("benchmark", [Problem("output.dir", what, fix)])
    return CheckResult("benchmark", info={"instances": len(plan.instances), "pending": len(plan.pending),
                                          "chunks": len(plan.chunks)})


def _manifest_problem(line: str) -> Problem:
    what, _, fix = line.partition(" — fix: ")
    return Problem("bench.root", what, fix or "correct that entry of the benchmark file")


CHECKS: dict[str, Callable[[Config, Context], CheckResult]] = {
    "config": check_config, "executor": check_executor, "paths": check_paths,
    "benchmark": check_benchmark, "checkpoint": check_checkpoint, "interpreter": check_interpreter,
    "judge": check_judge, "report": check_report, "slurm": check_slurm,
}


def run_checks(cfg: Config, config_path: str | None = None, *, force_local: bool = False,
               resubmit: bool = False, skip: tuple[str, ...] = (),
               stages: tuple[str, ...] = ("gen", "judge", "report")) -> Preflight:
    """Run every check (but `skip`) and keep going past failures: all problems at once."""
    ctx = Context(config_path, force_local, resubmit, stages=stages)
    results = ctx.earlier
    for name, check in CHECKS.items():
        if name in skip:
            continue
        t0 = time.time()
        try:
            result = check(cfg, ctx)
        except Exception as e:  # noqa: BLE001 - a check that breaks is a problem to show, not a crash
            result = CheckResult(name, [Problem(name, f"the check itself failed: {type(e).__name__}: {e}",
                                                "report this as a wmsub bug")])
        result.seconds = time.time() - t0
        results.append(result)
    return Preflight(results)


def run_judge_checks(cfg: Config, config_path: str | None = None) -> Preflight:
    """The checks before judging an existing run again: only the judge and report jobs are
    submitted, so the generation interpreter, checkpoint and benchmark are not asked."""
    return run_checks(cfg, config_path, resubmit=True, stages=("judge", "report"),
                      skip=("benchmark", "checkpoint", "interpreter"))
