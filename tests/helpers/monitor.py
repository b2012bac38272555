"""Run folders built by hand (files only) for status and cancel tests, pointing at real
`sbatch --wrap` jobs (also used by bench/status.py)."""
from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.slurm import run
from wmsub.config import Config
from wmsub.state.jsonio import write_json_atomic
from wmsub.state.runs import PlanRecord, RunFolder

SLURM_WAIT_S = 180  # generous: other tests' jobs may hold the node for a while


# the last line of a failed chunk's log: the exception and its fix
FIX = ("CheckpointError: model.checkpoint_dir /tmp/x/no-such-ckpt does not exist — fix: point "
       "model.checkpoint_dir at the folder holding the official Wan2.2-TI2V-5B files "
       "(diffusion_pytorch_model*.safetensors, Wan2.2_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth)")


def fake_traceback(frames: int) -> str:
    """A Python traceback of `frames` frames ending in FIX, as a failed chunk's log holds."""
    lines = ["Traceback (most recent call last):"]
    for k in range(frames):
        lines += [f'  File "/site-packages/wmsub/node/module_{k}.py", line {10 + k}, in step_{k}',
                  f"    result = call_{k}(argument)", "             ^^^^^^^^^^^^^^^^"]
    return "\n".join(lines + [FIX])


def make_run(root: Path, chunks: dict[int, list[str]], jobs: list[dict], *,
             output_dir: str | None = None, gpus: int = 2) -> RunFolder:
    cfg = Config()
    cfg.output.dir = output_dir or str(root / "outputs")
    cfg.slurm.gpus_per_job = gpus
    run = RunFolder(root / "logs" / "run-test")
    run.save_config(cfg)
    (run.path / "submitit").mkdir(parents=True, exist_ok=True)
    stems = [s for i in sorted(chunks) for s in chunks[i]]
    run.save_plan(PlanRecord(stems=stems, chunks=[
        {"index": i, "stems": chunks[i], "est_s": 90.0 * len(chunks[i])} for i in sorted(chunks)]))
    write_json_atomic(run.path / "jobs.json", jobs)
    return run


def gen_entry(master: str, chunk_indices: list[int], executor: str = "slurm") -> dict:
    return {"stage": "gen", "executor": executor, "job_id": master,
            "tasks": {str(i): f"{master}_{i}" for i in chunk_indices},
            "chunks": chunk_indices, "submitted_at": time.time()}


def local_run(root: Path, chunks: dict[int, list[str]], **kw) -> RunFolder:
    """A run folder whose generation job ran with the local executor (job 4242)."""
    return make_run(root, chunks, [gen_entry("4242", list(chunks), executor="local")], **kw)


def write_record(run: RunFolder, index: int, stems: list[str], **fields) -> None:
    now = time.time()
    record = {"chunk": index, "job_id": None, "total": len(stems), "stems": stems,
              "state": "running", "current": None, "done": [], "failed": {}, "skipped": [],
              "restarts": 0, "timeouts": 0, "preemptions": 0, "started_at": now,
              "updated_at": now, "videos": [], "error": None}
    record.update(fields)
    write_json_atomic(run.chunk_record(index), record)


def make_done(outputs: Path, stem: str) -> None:
    (outputs / ".wmsub" / "records").mkdir(parents=True, exist_ok=True)
    (outputs / f"{stem}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (outputs / ".wmsub" / "records" / f"{stem}.json").write_text('{"stem": "%s"}' % stem)


def sbatch(*args: str) -> str:
    return run(["sbatch", "--parsable", *args]).strip().split(";")[0]


def scancel_quietly(*job_ids: str) -> None:
    run(["scancel", *job_ids], check=False)


def build_350_in_35(root: Path, master: str) -> tuple[RunFolder, float, int]:
    """A run of 350 instances in 35 chunks, 300 done (also used by bench/status.py);
    returns the run folder, its `now` and the videos finished in the last hour."""
    chunks = {i: [f"{i:02d}-{k}.{k}" for k in range(10)] for i in range(35)}
    # relative output.dir: resolved against the folder holding logs/
    run_folder = make_run(root, chunks, [gen_entry(master, list(range(35)))], output_dir="outputs")
    now = time.time()
    outputs = root / "outputs"
    for i, stems in chunks.items():
        finished = stems[:9] if i < 30 else stems[:6]  # 270 + 30 = 300 done
        for stem in finished:
            make_done(outputs, stem)
        # one video every 4 minutes per chunk, the newest just now: 15 per chunk in the
        # last hour at most, but only the ones listed here count
        videos = [{"stem": s, "seconds": 90.0, "s_per_step": 1.5,
                   "finished_at": now - 240 * (len(finished) - k)} for k, s in enumerate(finished)]
        write_record(run_folder, i, stems, done=finished, videos=videos,
                     started_at=now - 7200, current=stems[len(finished)])
    in_last_hour = sum(1 for i, stems in chunks.items()
                       for k in range(9 if i < 30 else 6)
                       if 240 * ((9 if i < 30 else 6) - k) <= 3600)
    return run_folder, now, in_last_hour
