"""Data-parallel training on PyTorch's own engines: `torchrun` starts the processes, DistributedDataParallel
keeps their weights in step (gloo between CPU processes, NCCL between GPUs).

    daxiao train ... --nproc 2      runs   torchrun --standalone --nproc-per-node 2 -m daxiao train ...

torchrun describes the job in the environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT); `setup` reads it, so any torchrun form works, several machines included. In one process every
helper here is a no-op and nothing changes. The rules, each for a reason:

- Each process trains on its own slice of every epoch's order (the loaders' `shard`): the same (seed, epoch)
  permutation on every rank, so the slices never overlap and a resumed run sees the same batches.
- Global batch = per-process --batch-size x processes. The learning rate is used as given, never rescaled:
  a silent "linear scaling rule" would make the same command train differently on 1 and on 8 processes.
  To reproduce a one-process run on N processes, divide --batch-size by N (tests/test_distributed.py).
- Metrics are sums over ranks (loss x count, correct, seen), so train and val accuracy are over all of the
  data and identical on every rank: early stopping and "best epoch" decide the same everywhere.
- Only rank 0 writes (callbacks with ``rank_zero_only``: the run folder, the progress bar) and prints (the
  consoles of other ranks are quiet); every rank reads the checkpoint when resuming.
- CPU threads per process = cores // processes on this machine: two processes of two OpenMP threads on two
  cores made small ops 100x slower here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ..console import console, out
from ..errors import DaxiaoError
from .precision import resolve_device

T = TypeVar("T")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else default


def launched() -> bool:
    """True inside a torchrun job of more than one process."""
    return env_int("WORLD_SIZE", 1) > 1


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    return rank() == 0


def cores() -> int:
    """The cores this process may run on (its affinity), which torch's thread pool can use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def per_process_threads(threads: int | None) -> int | None:
    """torch threads for this process: --threads, else (in a torchrun job) cores // processes on this machine.
    None in one process without --threads: torch's default. torchrun itself sets OMP_NUM_THREADS=1, which
    would leave all but one core per process idle, so the job's own share is set explicitly."""
    local = env_int("LOCAL_WORLD_SIZE", 1) if launched() else 1
    if local == 1:
        return threads
    fair = max(1, cores() // local)
    if threads and threads * local > cores():
        if env_int("RANK", 0) == 0:  # before the process group exists: torchrun's RANK says who speaks
            console.print(f"[yellow]--threads {threads} x {local} processes > {cores()} cores; using {fair} "
                          "thread(s) per process[/]")
        return fair
    return threads or fair


def device_for_rank(name: str) -> torch.device:
    """The device this process trains on: `resolve_device(name)`, and in a multi-GPU job cuda:LOCAL_RANK."""
    device = resolve_device(name)
    if not launched():
        return device
    if device.type == "mps":
        raise DaxiaoError("Data-parallel training on MPS is not supported by PyTorch (no MPS collectives); "
                          "train in one process on MPS, or use --device cpu with --nproc.")
    if device.type == "cuda":
        local, local_world = env_int("LOCAL_RANK", 0), env_int("LOCAL_WORLD_SIZE", 1)
        if device.index is not None and local_world > 1:
            raise DaxiaoError(f"--device {name} with {local_world} processes per machine: each process takes "
                              "cuda:LOCAL_RANK; pass --device cuda (or auto).")
        if device.index is None:
            if local >= torch.cuda.device_count():
                raise DaxiaoError(f"{local_world} processes per machine but {torch.cuda.device_count()} CUDA "
                                  f"device(s): pass --nproc {torch.cuda.device_count()} or fewer.")
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    return device


def setup(device_name: str = "auto", threads: int | None = None) -> torch.device:
    """This process's device; inside a torchrun job also join its process group (once), set the threads and
    quiet the consoles of ranks other than 0. Nothing else happens in one process."""
    device = device_for_rank(device_name)
    if not launched() or dist.is_initialized():
        return device
    n = per_process_threads(threads)
    if n:
        torch.set_num_threads(n)
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if backend == "nccl" else {}  # NCCL binds its communicator to this GPU
    dist.init_process_group(backend, timeout=timedelta(minutes=env_int("DAXIAO_DIST_TIMEOUT_MIN", 30)), **kwargs)
    if dist.get_rank() != 0:
        console.quiet = out.quiet = True  # one voice: rank 0's
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_sum(*values: float | torch.Tensor) -> list[float]:
    """Sums over all ranks of each value (plain floats in one process), in one collective call. float64: the
    counts stay exact far past any data set's size."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()).cpu() for v in values]).to(_comm_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (a picklable Python value made by daxiao, never user data)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def on_rank_zero(fn: Callable[[], T]) -> T:
    """`fn()` run by rank 0 alone and its result given to every rank (choosing the run folder: two ranks
    must not each pick the next free name). Rank 0's DaxiaoError is raised on every rank."""
    if not is_distributed():
        return fn()
    result, error = None, None
    if rank() == 0:
        try:
            result = fn()
        except BaseException as e:  # told to the others before raising, or they would wait forever
            error = e
    result, message = broadcast((result, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise DaxiaoError(message)
    return result


def wrap(model: nn.Module, device: torch.device, features: bool = False) -> nn.Module:
    """`model` in DistributedDataParallel (the gradient all-reduce, overlapped with the backward pass), or
    `model` itself in one process. `features`: batches are cached backbone features, so only the head runs
    (DDP calls `forward`, so the head is wrapped in a module whose forward is `classify`)."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(_Head(model) if features else model, device_ids=ids)
    return net


class _Head(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.classify(features)


class DistributedDataParallel(nn.parallel.DistributedDataParallel):
    """torch's DDP, answering the loop's `classify` for cached-feature batches like the model it wraps."""

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self(features)


def gradient_bytes(model: nn.Module) -> int:
    """Bytes DDP all-reduces per step: every gradient once (fp32 unless the parameters are lower precision)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


__all__ = ["all_reduce_sum", "broadcast", "device_for_rank", "gradient_bytes", "is_distributed", "is_rank_zero",
           "launched", "on_rank_zero", "per_process_threads", "rank", "setup", "shutdown", "world_size", "wrap"]
