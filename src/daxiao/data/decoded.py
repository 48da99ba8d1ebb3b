"""Decode once: an image folder becomes the uint8 tensor the built-in sets are, in one parallel pass that
also checks every file.

    memory   decoded into RAM: the same `TensorSplit` a built-in set is (tensor batching, batched augment)
    disk     decoded once into a memory-mapped file, reused by later runs; the OS pages it in as needed
    off      checked (fully decoded) up front, then decoded again per batch by a DataLoader
    auto     disk if a valid cache is already there, else memory within the budget (a fraction of RAM),
             else disk if the cache fits on its disk, else off

Threads, not processes: Pillow releases the GIL while it decodes and resizes, and threads write
straight into the shared output, with no pickling. A disk cache is named by a hash of everything that
changes its bytes (the files in order with their sizes and mtimes, the size, channels and resize mode),
so a changed file means a new cache; it is written to a unique temporary name and renamed into place,
so a crash never leaves a half-written cache that a later run would trust.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..console import console, progress
from ..errors import DaxiaoError, check_choice
from ..files import atomic_write_json, writable_dir
from .bundle import channel_sums
from .decode import BadImage, decode_file
from .preprocess import Preprocess

FORMAT = 1  # bump when the decoding rules change, so old caches are not trusted
CACHE_MODES = ("auto", "memory", "disk", "off")
CHUNK = 256


@dataclass
class Decoded:
    """One source's files after the pass: the good rows (None for `off`), which files they are, why the
    others were dropped, and the exact integer pixel sums of the first `stats_rows` files' good rows."""

    images: torch.Tensor | None
    kept: list[int]                               # source indices of the rows, ascending
    bad: dict[int, str] = field(default_factory=dict)
    sums: tuple[list[int], list[int], int] = ([], [], 0)  # per channel sum, sum of squares; pixel count
    reused: bool = False

    def rows(self, start: int, stop: int) -> tuple[int, int]:
        """Row range holding the good files among source indices [start, stop)."""
        return bisect.bisect_left(self.kept, start), bisect.bisect_left(self.kept, stop)


