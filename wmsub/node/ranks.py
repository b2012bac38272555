"""The ranks of one chunk job: who they are, which GPU each takes, how they agree, and how
they end when one of them fails.

Everything here runs on the compute node. The worker (worker.py) decides what to make;
this module only moves small objects between ranks and ends processes that cannot finish.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
from typing import Callable

import submitit

log = logging.getLogger("wmsub.node.ranks")

# After a rank's own failure mid-video its peers may sit inside an engine collective until
# generate.dist_timeout_s; they then reach the error exchange within this much more.
EXCHANGE_SLACK_S = 30
# From giving up (failure recorded) to the end of the process: submitit writes its result,
# then an atexit hook ends the process before the NCCL teardown, which blocked on 2 H100s.
DESYNC_EXIT_S = 15
DESYNC_EXIT_CODE = 3


def failure_bound_s(dist_timeout_s: int) -> int:
    """The chunk's stated bound: seconds from one rank's own failure mid-video until every
    rank of its group (on one host) has ended, whatever blocks.

    The failing rank arms an ExitDeadline of dist_timeout_s + EXCHANGE_SLACK_S before its
    first call that can block; at expiry it records why, ends its peers on this host and
    exits, and a SIGALRM DESYNC_EXIT_S later ends it even if no Python can run. A peer
    inside a collective is ended by that, by NCCL's watchdog (dist_timeout_s) or, under
    Slurm, by srun --kill-on-bad-exit once the failing rank has exited.
    """
    return dist_timeout_s + EXCHANGE_SLACK_S + DESYNC_EXIT_S


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


def exit_before_teardown(code: int = DESYNC_EXIT_CODE) -> None:
    """End the process with `code` as soon as the interpreter starts to exit: after submitit
    has written its result (atexit runs first), before the process groups are torn down."""
    atexit.register(os._exit, code)


class ExitDeadline:
    """Ends this process `seconds` from now unless cancelled.

    At expiry a thread runs `last_words` (record why, end the peers) and calls os._exit; a
    SIGALRM at its default action DESYNC_EXIT_S later ends the process even when the main
    thread holds the interpreter in a blocked C call. Armed by the main thread.
    """

    def __init__(self, seconds: float, last_words: Callable[[], None]):
        self.seconds = seconds
        self._last_words = last_words
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def arm(self) -> "ExitDeadline":
        exit_within(int(self.seconds) + DESYNC_EXIT_S)
        self._timer.start()
        return self

    def cancel(self) -> None:
        """The group answered: nothing to end (the alarm goes too)."""
        self._timer.cancel()
        signal.alarm(0)

    def disarm_timer(self) -> None:
        """Leave the ending to the caller, keeping the alarm as the backstop."""
        self._timer.cancel()

    def _expire(self) -> None:
        try:
            self._last_words()
        except BaseException:  # noqa: BLE001 - the exit must happen whatever
            log.exception("recording the failure before the forced exit")
        finally:
            logging.shutdown()
            os._exit(DESYNC_EXIT_CODE)


def rank_addresses(ctx) -> list[tuple[str, int]]:
    """(host, pid) of every rank of the job, exchanged once over the control group."""
    me = (socket.gethostname(), os.getpid())
    if ctx.world_size <= 1 or ctx.control_group is None:
        return [me]
    import torch.distributed as dist
    out = [None] * ctx.world_size
    dist.all_gather_object(out, me, group=ctx.control_group)
    return [tuple(a) for a in out]


def end_peers_on_this_host(addresses: list[tuple[str, int]]) -> list[int]:
    """SIGKILL the other ranks that run on this host (a peer stuck inside a collective can
    neither answer nor be interrupted otherwise); returns the pids signalled."""
    host, me = socket.gethostname(), os.getpid()
    ended = []
    for peer_host, pid in addresses:
        if peer_host == host and pid != me:
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
    return ended


def abort_on_collective_timeout() -> None:
    """NCCL's watchdog ends a process whose collective passed generate.dist_timeout_s
    (PyTorch's default; stated here because the failure bound relies on it)."""
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")


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
