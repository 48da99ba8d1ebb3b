"""What every benchmark prints with its figures: the CPU (model, cores, the vector/matrix flags that
decide fp32 vs bf16), the load average, and the machine's measured fp32 matmul peak (MFU's denominator)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_summary() -> dict:
    """{"model", "cores", "flags": "AVX2 AVX-512 ...", "flag_list", "torch", "platform"}."""
    import torch

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    lines = text.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), platform.processor())
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    have = [f for f in SIMD_FLAGS if f in flags]
    pretty = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16",
              "amx_tile": "AMX"}
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "flags": " ".join(pretty[f] for f in have) or "none",
            "flag_list": have, "torch": torch.__version__, "platform": platform.platform()}


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def matmul_peak(threads: int | None = None, n: int = 2048, seconds: float = 3.0) -> dict:
    """The machine's fp32 (and bf16, where supported) matmul rate in GFLOP/s: a big torch.matmul in a loop,
    best of 1-second windows, with `threads` torch threads (default: all cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    out = {"threads": torch.get_num_threads(), "n": n}
    try:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
            a @ b
            best, end = 0.0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                t0, k = time.perf_counter(), 0
                while time.perf_counter() - t0 < 1.0 / 3:
                    a @ b
                    k += 1
                best = max(best, 2 * n**3 * k / (time.perf_counter() - t0) / 1e9)
            out[f"{name}_gflops"] = best
    finally:
        torch.set_num_threads(before)
    return out
