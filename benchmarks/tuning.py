"""The article's grid search three ways, on digits: how much compute does pruning save, and what does it cost?

The article's grid exactly (optimizer adam/sgd x activation relu/tanh x batch_size 10/20/50 x epochs
10/50/100, cv=3) and its model (Conv2D(32, 3x3) -> Flatten -> Dense(10): `seed-tiny-cnn`), run as
    1. scikit-learn GridSearchCV with daxiao's ImageClassifier (the article's code; every trial in full),
    2. `daxiao tune --sampler grid` with pruning,
    3. `daxiao tune --sampler tpe` with pruning and the same number of trials.
All three see the same 3 stratified folds of digits' training images (GridSearchCV gets them as `cv=`) and
the same worker processes (--jobs). Reported: best mean CV accuracy, test accuracy of the best setting
refit on all training images, trial-epochs (epochs x folds, summed over trials: the compute), wall time.
Target: a pruned search within 0.3 points of the full grid's best CV accuracy using <= 1/5 of its
trial-epochs. A last section runs 50 short trials in one process and reads its memory after trials 1 and 50.

    .venv/bin/python benchmarks/tuning.py               # ~12 min on 2 cores
    .venv/bin/python benchmarks/tuning.py --quick       # a 2x2x1x2 grid, to try it out

Writes benchmarks/results/tuning.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.model_selection import GridSearchCV

from daxiao.config import DataConfig, RunConfig
from daxiao.data import load_data
from daxiao.sklearn import ImageClassifier
from daxiao.tune import TuneSettings, cv_folds, tune
from daxiao.tune.cv import pooled

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "tuning.json"
ARTICLE_GRID = {"optimizer": ["adam", "sgd"], "activation": ["relu", "tanh"], "batch_size": [10, 20, 50],
                "epochs": [10, 50, 100]}
QUICK_GRID = {"optimizer": ["adam", "sgd"], "activation": ["relu", "tanh"], "batch_size": [50], "epochs": [2, 6]}
# Keras' fit: constant learning rate at each optimizer's default, fp32.
RECIPE = {"schedule": "constant", "precision": "fp32"}


def data(seed: int):
    """digits' training images (train + val, as cross-validation pools them) and its fixed test split."""
    bundle = load_data(DataConfig(data="digits"), seed)
    pool = pooled(bundle)
    to_numpy = lambda s: (s.images.permute(0, 2, 3, 1).numpy(), s.labels.numpy())  # noqa: E731  NHWC, as Keras
    return (*to_numpy(pool), *to_numpy(bundle.test), pool.labels)


def refit_test_acc(params: dict, x, y, xt, yt, seed: int) -> float:
    """GridSearchCV's refit: the best setting trained on every training image, scored on the test split."""
    est = ImageClassifier(model="seed-tiny-cnn", seed=seed, **RECIPE, **params)
    return float(est.fit(x, y).score(xt, yt))


def run_sklearn(grid: dict, folds, x, y, xt, yt, jobs: int, seed: int) -> dict:
    t0 = time.perf_counter()
    gs = GridSearchCV(ImageClassifier(model="seed-tiny-cnn", seed=seed, **RECIPE), grid, cv=folds, n_jobs=jobs)
    gs.fit(x, y)
    wall = time.perf_counter() - t0
    fold_epochs = sum(p["epochs"] * len(folds) for p in gs.cv_results_["params"])
    return {"best_cv": float(gs.best_score_), "best_params": gs.best_params_, "test_acc": float(gs.score(xt, yt)),
            "fold_epochs": fold_epochs, "trials": len(gs.cv_results_["params"]), "pruned": 0, "seconds": wall}


