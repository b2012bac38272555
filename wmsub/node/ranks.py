"""The ranks of one chunk job: who they are, which GPU each takes, how they agree, and how
they end when one of them fails.

Everything here runs on the compute node. The worker (worker.py) decides what to make;
this module only moves small objects between ranks and ends processes that cannot finish.
"""
from __future__ import annotations

import os
import signal

import submitit

DESYNC_EXIT_S = 60  # time for submitit to write the failed result before the process ends


class RankDesync(RuntimeError):
    """Ranks of one group disagree after a failure: their collectives can no longer be trusted."""


def global_rank() -> int:
    for name in ("RANK", "SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID"):
        if os.environ.get(name):
            return int(os.environ[name])
    return 0


def rank_gpu(visible: str | None, local_rank: int, job_gpus: str | None = None) -> str:
    """The GPU of local rank `local_rank`, from the task's own CUDA_VISIBLE_DEVICES.

    Slurm hands every task of the job the job's GPU list (e.g. "2,3" on a node without
    device cgroups); a rank that took plain `local_rank` would use GPUs 0 and 1, another
    job's. With per-task binding (`--gpu-bind=single:1`, `--gpus-per-task`) each task's
    list holds its one GPU, narrower than the job's (`job_gpus`, SLURM_JOB_GPUS).
    """
    if not visible:
        return str(local_rank)
    gpus = _ids(visible)
    if local_rank < len(gpus):
        return gpus[local_rank]
    if len(gpus) == 1 and len(_ids(job_gpus)) > 1:
        return gpus[0]
    raise RuntimeError(f"local rank {local_rank} has no GPU of its own: the job's "
                       f"CUDA_VISIBLE_DEVICES={visible} lists {len(gpus)}; ask Slurm for one "
                       "GPU per task (slurm.gpus_per_job = tasks per node)")


def rank_gpu_problem(gpu: str, visible: str | None, allocation: str | None,
                     device_cgroup: bool = False) -> str | None:
    """Why GPU `gpu` is not one of this task's own, or None when it is.

    `visible` is CUDA_VISIBLE_DEVICES as the task started, `allocation` Slurm's list of the
    step's GPUs (SLURM_STEP_GPUS, else SLURM_JOB_GPUS: node-wide indices). Under a device
    cgroup Slurm numbers the task's GPUs from 0, so a list 0..n-1 of the allocation's length
    is the allocation too.
    """
    alloc, seen = _ids(allocation), _ids(visible)
    if not alloc:
        return None if seen else ("Slurm bound no GPU to the task (no SLURM_STEP_GPUS, no "
                                  "CUDA_VISIBLE_DEVICES): the job did not ask for GPUs with --gres")
    relative = [str(i) for i in range(len(alloc))]
    if seen and sorted(seen) != sorted(alloc) and not (device_cgroup and seen == relative):
        return (f"CUDA_VISIBLE_DEVICES={visible} in the task is not the job's allocation "
                f"(Slurm gave GPUs {allocation}): something between Slurm and Python changed it "
                f"(the slurm.python wrapper, the environment's activation); GPU {gpu} may be another job's")
    own = seen or alloc
    if gpu not in own:
        return (f"the rank takes GPU {gpu}, outside its job's allocation {','.join(own)} "
                f"(another job's GPU)")
    return None


def _ids(text: str | None) -> list[str]:
    return [g.strip() for g in (text or "").split(",") if g.strip()]


def export_rank_env(device: str) -> None:
    """torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) from submitit's view of
    the job, and one GPU of the job's own list per rank."""
    if "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        return
    try:
        env = submitit.helpers.TorchDistributedEnvironment()
    except Exception:  # noqa: BLE001 - not under submitit: a single process
        return
    env.export(set_cuda_visible_devices=False)
    if device != "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = rank_gpu(os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                      env.local_rank, os.environ.get("SLURM_JOB_GPUS"))


def is_peer_loss(exc: BaseException) -> bool:
    """A collective that failed because a peer left or timed out, not this rank's own error."""
    import torch.distributed as dist
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return any(mark in text for mark in ("gloo/transport", "NCCL", "ProcessGroup"))


def exit_within(seconds: int) -> None:
    """End this process `seconds` from now, whatever it is doing then.

    Seen on 2 H100s under NCCL: after a desync the rank that survived recorded everything and
    raised, then blocked at exit tearing down the communicator of its dead peer. SIGALRM
    left at its default action ends the process from the kernel, with no Python left to run.
    """
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(seconds)


def broadcast_object(obj, ctx):
    import torch.distributed as dist
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=ctx.control_group)
    return box[0]


def gather_errors(error, ctx) -> list:
    """Every rank's error of the group (None where it had none); [] when nobody failed."""
    if ctx.group_size <= 1:
        return [error] if error else []
    import torch.distributed as dist
    out = [None] * ctx.group_size
    dist.all_gather_object(out, error, group=ctx.control_group)
    return out if any(out) else []


def barrier(ctx):
    if ctx.world_size > 1 and ctx.control_group is not None:
        import torch.distributed as dist
        dist.barrier(group=ctx.control_group)
