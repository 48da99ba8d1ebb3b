"""Device and precision: where the model runs, and whether bf16 autocast pays on this machine.

One rule decides bf16 everywhere (training steps and feature extraction alike): time the real work in
fp32 and in bf16 on a real batch, after an untimed call that builds oneDNN's kernels, and keep bf16 only
if its median is at least 15 % faster. On this project's CPUs bf16 makes seed-cnn and ResNet about
1.5-2x faster where the CPU has AMX, but MobileNet's depthwise convolutions about 2x slower, and CPUs
without bf16 units slower everywhere, so no fixed choice is right (benchmarks/seed_cnn.py).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

BF16_MIN_SPEEDUP = 0.85  # bf16 must take at most 85 % of fp32's time


def resolve_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def median_seconds(work: Callable[[], None], repeats: int = 3) -> float:
    """Median wall time of `work` over `repeats` calls, after one untimed warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose_bf16(precision: str, device: torch.device, work: Callable[[bool], None]) -> bool:
    """fp32 or bf16. `work(bf16)` runs one representative step under that autocast; "auto" times both."""
    if precision != "auto":
        return precision == "bf16"
    if not bf16_supported(device):
        return False
    with torch.random.fork_rng(devices=[]):  # timing must not move the run's random stream
        fp32 = median_seconds(lambda: work(False))
        bf16 = median_seconds(lambda: work(True))
    return bf16 < BF16_MIN_SPEEDUP * fp32


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


@contextmanager
def deterministic(on: bool):
    """Deterministic kernels inside the block when `on` (restored after): torch's deterministic algorithms,
    cuDNN without autotuning, cuBLAS with a fixed workspace. With the loaders' (seed, epoch) order and the
    saved RNG state this is what makes a killed and resumed run bit-identical to an uninterrupted one."""
    if not on:
        yield
        return
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS refuses determinism without it
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    # warn_only: an op with no deterministic kernel on this device warns (once) rather than ending the run
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


@contextmanager
def torch_threads(n: int | None):
    """torch's intra-op threads set to `n` inside the block and restored after (None: unchanged)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n and torch.get_num_threads() != before:
            torch.set_num_threads(before)