def run_daxiao(grid: dict, sampler: str, pruner: str, trials: int, jobs: int, seed: int, folder: Path,
               x, y, xt, yt) -> dict:
    cfg = RunConfig.from_dict({"model": "seed-tiny-cnn", "seed": seed, "project": str(folder), "name": sampler,
                               **RECIPE})
    space = {k: ",".join(map(str, v)) for k, v in grid.items()}
    t0 = time.perf_counter()
    r = tune(cfg, TuneSettings(space=space, sampler=sampler, trials=trials, cv=3, pruner=pruner, jobs=jobs),
             verbose=False)
    wall = time.perf_counter() - t0
    return {"best_cv": r["best_value"], "best_params": r["best_params"],
            "test_acc": refit_test_acc(r["best_params"], x, y, xt, yt, seed), "fold_epochs": r["fold_epochs"],
            "trials": sum(r["trials"].values()), "pruned": r["trials"]["pruned"], "seconds": wall}


def memory_over_trials(folder: Path, seed: int, n: int = 50) -> dict:
    """n one-epoch trials in one process: resident memory after the first and after the last."""
    cfg = RunConfig.from_dict({"model": "seed-tiny-cnn", "seed": seed, "project": str(folder), "name": "memory",
                               "epochs": 1, **RECIPE})
    tune(cfg, TuneSettings(space={"lr": "1e-3:1e-1:log", "batch_size": "32,64,128", "activation": "relu,tanh"},
                           sampler="random", trials=n, cv=3, pruner="none"), verbose=False)
    with open(folder / "memory" / "trials.csv") as f:
        rss = {int(r["trial"]): float(r["rss_mb"]) for r in csv.DictReader(f)}
    return {"trials": n, "rss_mb_after_trial_1": rss[0], "rss_mb_after_trial_n": rss[n - 1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a small grid instead of the article's")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for every method")
    ap.add_argument("--pruner", default="halving", help="median | halving | hyperband")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    grid = QUICK_GRID if args.quick else ARTICLE_GRID
    n_grid = int(np.prod([len(v) for v in grid.values()]))
    x, y, xt, yt, labels = data(args.seed)
    folds = cv_folds(labels, 3, args.seed)
    console = Console(width=None if sys.stdout.isatty() else 200)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        console.print(f"GridSearchCV over {n_grid} settings x 3 folds ...")
        rows["GridSearchCV (full grid)"] = run_sklearn(grid, folds, x, y, xt, yt, args.jobs, args.seed)
        for sampler in ("grid", "tpe"):
            console.print(f"daxiao tune --sampler {sampler} --pruner {args.pruner} ...")
            rows[f"daxiao tune {sampler} + {args.pruner}"] = run_daxiao(grid, sampler, args.pruner, n_grid, args.jobs,
                                                                       args.seed, Path(tmp), x, y, xt, yt)
        console.print("memory over 50 trials in one process ...")
        memory = memory_over_trials(Path(tmp), args.seed)

    full = rows["GridSearchCV (full grid)"]
    table = Table(title=f"The article's grid ({n_grid} settings, cv=3) on digits, {args.jobs} worker processes")
    for col in ("method", "best CV acc", "Δ vs full grid", "test acc (refit)", "trial-epochs", "of full grid",
                "trials (pruned)", "wall time", "best setting"):
        table.add_column(col, justify="left" if col in ("method", "best setting") else "right")
    for name, r in rows.items():
        r["delta_pt"] = 100 * (r["best_cv"] - full["best_cv"])
        r["compute_fraction"] = r["fold_epochs"] / full["fold_epochs"]
        r["meets_target"] = r["delta_pt"] >= -0.3 and r["compute_fraction"] <= 0.2
        table.add_row(name, f"{r['best_cv']:.4f}", f"{r['delta_pt']:+.2f} pt", f"{r['test_acc']:.4f}",
                      str(r["fold_epochs"]), f"{r['compute_fraction']:.1%}", f"{r['trials']} ({r['pruned']})",
                      f"{r['seconds']:.0f} s", " ".join(f"{k}={v}" for k, v in sorted(r["best_params"].items())))
    console.print(table)
    console.print(f"memory: {memory['rss_mb_after_trial_1']:.0f} MB after trial 1, "
                  f"{memory['rss_mb_after_trial_n']:.0f} MB after trial {memory['trials']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"grid": grid, "jobs": args.jobs, "pruner": args.pruner, "seed": args.seed,
                                    "rows": rows, "memory": memory}, indent=2, default=str))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
