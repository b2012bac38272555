"""`launch.py check --on-node`: one short job shaped like a generation chunk (partition,
gres, tasks, setup lines, interpreter), whose ranks report what a chunk would meet there
(wmsub/node/probe.py): each rank's GPU, distinct and inside the job's allocation; the
process group and one all-reduce; free GPU memory against the model's need; writing to
`output.dir`; the judge's imports when the judge is on.

The job's folder is `<run.logs_dir>/checks/<name>/` (submitit's files and result.json);
`<run.logs_dir>/checks/LATEST` names the newest, which `status` shows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from wmsub.config import Config
from wmsub.engine_specs import BUILT_IN
from wmsub.problems import Problem
from wmsub.state.jsonio import read_json, write_json_atomic, write_text_atomic
from wmsub.state.runs import RunFolder

CHECKS_DIR = "checks"
DIST_TIMEOUT_S = 60  # the check's collectives: a peer that never joins fails the check
POLL_S = 2.0
# umt5-xxl in bf16, which both built-ins use: what generate.offload_t5 frees. Each engine's
# own peak is its spec's gpu_memory_gb.
T5_GB = 11.4


@dataclass
class OnNodeResult:
    """What the on-node check job found."""
    job_id: str
    folder: str  # <logs>/checks/<name>
    state: str  # the job's end state, or why it has none ("still queued after ...")
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    ranks: list[dict] = field(default_factory=list)  # each rank's report (node/probe.py)
    finished_at: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"ok": self.ok, "job_id": self.job_id, "folder": self.folder, "state": self.state,
                "finished_at": self.finished_at, "problems": [p.to_json() for p in self.problems],
                "warnings": [w.to_json() for w in self.warnings], "ranks": self.ranks}

    def format(self) -> str:
        lines = [f"on-node check: job {self.job_id} ({self.state}), saved in {self.folder}/result.json"]
        for r in self.ranks:
            dist = r.get("dist") or {}
            mem = r.get("memory") or {}
            lines.append(f"  rank {r.get('rank')} on {r.get('host')}: GPU {r.get('gpu')} "
                         f"(job's GPUs {r.get('allocation') or r.get('visible') or '-'})"
                         + (f", all-reduce {'ok' if dist.get('ok') else 'FAILED'} over "
                            f"{dist.get('world_size', '?')} ranks ({dist.get('backend', '-')})" if dist else "")
                         + (f", {mem['free_gb']} of {mem['total_gb']} GB free" if "free_gb" in mem else ""))
        for title, items in (("problem", self.problems), ("warning", self.warnings)):
            if items:
                lines.append(f"{len(items)} {title}{'s' if len(items) != 1 else ''} on the node:")
                lines += [f"  - {p}" for p in items]
        lines.append("on-node check passed" if self.ok else "on-node check FAILED")
        return "\n".join(lines)


def run_on_node_check(cfg: Config, *, timeout_s: float = 900.0, echo: bool = True) -> OnNodeResult:
    from wmsub.login import slurm_query as sq
    from wmsub.login.submission import on_node_check_executor
    from wmsub.node.probe import on_node_probe
    logs = Path(cfg.run.logs_dir)
    name = f"check-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    run = RunFolder((logs / CHECKS_DIR / name).resolve())
    run.path.mkdir(parents=True, exist_ok=True)
    job = on_node_check_executor(cfg, run).submit(on_node_probe, probe_spec(cfg))
    if echo:
        print(f"on-node check: job {job.job_id} submitted ({cfg.slurm.gpus_per_job} task(s), "
              f"partition {cfg.slurm.partition or '(default)'}), waiting up to {timeout_s:.0f} s",
              flush=True)
    started, said = time.monotonic(), ""
    while True:
        queue, error = sq.query_squeue([job.job_id], all_states=False)
        info = queue.get(job.job_id)
        if error is None and info is None:
            break
        if time.monotonic() - started > timeout_s:
            sq.scancel([job.job_id])
            result = OnNodeResult(job.job_id, str(run.path), f"still queued after {timeout_s:.0f} s",
                                  [Problem("slurm.partition", f"the check job {job.job_id} did not run "
                                           f"within {timeout_s:.0f} s ({info.slurm_state if info else error}"
                                           f"{', ' + info.reason if info and info.reason else ''}); it was "
                                           "cancelled", "run it again with a longer --timeout, or pick a "
                                           "partition with free GPUs")])
            return _save(result, run.path)
        now = f"{info.slurm_state} {info.reason}".strip() if info else ""
        if echo and now and now != said:
            print(f"  job {job.job_id}: {now}", flush=True)
            said = now
        time.sleep(POLL_S)
    return _save(evaluate(cfg, job), run.path)


def probe_spec(cfg: Config) -> dict:
    spec = {"device": cfg.generate.device, "dist_timeout_s": DIST_TIMEOUT_S,
            "engine": cfg.engine_spec.loader,
            "output_dir": str(Path(cfg.output.dir).resolve()), "judge": None}
    if cfg.judge.enabled:
        from wmsub.login.interpreters import judge_statements
        from wmsub.score.judge import path_from_here
        spec["judge"] = {"python": path_from_here(cfg.judge.python), "repo": cfg.judge.repo,
                         "statements": judge_statements(Path(cfg.judge.repo) / "evaluation.py")}
    return spec


def evaluate(cfg: Config, job) -> OnNodeResult:
    """The job's per-rank reports, judged: the problems a chunk would meet."""
    state = _end_state(job)
    try:
        ranks = job.results()
    except Exception as e:  # noqa: BLE001 - no result at all: the interpreter or the job failed
        tail = "\n".join(_log_tail(job))
        what = f"the check job {job.job_id} ended {state} without a result: {type(e).__name__}: " \
               f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        return OnNodeResult(job.job_id, "", state, [Problem(
            "slurm.python", what + (f"\n    last lines of its log:\n    {tail}" if tail else ""),
            "the job's interpreter could not run wmsub's probe (it needs submitit and wmsub's "
            "dependencies): run `launch.py check` (without --on-node) for the login-side view")])
    ranks = sorted((r for r in ranks if isinstance(r, dict)), key=lambda r: r.get("rank", 0))
    result = OnNodeResult(job.job_id, "", state, ranks=ranks)
    result.problems, result.warnings = rank_problems(cfg, ranks)
    return result


