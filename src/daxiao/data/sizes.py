"""Sizes and channels chosen from the data: every file's header is read once (in threads: no pixels are
decoded), and a documented rule turns the sizes into one training size.

The rule, first match wins (the run's first line names the one that chose):
    1. --image-size N
    2. --pretrained: the weights' own input size (their filters were learned at it)
    3. one size shared by at least SHARED_FRACTION of the images: its longer side (all 28x28 -> 28)
    4. otherwise the median image's longer side
Rules 3 and 4 are capped at MAX_SIDE (an ImageNet backbone's size: larger costs time for little gain)
and floored at MIN_SIDE (the smallest input every model takes).
Channels: 1 when every image is greyscale, else 3 (or --channels).
"""

from __future__ import annotations

import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..console import progress
from .decode import GREY_MODES, BadImage, image_info

MAX_SIDE = 224
MIN_SIDE = 8
SHARED_FRACTION = 0.9
CHUNK = 512  # files per progress step: threads stay busy, the bar moves


@dataclass
class Probe:
    """Header facts of a list of files: (width, height, mode) per readable file, reasons for the rest."""

    info: list[tuple[int, int, str] | None]
    bad: dict[int, str] = field(default_factory=dict)  # index -> reason

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return [(w, h) for w, h, _ in filter(None, self.info)]

    @property
    def modes(self) -> Counter:
        return Counter(m for _, _, m in filter(None, self.info))

    @property
    def grey(self) -> bool:
        return all(m in GREY_MODES for m in self.modes)


def _one(path: Path) -> tuple[int, int, str] | str:
    try:
        return image_info(path)
    except BadImage as e:
        return str(e)


def probe_files(paths: list[Path], phase: str = "scan", workers: int = 8) -> Probe:
    """Every file's header, in a thread pool, with progress."""
    info: list[tuple[int, int, str] | None] = []
    bad: dict[int, str] = {}
    with progress(phase, len(paths), "files") as bar, ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), CHUNK):
            for i, r in enumerate(pool.map(_one, paths[start:start + CHUNK]), start):
                if isinstance(r, str):
                    bad[i] = r
                    info.append(None)
                else:
                    info.append(r)
            bar.advance(min(CHUNK, len(paths) - start))
    return Probe(info, bad)


def describe_sizes(sizes: list[tuple[int, int]]) -> str:
    """"all 70,000 are 28x28" or "min 20x18, median 32x30, max 500x375 (by area)"."""
    if not sizes:
        return "no readable images"
    counts = Counter(sizes)
    if len(counts) == 1:
        (w, h), n = counts.most_common(1)[0]
        return f"all {n:,} are {w}x{h}"
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    lo, mid, hi = by_area[0], by_area[len(by_area) // 2], by_area[-1]
    return f"min {lo[0]}x{lo[1]}, median {mid[0]}x{mid[1]}, max {hi[0]}x{hi[1]} (by area)"


def choose_size(sizes: list[tuple[int, int]]) -> tuple[int, str]:
    """(side, the rule that chose it) for images of these (width, height) sizes (rules 3 and 4 above)."""
    if not sizes:
        return MAX_SIDE, f"no readable images: {MAX_SIDE}"
    (w, h), n = Counter(sizes).most_common(1)[0]
    if n >= SHARED_FRACTION * len(sizes):
        side, why = max(w, h), (f"all images are {w}x{h}" if n == len(sizes)
                                else f"{100 * n / len(sizes):.0f} % of the images are {w}x{h}")
    else:
        side = statistics.median_low(max(s) for s in sizes)
        why = f"median longer side of varied sizes ({describe_sizes(sizes)})"
    chosen = min(max(side, MIN_SIDE), MAX_SIDE)
    if chosen != side:
        why += f", {'capped at' if chosen < side else 'raised to'} {chosen}"
    return chosen, f"{why} -> {chosen} px; --image-size N overrides"
