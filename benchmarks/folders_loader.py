"""The data path alone, built-in set vs decoded folder (memory, disk cache): images per CPU-second of a
shuffled TensorLoader epoch, one torch thread, no model. CPU time rather than wall time, so the figure
holds on a shared machine. Needs benchmarks/folders.py --part fashion to have written the folder and
its disk cache first.

    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/folders_loader.py
"""

import statistics
import time

import torch

from daxiao.config import DataConfig
from daxiao.console import set_quiet
from daxiao.data import load_data, make_loader

torch.set_num_threads(1)
set_quiet(True)
b = {"built-in": load_data(DataConfig(data="fashion-mnist"), 0),
     "folder memory": load_data(DataConfig(data="/tmp/daxiao-folders/fashion", data_cache="memory"), 0),
     "folder disk": load_data(DataConfig(data="/tmp/daxiao-folders/fashion", data_cache="disk"), 0,
                              cache_dir="/tmp/daxiao-folders/cache-disk")}
for name, d in b.items():
    print(name, d.train.images.shape, d.train.images.stride(), d.train.images.is_contiguous(), d.preprocess.mean)
res = {k: [] for k in b}
for r in range(5):
    for name, d in b.items():
        loader = make_loader(d.train, 128, d.preprocess, shuffle=True, seed=r)
        t = time.process_time()
        n = sum(len(x) for x in loader)
        res[name].append(n / (time.process_time() - t))
for k, v in res.items():
    print(f"{k}: loader only, {statistics.median(v):,.0f} images per CPU-second (1 thread)")
