"""Memory reuse for large CPU batches: glibc's malloc told to keep freed activation buffers.

Why: by default glibc serves every allocation above its mmap threshold (128 KiB, raised dynamically up
to 32 MiB) with a fresh `mmap` and gives it back with `munmap` on free. A forward pass at batch 64
allocates and frees hundreds of activation buffers of several MiB each, so every step maps new pages
and takes a minor page fault on each 4 KiB of them: measured on efficientnet-lite0 at 224 px, batch 64,
2 threads, system time about equal to user time and throughput *below* batch 1 (benchmarks/allocator.py).
With the mmap threshold at 1 GiB the buffers come from the heap, and with trimming off (glibc would
otherwise hand the heap's free top back to the kernel whenever it exceeds the trim threshold, which
happens after every large batch) a freed one is reused by the next step without touching the kernel.
The price is that the process keeps its peak heap until it exits, as PyTorch's CUDA caching allocator does.

`reuse_memory()` applies it in-process with `mallopt` (through ctypes) and also exports glibc's
environment spelling of the same settings, so processes started later (spawned DataLoader workers,
torchrun's ranks, tune's workers) start with it too; forked workers inherit the in-process setting.
It is called by the CLI at start-up and by `fit`, feature extraction, evaluation, prediction and
`profile`; never at `import daxiao`, which changes no global state.

It does nothing when the C library is not glibc, when another allocator is preloaded (jemalloc,
tcmalloc, mimalloc: they have their own reuse), when the user already set MALLOC_MMAP_THRESHOLD_, or
when DAXIAO_ALLOCATOR=system asks for glibc's defaults (the "before" of the benchmark).
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30    # 1 GiB: larger blocks still get their own mapping (a weights file, a whole data set)
NO_TRIM = -1           # mallopt(M_TRIM_THRESHOLD, -1) disables trimming (man 3 mallopt); 1 GiB still re-faulted
ENV = {"MALLOC_MMAP_THRESHOLD_": str(THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(1 << 62)}  # environment spelling
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_state: dict[str, object] = {}


def reuse_memory() -> dict[str, object]:
    """Set glibc malloc up to reuse freed large buffers (see the module docstring). Idempotent.

    Returns:
        {"applied": bool, "how": "mallopt" | reason it was skipped}.
    """
    if _state:
        return _state
    skip = _why_not()
    if skip:
        _state.update(applied=False, how=skip)
        return _state
    libc = ctypes.CDLL("libc.so.6")  # glibc's soname; not find_library, which runs ldconfig and gcc (~1 s)
    ok = all(libc.mallopt(param, ctypes.c_int(value)) == 1
             for param, value in ((M_MMAP_THRESHOLD, THRESHOLD), (M_TRIM_THRESHOLD, NO_TRIM)))
    if ok:
        for k, v in ENV.items():  # read by glibc at the start of every process exec'd from here on
            os.environ.setdefault(k, v)
    _state.update(applied=ok, how="mallopt" if ok else "mallopt refused")
    return _state


def _why_not() -> str | None:
    if os.environ.get("DAXIAO_ALLOCATOR", "").lower() == "system":
        return "DAXIAO_ALLOCATOR=system"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in OTHER_ALLOCATORS):
        return "another allocator is preloaded"
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "GLIBC_TUNABLES" in os.environ:
        return "malloc settings given in the environment"
    return None