def default_dir(cache_dir: str | Path | None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    from .builtin import cache_dir as daxiao_cache

    return daxiao_cache() / "images"


def total_ram() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def cache_key(paths: list[Path], pre: Preprocess, stats_rows: int) -> str:
    """Changes whenever the cached bytes would: every file (order, path, size, mtime) and the decoding."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"format": FORMAT, "size": pre.image_size, "channels": pre.channels, "resize": pre.resize,
                         "stats_rows": stats_rows}, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(p)}|missing\n".encode())
    return h.hexdigest()


def _decode(args: tuple[Path, Preprocess]) -> torch.Tensor | str:
    try:
        return decode_file(*args)
    except BadImage as e:
        return str(e)


def _pass(paths: list[Path], pre: Preprocess, out: torch.Tensor | None, stats_rows: int, phase: str,
          workers: int) -> Decoded:
    """Decode every file once; write good ones to consecutive rows of `out` (None: check only)."""
    kept: list[int] = []
    bad: dict[int, str] = {}
    c = pre.channels
    s, s2, npix = [0] * c, [0] * c, 0
    with progress(phase, len(paths), "images") as bar, ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), CHUNK):
            chunk = [(p, pre) for p in paths[start:start + CHUNK]]
            for i, x in enumerate(pool.map(_decode, chunk), start):
                if isinstance(x, str):
                    bad[i] = x
                    continue
                if out is not None:
                    out[len(kept)] = x
                elif i < stats_rows:  # checking only: sum the pixels now, they are not kept
                    xs = x.to(torch.int64)
                    for k, (a, b) in enumerate(zip(xs.sum((1, 2)).tolist(), (xs * xs).sum((1, 2)).tolist(),
                                                   strict=True)):
                        s[k] += a
                        s2[k] += b
                    npix += x.shape[1] * x.shape[2]
                kept.append(i)
            bar.advance(len(chunk))
    d = Decoded(None, kept, bad)
    if out is not None:
        d.images = out[:len(kept)]
        d.sums = channel_sums(d.images[:d.rows(0, stats_rows)[1]])
    else:
        d.sums = (s, s2, npix)
    return d


def decode_memory(paths: list[Path], pre: Preprocess, stats_rows: int, phase: str, workers: int) -> Decoded:
    out = torch.empty((len(paths), pre.channels, pre.image_size, pre.image_size), dtype=torch.uint8)
    d = _pass(paths, pre, out, stats_rows, phase, workers)
    if len(d.kept) < len(paths):  # a few bad files: give their rows back rather than hold them
        d.images = d.images.clone()
    return d


def check_only(paths: list[Path], pre: Preprocess, stats_rows: int, phase: str, workers: int) -> Decoded:
    return _pass(paths, pre, None, stats_rows, phase, workers)


def _row_bytes(pre: Preprocess) -> int:
    return pre.channels * pre.image_size * pre.image_size


def find_cached(folder: Path, key: str, pre: Preprocess) -> Decoded | None:
    """The cache for `key` if it is complete and consistent, memory-mapped; None otherwise."""
    data, meta_path = folder / f"{key}.u8", folder / f"{key}.json"
    try:
        meta = json.loads(meta_path.read_text())
        n = int(meta["n"])
        if meta.get("format") != FORMAT or data.stat().st_size != n * _row_bytes(pre):
            return None
        shape = (n, pre.channels, pre.image_size, pre.image_size)
        # copy-on-write: writable for torch, yet nothing a run does can change the cache file
        images = (torch.from_numpy(np.memmap(data, np.uint8, "c", shape=shape)) if n
                  else torch.empty(shape, dtype=torch.uint8))
        bad = {int(k): v for k, v in meta["bad"].items()}
        kept = [i for i in range(n + len(bad)) if i not in bad]
        return Decoded(images, kept, bad, tuple(meta["sums"]), reused=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def decode_disk(paths: list[Path], pre: Preprocess, stats_rows: int, phase: str, workers: int, folder: Path,
                key: str) -> Decoded:
    """The disk cache for these files: reused when valid, else built (atomically) and memory-mapped."""
    found = find_cached(folder, key, pre)
    if found is not None:
        return found
    writable_dir(folder, "decoded-image cache", "--data-cache memory|off")
    need = len(paths) * _row_bytes(pre)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise DaxiaoError(f"The decoded-image cache needs {human_bytes(need)} but {folder} has {human_bytes(free)} "
                          "free; pass --cache-dir DIR on a larger disk, or --data-cache off.")
    tmp = folder / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        shape = (max(len(paths), 1), pre.channels, pre.image_size, pre.image_size)
        mm = np.memmap(tmp, np.uint8, "w+", shape=shape)
        d = _pass(paths, pre, torch.from_numpy(mm), stats_rows, phase, workers)
        mm.flush()
        d.images = None  # every view of the map is dropped before the file is cut to size
        del mm
        os.truncate(tmp, len(d.kept) * _row_bytes(pre))  # only the good rows stay
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / f"{key}.u8")
        atomic_write_json(folder / f"{key}.json", {"format": FORMAT, "n": len(d.kept), "bad": d.bad,
                                                   "sums": list(d.sums), "files": len(paths)})
    except OSError as e:
        raise DaxiaoError(f"Cannot write the decoded-image cache in {folder} ({e.strerror}); pass --cache-dir DIR "
                          "somewhere writable, or --data-cache memory|off.") from None
    finally:
        tmp.unlink(missing_ok=True)
    found = find_cached(folder, key, pre)
    assert found is not None, "a cache just written must read back"
    found.reused = False
    return found


def choose_mode(mode: str, need: int, budget_fraction: float, folder: Path, cached: bool) -> tuple[str, str]:
    """(memory | disk | off, why) for `need` decoded bytes under the --data-cache setting."""
    check_choice("data_cache", mode, CACHE_MODES)
    budget = budget_fraction * total_ram()
    size = human_bytes(need)
    if mode != "auto":
        return mode, f"--data-cache {mode}"
    if cached:
        return "disk", f"{size}, cached in {folder}"
    if need <= budget:
        return "memory", f"{size} decoded <= budget {human_bytes(budget)} ({100 * budget_fraction:g} % of RAM)"
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = 0
    if need < 0.9 * free and os.access(probe, os.W_OK):
        return "disk", f"{size} > memory budget {human_bytes(budget)}: memory-mapped cache in {folder}"
    return "off", f"{size} fits neither the memory budget nor {probe}'s free space: decoded per batch"


def note(text: str) -> None:
    console.print(text, markup=False, highlight=False)