def rank_problems(cfg: Config, ranks: list[dict]) -> tuple[list[Problem], list[Problem]]:
    from wmsub.login.interpreters import interpreter_problems, judge_import_problems
    problems, warnings = [], []
    want = cfg.slurm.gpus_per_job
    if len(ranks) != want:
        problems.append(Problem("slurm.gpus_per_job", f"the job ran {len(ranks)} rank(s), not {want}",
                                "check slurm.additional for flags that change the task count"))
    seen: dict[str, int] = {}
    env_problems: dict[Problem, list[str]] = {}  # the same import fails on every rank: say it once
    for r in ranks:
        if r.get("gpu_problem"):
            problems.append(Problem("slurm.gpus_per_job", f"rank {r.get('rank')} on {r.get('host')}: "
                                    f"{r['gpu_problem']}", "let Slurm bind the GPUs (--gres, as wmsub asks) "
                                    "and do not set CUDA_VISIBLE_DEVICES in slurm.setup, the environment "
                                    "or a slurm.python wrapper"))
        identity = (r.get("dist") or {}).get("uuid") or f"{r.get('host')}:{r.get('gpu')}"
        if r.get("gpu") is not None and identity in seen:
            problems.append(Problem("slurm.gpus_per_job", f"ranks {seen[identity]} and {r.get('rank')} "
                                    f"both take GPU {r.get('gpu')} on {r.get('host')}",
                                    "ask Slurm for one GPU per task (slurm.gpus_per_job = tasks per node)"))
        seen.setdefault(identity, r.get("rank"))
        for p in interpreter_problems(cfg, r.get("interpreter") or {})[0]:
            env_problems.setdefault(p, []).append(f"{r.get('rank')} on {r.get('host')}")
        dist = r.get("dist")
        if dist is not None and not dist.get("ok"):
            problems.append(Problem("generate.dist_timeout_s", f"rank {r.get('rank')} on {r.get('host')}: "
                                    f"process group / all-reduce failed: {dist.get('error') or dist}",
                                    "check that the ranks reach each other (MASTER_ADDR/PORT, firewall, "
                                    "NCCL_SOCKET_IFNAME in slurm.setup)"))
        output = r.get("output") or {}
        if not output.get("ok"):
            problems.append(Problem("output.dir", f"{output.get('path')} is not writable from "
                                    f"{r.get('host')}: {output.get('error')}", "put output.dir on a "
                                    "filesystem the compute nodes mount read-write"))
        problems += _memory_problems(cfg, r, warnings)
        if "judge" in r:
            more, warn = judge_import_problems(cfg, r["judge"], f" on {r.get('host')}")
            problems += more
            warnings += warn
    problems += [Problem(p.key, f"{p.what} (rank {', '.join(where)})", p.fix)
                 for p, where in env_problems.items()]
    return problems, warnings


