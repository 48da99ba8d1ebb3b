"""Which of the article's practical techniques help? Test accuracy of seed-cnn on Fashion-MNIST.

Same model, epoch budget and data for every cell; one thing changes at a time from the baseline
(no augmentation, cross-entropy, Adam):
    augmentation   none | seed (the article's ImageDataGenerator settings) | light | RandAugment
    loss           cross-entropy | label smoothing 0.1 | MSE on softmax | focal (gamma 2)
    optimizer      adam 1e-3 | sgd 0.05 momentum 0.9 (nesterov) | adamw 1e-3, weight decay 0.05
Each cell is the mean (and spread) over seeds. Training uses a fixed, stratified subset of the training
images (--subset) to keep the table to minutes on 2 cores; the model is picked on the held-out val split
and scored on the full 10,000-image test set.

    .venv/bin/python benchmarks/techniques.py                      # ~6 min on 2 cores
    .venv/bin/python benchmarks/techniques.py --subset 0 --epochs 10 --seeds 0 1 2   # the full set

Writes benchmarks/results/techniques.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from daxiao import create_model, fit
from daxiao.config import DataConfig, RunConfig
from daxiao.data import DataBundle, TensorSplit, load_data, make_loader, stratified_split
from daxiao.training.loop import evaluate

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "techniques.json"
BASE = {"augment": "none", "loss": "cross-entropy", "optimizer": "adam", "lr": 1e-3}
CELLS = [  # (group, label, overrides of BASE)
    ("augmentation", "none", {}),
    ("augmentation", "seed (article)", {"augment": "seed"}),
    ("augmentation", "light", {"augment": "light"}),
    ("augmentation", "RandAugment", {"augment": "randaugment=true"}),
    ("loss", "cross-entropy", {}),
    ("loss", "label smoothing 0.1", {"loss": "label-smoothing=0.1"}),
    ("loss", "MSE (softmax)", {"loss": "mse"}),
    ("loss", "focal gamma 2", {"loss": "focal=2"}),
    ("optimizer", "adam 1e-3", {}),
    ("optimizer", "sgd 0.05 nesterov", {"optimizer": "sgd", "lr": 0.05, "nesterov": True}),
    ("optimizer", "adamw 1e-3 wd 0.05", {"optimizer": "adamw", "weight_decay": 0.05}),
]


def subset_bundle(full: DataBundle, n: int, seed: int) -> DataBundle:
    """A fixed stratified subset of the training split (the same for every cell and seed)."""
    if not n or n >= len(full.train):
        return full
    _, keep = stratified_split(full.train.labels, n / len(full.train), seed)
    keep = torch.as_tensor(keep)
    train = TensorSplit(full.train.images[keep], full.train.labels[keep])
    return DataBundle(train, full.val, full.test, full.classes, full.preprocess, full.source)


def run_cell(bundle: DataBundle, overrides: dict, epochs: int, seed: int) -> tuple[float, float]:
    cfg = RunConfig.from_dict({**BASE, **overrides, "epochs": epochs, "batch_size": 128, "seed": seed,
                               "schedule": "cosine"})
    torch.manual_seed(seed)
    model = create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
    t0 = time.perf_counter()
    fit(model, bundle, cfg=cfg, verbose=False)
    seconds = time.perf_counter() - t0
    test = evaluate(model, make_loader(bundle.test, 1024, bundle.preprocess))
    return test["acc"], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subset", type=int, default=10_000, help="training images (0 = all 54,000)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = p.parse_args()
    full = load_data(DataConfig(data="fashion-mnist"), seed=0)
    bundle = subset_bundle(full, a.subset, seed=0)
    done: dict[str, tuple[list[float], list[float]]] = {}
    rows = []
    for group, label, overrides in CELLS:
        key = json.dumps(overrides, sort_keys=True)
        if key not in done:  # the baseline appears in every group; train it once per seed
            runs = [run_cell(bundle, overrides, a.epochs, s) for s in a.seeds]
            done[key] = ([r[0] for r in runs], [r[1] for r in runs])
        accs, secs = done[key]
        rows.append({"group": group, "technique": label, "overrides": overrides, "test_acc": accs,
                     "mean": statistics.mean(accs), "spread": max(accs) - min(accs),
                     "seconds_median": statistics.median(secs)})
        print(f"{group:>12}  {label:<22} {statistics.mean(accs):.4f}", flush=True)

    table = Table(title=f"seed-cnn on Fashion-MNIST: {len(bundle.train):,} train images, {a.epochs} epochs, "
                        f"batch 128, cosine; test accuracy, mean of seeds {a.seeds}")
    for col in ("group", "technique", "test acc (mean)", "spread", "Δ vs baseline", "fit s (median)"):
        table.add_column(col, justify="left" if col in ("group", "technique") else "right")
    base = rows[0]["mean"]
    for r in rows:
        table.add_row(r["group"], r["technique"], f"{r['mean']:.4f}", f"{r['spread']:.4f}",
                      f"{100 * (r['mean'] - base):+.2f} pt", f"{r['seconds_median']:.1f}")
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"subset": len(bundle.train), "epochs": a.epochs, "seeds": a.seeds,
                                   "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
