"""Size and cost of a model, measured rather than guessed.

    params, MACs          torch's own FLOP counter (`torch.utils.flop_counter`), not hand counting
    size on disk          the safetensors bytes of the fp32 weights; int8 is an estimate (below)
    peak activations      live bytes of the tensors the forward pass creates, for one image (below)
    latency, throughput   batch 1 with one thread and with every core, batch 64 with every core: the median
                          of repeated runs after untimed warm-up, with the interquartile range as the spread

Everything runs as `predict` does: eval mode, inference mode, fp32, channels_last. Exported models (ONNX fp32,
int8) are timed by `daxiao export`, which records both latencies in the bundle (daxiao.deploy).
"""

from __future__ import annotations

import os
import statistics
import time
import weakref
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from ..allocator import reuse_memory
from ..errors import DaxiaoError
from ..models import create_model
from ..models.saved import load_run


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """MACs for one image of in_chans x input_size x input_size (FLOPs / 2, as torch counts a MAC as 2)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_chans, input_size, input_size, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def human(n: float, unit: str = "") -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def human_bytes(n: float) -> str:
    for suffix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


# ---- size ------------------------------------------------------------------------------------------------
def weights_bytes(model: nn.Module) -> dict[str, int]:
    """{"fp32": bytes of the safetensors file of the fp32 state dict, "int8": estimate}.

    The int8 estimate is what per-channel weight quantization stores: every weight with >= 2 dimensions
    (convolutions, linear layers) at one byte per element plus one fp32 scale per output channel; 1-d
    tensors (biases, BatchNorm) stay fp32, since a quantizer folds or keeps them and they are tiny.
    """
    state = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in model.state_dict().items()}
    fp32 = len(safetensors_bytes({k: v.contiguous().cpu() for k, v in state.items()}))
    int8 = 0
    for v in state.values():
        if v.is_floating_point() and v.ndim >= 2:
            int8 += v.numel() + 4 * v.shape[0]
        else:
            int8 += v.numel() * v.element_size()
    return {"fp32": fp32, "int8": int8}


# ---- peak activation memory ------------------------------------------------------------------------------
class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage an operator creates while the mode is on, and uncounts it
    when ATen frees the storage (a weakref finalizer), so `peak` is the high-water mark of live activations.

    Why not the allocator: on CPU torch keeps no peak statistic, and the profiler's allocation events also
    count oneDNN's per-call weight reorders and scratch buffers, which are not activations. Views and
    in-place ops share a storage and are counted once; weights and the input exist before and are not counted.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._storages: set[int] = set()

    def _free(self, ptr: int, nbytes: int) -> None:
        self._storages.discard(ptr)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                ptr, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes and ptr not in self._storages:
                    self._storages.add(ptr)
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, ptr, nbytes)
        return out


@torch.inference_mode()
def peak_activation_bytes(model: nn.Module, input_size: int, in_chans: int = 3) -> int:
    """High-water mark of live activation bytes for one image in eval mode (see `LiveTensorBytes`)."""
    x = _input(model, 1, in_chans, input_size)
    model(x)  # first call: lazy buffers and kernel caches are made here, not counted below
    with LiveTensorBytes() as counter:
        y = model(x)
    del y
    return counter.peak


# ---- timing ----------------------------------------------------------------------------------------------
def all_threads() -> int:
    """The cores this process may run on (its CPU affinity), which `torch.set_num_threads` can use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@torch.inference_mode()
def time_forward(model: nn.Module, batch: int, input_size: int, in_chans: int = 3, threads: int | None = None,
                 repeats: int = 30, warmup: int = 3, max_seconds: float = 5.0) -> dict[str, float]:
    """Seconds per forward pass of `batch` images: untimed warm-up (oneDNN builds its kernels on the first
    calls), then up to `repeats` timed runs, stopping early after `max_seconds` once 5 runs are in.

    Returns:
        {"median_ms", "q1_ms", "q3_ms", "min_ms", "runs", "threads", "batch"}.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads or all_threads())
    try:
        x = _input(model, batch, in_chans, input_size)
        for _ in range(warmup):
            model(x)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < max_seconds):
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1e3)
        used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return {"median_ms": statistics.median(times), "q1_ms": q1, "q3_ms": q3, "min_ms": min(times),
            "runs": len(times), "threads": used, "batch": batch}


def _input(model: nn.Module, batch: int, in_chans: int, input_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_chans, input_size, input_size, generator=g).to(device)
    return x.contiguous(memory_format=torch.channels_last)


# ---- everything at once ----------------------------------------------------------------------------------
def profile_model(model: nn.Module, input_size: int, in_chans: int = 3, repeats: int = 30,
                  throughput_batch: int = 64, max_seconds: float = 5.0) -> dict:
    """Every number `daxiao profile` prints, for `model` on in_chans x input_size x input_size images.

    Args:
        repeats: timed runs per latency measurement (batch-64 throughput uses a third of them, at least 5).
        max_seconds: stop a measurement early after this long once 5 runs are in (large models at 224 px).

    Returns:
        {"params", "macs", "size_fp32_bytes", "size_int8_bytes", "peak_activation_bytes", "input",
        "latency_1thread", "latency_all_threads", "throughput"} with latencies as `time_forward` returns
        them and throughput in images/s (median and quartiles).

    Example:
        >>> profile_model(create_model("seed-cnn", in_chans=1, input_size=28), 28, 1)["params"]
        693962
    """
    reuse_memory()  # else batch-64 throughput is under-reported by the allocator's page faults (daxiao.allocator)
    model = model.eval().to(memory_format=torch.channels_last)
    size = weights_bytes(model)
    out = {"params": count_params(model), "macs": count_macs(model, input_size, in_chans),
           "size_fp32_bytes": size["fp32"], "size_int8_bytes": size["int8"],
           "peak_activation_bytes": peak_activation_bytes(model, input_size, in_chans),
           "input": [in_chans, input_size, input_size]}
    out["latency_1thread"] = time_forward(model, 1, input_size, in_chans, 1, repeats, max_seconds=max_seconds)
    out["latency_all_threads"] = time_forward(model, 1, input_size, in_chans, None, repeats, max_seconds=max_seconds)
    big = time_forward(model, throughput_batch, input_size, in_chans, None, max(5, repeats // 3),
                       max_seconds=max_seconds)
    per_s = {k: throughput_batch / (big[f"{k}_ms"] / 1e3) for k in ("median", "q1", "q3")}
    # a slower batch (q3 time) is a lower rate (q1 rate): swap so q1 <= median <= q3 in images/s too
    out["throughput"] = {"images_per_s": per_s["median"], "q1": per_s["q3"], "q3": per_s["q1"],
                         "batch": throughput_batch, "threads": big["threads"], "runs": big["runs"]}
    return out


def load_for_profile(source: str, input_size: int | None = None, in_chans: int | None = None,
                     num_classes: int = 1000) -> tuple[nn.Module, int, int, str]:
    """A run folder or weights file (its own input size and channels unless given), or a model name
    (default 3 x 224 x 224, 1000 classes, as `daxiao models`). Returns (model, input_size, in_chans, label)."""
    if Path(source).exists():
        run = load_run(source)
        pre = run.preprocess
        return run.model, input_size or pre.image_size, in_chans or pre.channels, f"{run.name} ({source})"
    if "/" in source or source.endswith(".safetensors"):
        raise DaxiaoError(f"No such run folder or weights file: {source}.")
    size, chans = input_size or 224, in_chans or 3
    return create_model(source, num_classes=num_classes, in_chans=chans, input_size=size), size, chans, source