def memory_need_gb(cfg: Config) -> float:
    """model.engine's measured peak on one GPU; 0 when the engine states none."""
    need = cfg.engine_spec.gpu_memory_gb
    if need and cfg.model.engine in BUILT_IN and cfg.generate.offload_t5:
        need -= T5_GB
    return need


def _memory_problems(cfg: Config, r: dict, warnings: list[Problem]) -> list[Problem]:
    from wmsub.node.engines.layout import DIMS_FILE
    mem = r.get("memory")
    if not mem or "free_gb" not in mem or (Path(cfg.model.checkpoint_dir) / DIMS_FILE).is_file():
        return []  # CPU ranks, or a tiny test model
    need = memory_need_gb(cfg)
    if not need or mem["free_gb"] >= need:  # an engine that states no peak is not checked
        return []
    what = (f"rank {r.get('rank')} on {r.get('host')}: {mem['free_gb']} GB free on its GPU "
            f"({mem.get('name')}), the model needs ~{need:g} GB "
            f"({cfg.model.engine}'s figure, docs/ENGINES.md)")
    fix = "pick GPUs with more memory (slurm.gpu_type), or generate.offload_t5=true (-11.4 GB)"
    if cfg.generate.parallel == "sp" and cfg.slurm.gpus_per_job > 1:
        # sp shards the model over the ranks: the single-GPU figure is an upper bound
        warnings.append(Problem("slurm.gpu_type", what + " on one GPU; sp shards it, so it may fit", fix))
        return []
    return [Problem("slurm.gpu_type", what, fix)]


def _end_state(job) -> str:
    try:
        return str(job.state)
    except Exception:  # noqa: BLE001
        return "unknown"


def _log_tail(job, lines: int = 8) -> list[str]:
    try:
        text = Path(job.paths.stderr).read_text(errors="replace")
    except OSError:
        return []
    return text.strip().splitlines()[-lines:]


def _save(result: OnNodeResult, folder: Path) -> OnNodeResult:
    result.folder = str(folder)
    result.finished_at = time.time()
    write_json_atomic(folder / "result.json", result.to_json())
    write_text_atomic(folder.parent / "LATEST", folder.name + "\n")
    return result


def latest_check(logs_dir: str | Path) -> dict | None:
    """The newest on-node check's result.json under `logs_dir` (for `status`), or None."""
    checks = Path(logs_dir) / CHECKS_DIR
    try:
        name = (checks / "LATEST").read_text().strip()
    except OSError:
        return None
    return read_json(checks / name / "result.json")
