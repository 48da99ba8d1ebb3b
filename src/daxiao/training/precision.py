"""Device and precision: where the model runs, and whether bf16 autocast pays on this machine.

Devices: `resolve_device("auto")` is CUDA, then Apple's MPS, then the CPU; a named device that is not there
is one clear error. Precisions: fp32; bf16 autocast (no loss scaling: bf16 has fp32's exponent range);
fp16 autocast with a `GradScaler` (fp16's range is narrow: small gradients underflow without scaling),
whose state is part of the checkpoint. "auto" never picks fp16: it needs a scaler and is only asked for.

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

from ..errors import DaxiaoError

BF16_MIN_SPEEDUP = 0.85  # bf16 must take at most 85 % of fp32's time


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N | mps -> a device that exists here, or a DaxiaoError naming the fix."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DaxiaoError(f"--device {name}: this machine has no CUDA GPU usable by PyTorch "
                              f"(torch {torch.__version__}); use --device cpu or auto.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DaxiaoError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    elif device.type == "mps" and not mps_available():
        raise DaxiaoError(f"--device {name}: Apple's MPS backend is not available here; use --device cpu or auto.")
    return device


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "mps":  # MPS autocast is fp16-first; bf16 only on recent macOS: never chosen by "auto"
        return False
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA and MPS run asynchronously: a timer must wait for them)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def median_seconds(work: Callable[[], None], repeats: int = 3, device: torch.device | None = None) -> float:
    """Median wall time of `work` over `repeats` calls, after one untimed warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        if device is not None:
            synchronize(device)
        t0 = time.perf_counter()
        work()
        if device is not None:
            synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose_bf16(precision: str, device: torch.device, work: Callable[[bool], None]) -> bool:
    """bf16 or not (fp32, or fp16 when asked for). `work(bf16)` runs one representative step under that
    autocast; "auto" times both."""
    if precision != "auto":
        return precision == "bf16"
    if not bf16_supported(device):
        return False
    with torch.random.fork_rng(devices=[]):  # timing must not move the run's random stream
        sync = {} if device.type == "cpu" else {"device": device}  # GPU kernels are timed to their end
        fp32 = median_seconds(lambda: work(False), **sync)
        bf16 = median_seconds(lambda: work(True), **sync)
    return bf16 < BF16_MIN_SPEEDUP * fp32


def autocast(device: torch.device, bf16: bool, fp16: bool = False):
    """The forward pass's autocast: bf16, fp16 or none (fp32)."""
    # disabled on MPS: name fp16 anyway, as torch warns about bf16 on older macOS even when autocast is off
    half = fp16 or (device.type == "mps" and not bf16)
    return torch.autocast(device.type, dtype=torch.float16 if half else torch.bfloat16, enabled=bf16 or fp16)


def grad_scaler(device: torch.device, fp16: bool) -> torch.amp.GradScaler | None:
    """fp16's loss scaler (None otherwise): scales the loss up so small gradients survive fp16, skips the
    steps whose gradients overflowed, and adapts the scale; its state is saved with the run."""
    return torch.amp.GradScaler(device.type) if fp16 else None


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
