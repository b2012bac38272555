"""Submitting a run: the generation job array, then optional judge and report jobs.

Runs on a login node: no torch here. The chunk worker is pickled by reference
(`wmsub.node.worker.ChunkWorker`) and imported on the compute node by `slurm.python`.
"""
from __future__ import annotations

import re
import shlex
import shutil
import sys
import time
import zlib
from pathlib import Path

import submitit

from wmsub import CHECKOUT as REPO_ROOT
from wmsub.benchmark.manifest import load_manifest
from wmsub.config import Config
from wmsub.login import slurm_query as sq
from wmsub.node.worker import ChunkWorker
from wmsub.state.claims import same_process_space
from wmsub.state.runs import RunFolder
from wmsub.state.store import OutputStore


NO_SBATCH = "sbatch not found: load Slurm, or pass --local"


def executor_kind(cfg: Config, force_local: bool = False) -> str:
    """"local" only when asked for (--local or slurm.executor=local): `auto` without sbatch
    refuses, since running the chunks here would load the model on a login node."""
    if force_local or cfg.slurm.executor == "local":
        return "local"
    if not shutil.which("sbatch"):
        raise RuntimeError(f"{NO_SBATCH} (slurm.executor={cfg.slurm.executor})")
    return "slurm"


def job_setup_lines(extra: list[str]) -> list[str]:
    # The job imports wmsub from this checkout: the compute node sees the same shared FS.
    # Quoted: a checkout path may hold spaces.
    return [*extra, f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"]


# ---- job names ------------------------------------------------------------------------------

STAGE_TAGS = {"gen": "gen", "judge": "jdg", "report": "rep"}
# squeue's default NAME column is 8 wide: this format prints the whole job name.
SQUEUE_FORMAT = "%.18i %.9P %.60j %.8T %.10M %.4r %R"


def short_run_id(run_name: str) -> str:
    """4 hex digits derived from the run name: the same run always gets the same id."""
    return f"{zlib.crc32(run_name.encode()) & 0xFFFF:04x}"


def job_name(run_name: str, stage: str) -> str:
    """`<id>-<stage>.<run name>`, e.g. `3fa2-gen.smoke-20261130-101010`: the first 8
    characters (all squeue shows by default) tell runs and stages apart."""
    return f"{short_run_id(run_name)}-{STAGE_TAGS[stage]}.{run_name}"


def _python_command(python: str) -> str | None:
    """slurm.python as one shell word (a path may hold spaces); None: the launching one."""
    return shlex.quote(python) if python else None


def _slurm_common(cfg: Config) -> dict:
    s = cfg.slurm
    params = {}
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        value = getattr(s, key)
        if value:
            params[key] = value
    return params


def generation_executor(cfg: Config, run: RunFolder, kind: str):
    s = cfg.slurm
    gpus = s.gpus_per_job
    if kind == "local":
        ex = submitit.LocalExecutor(folder=run.submitit_dir, max_num_timeout=s.max_timeout_requeues,
                                    python=_python_command(s.python))
        # Local "GPUs" are only a count: on a CPU-only machine gpus_per_node must stay 0.
        ex.update_parameters(timeout_min=s.time_min, tasks_per_node=gpus, nodes=1,
                             gpus_per_node=0, cpus_per_task=1)
        return ex
    ex = submitit.SlurmExecutor(folder=run.submitit_dir, max_num_timeout=s.max_timeout_requeues,
                                python=_python_command(s.python))
    ex.update_parameters(**_generation_sbatch_params(cfg, run))
    return ex


def _generation_sbatch_params(cfg: Config, run: RunFolder) -> dict:
    s = cfg.slurm
    gpus = s.gpus_per_job
    additional = {"requeue": True} if s.requeue else {}
    additional.update(s.additional)
    # a rank that exits with an error ends its peers at once instead of leaving them in a
    # collective that cannot complete (the failure bound, node/ranks.failure_bound_s)
    return dict(job_name=job_name(run.name, "gen"), nodes=1, ntasks_per_node=gpus,
                gres=_gres(s.gpu_type, gpus), cpus_per_task=s.cpus_per_task, mem=f"{s.mem_gb}GB",
                time=s.time_min, signal_delay_s=s.signal_delay_s,
                array_parallelism=s.array_parallelism, setup=job_setup_lines(s.setup),
                additional_parameters=additional,
                srun_args=["--kill-on-bad-exit=1", *s.srun_args],
                **_slurm_common(cfg))


CHECK_TIME_MIN = 10


def on_node_check_executor(cfg: Config, run: RunFolder):
    """The on-node check job: the generation job's shape (partition, gres, tasks, setup
    lines, interpreter, slurm.additional), a short time limit, no array, no requeue."""
    s = cfg.slurm
    params = _generation_sbatch_params(cfg, run)
    params.pop("array_parallelism")
    params["additional_parameters"].pop("requeue", None)
    params.update(job_name=run.name, time=min(s.time_min, CHECK_TIME_MIN),
                  signal_delay_s=min(s.signal_delay_s, CHECK_TIME_MIN * 60 // 2))
    ex = submitit.SlurmExecutor(folder=run.submitit_dir, max_num_timeout=0,
                                python=_python_command(s.python))
    ex.update_parameters(**params)
    return ex


def _gres(gpu_type: str, gpus: int) -> str:
    return f"gpu:{gpu_type}:{gpus}" if gpu_type else f"gpu:{gpus}"


REPORT_TIME_MIN = 30


def _stage_sbatch_params(cfg: Config, run: RunFolder, stage: str, dependency: str | None) -> dict:
    """sbatch parameters of a judge or report job: slurm.additional applies to them too; the
    judge takes one GPU (of judge.gpu_type, else slurm.gpu_type) on judge.partition, the
    report no GPU, on judge.report_partition when set (a CPU partition will do)."""
    j = cfg.judge
    params = _slurm_common(cfg)
    partition = (j.report_partition or j.partition) if stage == "report" else j.partition
    if partition:
        params["partition"] = partition
    if stage == "judge":
        params["gres"] = _gres(j.gpu_type or cfg.slurm.gpu_type, 1)
    if dependency:
        params["dependency"] = dependency
    extra = {**cfg.slurm.additional, "kill-on-invalid-dep": "yes"}
    return dict(job_name=job_name(run.name, stage), nodes=1, ntasks_per_node=1,
                cpus_per_task=j.cpus, mem=f"{j.mem_gb}GB",
                time=j.time_min if stage == "judge" else REPORT_TIME_MIN,
                setup=job_setup_lines(cfg.slurm.setup + j.setup), additional_parameters=extra,
                **params)


def _stage_executor(cfg: Config, run: RunFolder, stage: str, dependency: str | None):
    ex = submitit.SlurmExecutor(folder=run.submitit_dir, max_num_timeout=0)
    ex.update_parameters(**_stage_sbatch_params(cfg, run, stage, dependency))
    return ex


def chunk_workers(run: RunFolder, plan) -> list[ChunkWorker]:
    return [ChunkWorker(str(run.path), c.index, list(c.instances)) for c in plan.chunks]


def submit_generation(cfg: Config, run: RunFolder, workers: list[ChunkWorker], kind: str) -> dict:
    ex = generation_executor(cfg, run, kind)
    with ex.batch():
        jobs = [ex.submit(w) for w in workers]
    master = jobs[0].job_id.split("_")[0] if jobs else ""
    entry = {"stage": "gen", "executor": kind, "job_id": master,
             "tasks": {str(w.chunk_index): j.job_id for w, j in zip(workers, jobs)},
             "chunks": [w.chunk_index for w in workers], "submitted_at": time.time()}
    run.add_job(entry)
    return entry, jobs


def wait_for_jobs(jobs, kind: str, poll_s: float = 3.0) -> None:
    """Block until every job has left the queue (requeues included)."""
    if kind == "local":
        while not all(j.done() for j in jobs):
            time.sleep(poll_s)
        return
    # squeue, not sacct: a requeued task is back in the queue, and it answers without
    # the accounting database
    ids = sorted({j.job_id.split("_")[0] for j in jobs})
    while True:
        queue, error = sq.query_squeue(ids, all_states=False)
        if error is None and not queue:
            return
        time.sleep(poll_s)


def run_slurm_ids(run: RunFolder) -> list[str]:
    """The Slurm job ids of every stage of the run (array masters), oldest first."""
    return list(dict.fromkeys(str(e["job_id"]) for e in run.jobs()
                              if e.get("job_id") and e.get("executor", "slurm") == "slurm"))


def wait_for_run(run: RunFolder, poll_s: float = 3.0) -> None:
    """Block until no job of the run (generation, judge, report) is in the queue."""
    ids = run_slurm_ids(run)
    while ids:
        queue, error = sq.query_squeue(ids, all_states=False)
        if error is None and not queue:
            return
        time.sleep(poll_s)


def submit_judge_and_report(cfg: Config, run: RunFolder, after_job: str,
                            shard_ids: list[int] | None = None) -> list[dict]:
    """Judge shards after the whole generation array, then the report after the shards.

    `afterany` (not `afterok`): a failed chunk must not leave the judge pending forever; the
    judge then scores the videos that exist and the report flags the missing ones.
    `shard_ids` (`launch.py judge`): judge only these shards of the existing shards.json
    (none: only the report); `after_job` may then be empty or several ids joined by ':'.
    """
    from wmsub.score import judge  # judge/report need no torch either

    if shard_ids is None:
        plan = run.load_plan()
        shards = judge.write_shards_file(run.path, cfg, plan.stems, plan.domains or None)["shards"]
        shard_ids = list(range(len(shards)))
    entries = []
    dep = f"afterany:{after_job}" if after_job else None
    judge_master = ""
    if shard_ids:
        ex = _stage_executor(cfg, run, "judge", dep)
        jobs = ex.map_array(judge.run_shard, [str(run.path)] * len(shard_ids), shard_ids)
        judge_master = jobs[0].job_id.split("_")[0]
        entries.append({"stage": "judge", "job_id": judge_master, "executor": "slurm",
                        "tasks": {str(i): j.job_id for i, j in zip(shard_ids, jobs)},
                        "submitted_at": time.time()})
        run.add_job(entries[-1])
    if cfg.judge.report:
        from wmsub.score import report
        rdep = f"afterany:{judge_master}" if judge_master else dep
        rex = _stage_executor(cfg, run, "report", rdep)
        rjob = rex.submit(report.run_report, str(run.path))
        entries.append({"stage": "report", "job_id": rjob.job_id, "executor": "slurm",
                        "tasks": {}, "submitted_at": time.time()})
        run.add_job(entries[-1])
    return entries


def sbatch_preview(cfg: Config, run: RunFolder, n_tasks: int, stage: str = "gen",
                   dependency: str | None = None) -> str:
    """The exact sbatch script submitit would write for the generation array (`n_tasks`
    chunks), the judge array (`n_tasks` shards) or the report job (a single job), after
    `dependency` when given.

    Built from the same parameters as the executors, without a SlurmExecutor, which
    refuses to exist where there is no srun (a dry run may happen anywhere).
    """
    if stage == "gen":
        return _preview(run, _python_command(cfg.slurm.python), max(n_tasks, 1),
                        _generation_sbatch_params(cfg, run))
    map_count = None if stage == "report" else max(n_tasks, 1)
    return _preview(run, None, map_count, _stage_sbatch_params(cfg, run, stage, dependency))


def _preview(run: RunFolder, python: str | None, map_count: int | None, params: dict) -> str:
    # submitit's private script builder, used here alone: the preview must be the very
    # script SlurmExecutor writes. tests/unit/test_structure.py fails loudly if submitit
    # renames it or its parameters.
    from submitit.slurm.slurm import _make_sbatch_string
    python = python or shlex.quote(sys.executable)  # as SlurmExecutor does
    command = " ".join([python, "-u -m submitit.core._submit", shlex.quote(str(run.submitit_dir))])
    return _make_sbatch_string(command=command, folder=run.submitit_dir, map_count=map_count,
                               **params)


def resubmit_workers(run: RunFolder, cfg: Config) -> list[ChunkWorker]:
    """The run's chunks again, each with only its stems that are missing or failed.

    Chunk indices stay the same, so each chunk's progress record carries on.
    """
    manifest = load_manifest(cfg.bench)
    store = OutputStore.for_config(cfg)
    store.check_settings()
    workers = []
    for chunk in run.load_plan().chunks:
        todo = [manifest.by_stem[s] for s in chunk["stems"] if not store.is_done(s)]
        for inst in todo:
            store.clear_failure(inst.stem)  # a resubmit gives failed instances fresh attempts
        if todo:
            workers.append(ChunkWorker(str(run.path), chunk["index"], todo))
    return workers


# ---- cancel ----------------------------------------------------------------------------

CANCEL_WAIT_S = 60.0


SLURM_JOB_ID = re.compile(r"^\d+(_\d+)?$")  # "A" or "A_i"; never "pid123" or a local id


def claims_of_ended_jobs(claims: dict[str, dict], queue: dict[str, sq.JobInfo]) -> dict[str, str]:
    """{stem: job id} of the live-looking claims whose Slurm job is not in `queue` (squeue's
    pending, running and completing jobs). A claim made on this host is left to the pid
    check (a local executor's job ids are pids); only claims from other nodes are judged."""
    active = set(queue) | {j.raw_id for j in queue.values()}
    ended = {}
    for stem, info in claims.items():
        owner = str(info.get("job_id") or (info.get("owner") or {}).get("job_id") or "")
        if same_process_space(info):
            continue
        if SLURM_JOB_ID.match(owner) and owner not in active:
            ended[stem] = owner
    return ended


def release_claims_of_ended_jobs(cfg: Config) -> dict[str, str]:
    """Release the output claims held by Slurm jobs that have ended ({stem: job id}).

    A job killed by a plain `scancel`, a node failure or an OOM cannot release its claim,
    and on another node the planner cannot see that its process is gone: without this, a
    relaunch would leave those stems to the dead job until output.claim_ttl_s runs out.
    Nothing is released when squeue cannot answer.
    """
    store = OutputStore.for_config(cfg)
    claims = store.claims.live_claims() if store.claims.dir.is_dir() else {}
    owners = sorted({str(i.get("job_id") or "") for i in claims.values()} - {""})
    slurm_owners = [o for o in owners if SLURM_JOB_ID.match(o)]
    if not slurm_owners or shutil.which("squeue") is None:
        return {}
    queue, error = sq.query_squeue(sorted({o.split("_")[0] for o in slurm_owners}), all_states=False)
    if error is not None:
        return {}
    ended = claims_of_ended_jobs(claims, queue)
    released = set(store.claims.release_owned_by(set(ended.values())))
    return {stem: job for stem, job in ended.items() if stem in released}


def cancel_run(run_dir: Path, *, wait_s: float = CANCEL_WAIT_S, poll_s: float = 0.5) -> dict:
    """scancel every job of the run (all stages, pending dependents too), wait until squeue
    lists none of them, then release the output claims those jobs held.

    Finished videos and sidecars are never touched; temp files of killed writers are
    removed by the store's rule (no live writer, no live claim). Claims of other runs
    (other job ids) are left alone.
    """
    run = RunFolder(Path(run_dir).resolve())
    cfg = run.load_config()
    jobs = run.jobs()
    slurm_ids = list(dict.fromkeys(str(e["job_id"]) for e in jobs
                                   if e.get("job_id") and e.get("executor", "slurm") == "slurm"))
    # Claims name "A_i" (or a single job's id); the raw ids of array tasks also count.
    before, _ = sq.query_squeue(slurm_ids)
    run_job_ids = set(slurm_ids) | {t for e in jobs for t in (e.get("tasks") or {}).values()}
    run_job_ids |= set(before) | {j.raw_id for j in before.values()}
    rc, err = sq.scancel(slurm_ids)
    started = time.monotonic()
    remaining: list[str] = []
    while slurm_ids:
        queue, error = sq.query_squeue(slurm_ids, all_states=False)
        remaining = sorted(queue) if error is None else [f"squeue failed: {error}"]
        if not remaining or time.monotonic() - started > wait_s:
            break
        time.sleep(poll_s)
    released, removed_temps = [], []
    if not remaining:  # a job still queued may still write: leave its claims and temps alone
        store = OutputStore.for_config(cfg, run.output_dir(cfg))
        released = store.claims.release_owned_by(run_job_ids, set(slurm_ids))
        # the store's own rule: a temp goes only when no live writer or live claim owns it
        removed_temps = store.remove_stale_temps() if store.dir.is_dir() else []
    local = [str(e.get("job_id")) for e in jobs if e.get("executor", "slurm") != "slurm"]
    return {"run": run.name, "job_ids": slurm_ids, "scancel_rc": rc, "scancel_error": err or None,
            "not_cancelled_local_jobs": local,
            "waited_s": round(time.monotonic() - started, 1), "still_queued": remaining,
            "released_claims": released, "removed_temps": removed_temps}
