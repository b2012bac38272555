"""Process groups for the four parallel modes (`generate.parallel`).

sp   one group of all ranks: FSDP-sharded DiT + T5 and Ulysses sequence parallelism
     (the seed's setup, wan.distributed); rank 0 writes.
cfg  one group of two ranks: rank 0 runs the conditional forward, rank 1 the
     unconditional one, one all_gather per step; rank 0 writes.
dp   one group per rank: every rank generates its own instances and writes them.
none rank 0 generates and writes; other ranks idle.

A dead or failing peer never hangs the job: every collective runs under
`generate.dist_timeout_s` and raises when it expires (see docs/ENGINE.md).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

PARALLEL_MODES = ("sp", "cfg", "dp", "none")


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group_size: int
    group_index: int
    num_groups: int
    group: object | None  # ProcessGroup the engine's collectives use; None: a group of one
    control_group: object | None  # gloo group for CPU-object coordination (the worker)
    is_writer: bool
    mode: str = "none"  # the parallel mode (added field; not in the original contract)

    @property
    def active(self) -> bool:
        """Whether this rank takes part in generation (false only for ranks > 0 in `none`)."""
        return self.mode != "none" or self.rank == 0

    @property
    def group_rank(self) -> int:
        return self.rank if self.group_size > 1 else 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("generate.device=cuda but torch sees no CUDA device "
                               "(check the job's --gres/--gpus and CUDA_VISIBLE_DEVICES, "
                               "or set generate.device=cpu)")
        # submitit's TorchDistributedEnvironment().export() narrows CUDA_VISIBLE_DEVICES
        # to the local rank, so each process may see exactly one device.
        index = local_rank if torch.cuda.device_count() > local_rank else 0
        return torch.device("cuda", index)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"generate.device={name!r}: expected auto, cuda or cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(gen_cfg) -> DistContext:
    """Read RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT and build the groups.

    World size 1 needs no environment and creates no process group.
    """
    mode = gen_cfg.parallel
    if mode not in PARALLEL_MODES:
        raise ValueError(f"generate.parallel={mode!r}: expected one of {', '.join(PARALLEL_MODES)}")
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    device = resolve_device(gen_cfg.device, local_rank)
    if mode == "cfg" and world > 2:
        raise ValueError(f"generate.parallel=cfg runs on exactly 2 ranks, got WORLD_SIZE={world}; "
                         "use slurm.gpus_per_job=2, or parallel=dp/sp for more GPUs")
    timeout = datetime.timedelta(seconds=gen_cfg.dist_timeout_s)
    group = control = None
    if world > 1:
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(var):
                raise RuntimeError(f"WORLD_SIZE={world} but {var} is not set; launch through "
                                   "submitit (TorchDistributedEnvironment().export()) or torchrun")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            kwargs = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                    timeout=timeout, **kwargs)
        # Longer than the engine's collectives: after a failure, the ranks that left an engine
        # collective wait here for a peer that is still inside one until its own timeout.
        control = dist.new_group(backend="gloo", timeout=2 * timeout + datetime.timedelta(seconds=30))
        if mode in ("sp", "cfg"):
            group = dist.group.WORLD
    if mode in ("sp", "cfg") and world > 1:
        return DistContext(rank, world, local_rank, device, group_size=world, group_index=0,
                           num_groups=1, group=group, control_group=control,
                           is_writer=rank == 0, mode=mode)
    if mode == "dp":
        return DistContext(rank, world, local_rank, device, group_size=1, group_index=rank,
                           num_groups=world, group=None, control_group=control,
                           is_writer=True, mode=mode)
    # none, or sp/cfg on one rank: the same computation as none
    return DistContext(rank, world, local_rank, device, group_size=1, group_index=0,
                       num_groups=1, group=None, control_group=control, is_writer=rank == 0,
                       mode="none")


def shutdown(ctx: DistContext | None = None) -> None:
    """Destroy the process groups (safe to call when none exist)."""
    if dist.is_initialized():
        dist.destroy_process_group()
