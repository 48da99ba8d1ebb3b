"""Transfer learning on Fashion-MNIST: what the feature cache saves, and when the pretrained big model beats
a small one trained from scratch.

Part 1, the feature cache. The article's head (GAP -> Dense(1024, relu) -> Dense(10)) on a frozen ImageNet
EfficientNet-Lite0, 5 head epochs on 10,000 training images (1,000 per class) with 1,000 validation images:
    cached      `daxiao.transfer.train_transfer` as `daxiao train --freeze-base` runs it: the base's features
                computed once (cold: included in the time), then 5 epochs of the head on them;
    warm        the same again with the features already cached (a second head, another lr, a tune trial);
    recompute   the same fit with --feature-cache off: the frozen base runs on every batch of every epoch.
Both trained heads are scored on the full 10,000-image test set (on its features: the frozen base is the
same network in all three). Target: >= 10x less wall time, test accuracy within 0.3 points.

Part 2, few-shot. 10, 50 and 500 labelled training images per class (a fixed seeded draw, nested), test
accuracy on all 10,000 test images, training wall time beside it:
    (a) seed-cnn from scratch, 28 px             (b) mobilenetv2 from scratch, 28 px (stride-1 stem)
    (c) lite0 linear probe, cached features     (d) lite0 + the article's head, cached features
    (e) (d) then fine-tuned: --unfreeze all, backbone lr x 0.1, BatchNorm statistics frozen
No labels beyond the N per class are used: the validation split fit reports on is (up to 100 per class of)
the training images themselves, so fit keeps the epoch with the best training accuracy; nothing is tuned
on the test set. Each row's
time includes computing its own features (the cache is emptied between rows); the test set's features for
(c) and (d) are computed once and their time is reported on its own.

Input size: EfficientNet-Lite0 was trained at 224 px, but one CPU thread runs it at ~21 images/s there
against ~470 at 64 px (measured in this repo, fp32), so the whole benchmark would take hours at 224. Images
are upscaled from 28 to --size (default 64) px and repeated over RGB, with the weights' normalization.

Run from the repository root with one thread (about 12 minutes on this machine; the two parts can run as
separate commands, each updating its part of the JSON):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer.py --parts cache      # then --parts few-shot
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/transfer.py --parts few-shot --shots 500   # one column

Results are printed as tables and written to benchmarks/results/transfer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from daxiao import create_model, fit
from daxiao.config import DataConfig, RunConfig
from daxiao.data import DataBundle, FeatureSplit, TensorSplit, load_data, make_loader
from daxiao.data.preprocess import Preprocess, channel_convert, resize_uint8
from daxiao.training import features as tr
from daxiao.training import transfer
from daxiao.training.loop import evaluate

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "transfer.json"
console = Console(width=None if sys.stdout.isatty() else 150)
SHOTS = (10, 50, 500)
# Epochs per row and shot count: few images need more passes to see enough steps. Chosen once, before
# looking at test accuracy, to fit the CPU budget; the same for every method of a kind.
SCRATCH_EPOCHS = {10: 40, 50: 20, 500: 6}
HEAD_EPOCHS = {10: 60, 50: 30, 500: 15}
FINETUNE_EPOCHS = {10: 8, 50: 4, 500: 2}


def per_class(labels: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """The first k indices of each class in a seeded permutation: the draws for k=10 sit inside k=50's."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    return torch.cat([order[labels[order] == c][:k] for c in range(int(labels.max()) + 1)])


def rgb(split: TensorSplit, size: int) -> TensorSplit:
    """Grey 28 px -> `size` px, repeated over RGB (as `daxiao train --pretrained` loads grey data)."""
    return TensorSplit(channel_convert(resize_uint8(split.images, size), 3, view=True), split.labels)


def run_cfg(epochs: int, batch: int, lr: float, **kw) -> RunConfig:
    return RunConfig.from_dict({"epochs": epochs, "batch_size": batch, "lr": lr, "precision": "fp32",
                                "workers": 0, **kw})


def lite0(head: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("efficientnet-lite0", pretrained=True, num_classes=10, in_chans=3, input_size=size, head=head)


def feature_acc(model: torch.nn.Module, test_feats: FeatureSplit, pre: Preprocess) -> float:
    """Test accuracy of a frozen-base model from the test set's features (its base is the extractor's)."""
    return evaluate(model, make_loader(test_feats, 1024, pre))["acc"]


def image_acc(model: torch.nn.Module, test: TensorSplit, pre: Preprocess) -> float:
    return evaluate(model, make_loader(test, 256, pre))["acc"]


# ---- part 1: the feature cache --------------------------------------------------------------------------
def cache_speed(full: DataBundle, size: int, pre: Preprocess, test_feats: FeatureSplit, epochs: int) -> dict:
    tr_idx, va_idx = per_class(full.train.labels, 1000, 1), per_class(full.val.labels, 100, 1)
    bundle = DataBundle(rgb(TensorSplit(full.train.images[tr_idx], full.train.labels[tr_idx]), size),
                        rgb(TensorSplit(full.val.images[va_idx], full.val.labels[va_idx]), size), None,
                        full.classes, pre, "fashion-mnist 10k")
    out = {"train_images": len(bundle.train), "val_images": len(bundle.val), "epochs": epochs}
    for mode, cache in (("cached", "memory"), ("warm", "memory"), ("recompute", "off")):
        if mode == "cached":
            tr.clear_memory_cache()
        model = lite0("article", size)
        cfg = run_cfg(epochs, 128, 1e-3, freeze_base=True, feature_cache=cache)
        t0 = time.perf_counter()
        transfer.train_transfer(model, bundle, cfg, verbose=False)
        secs = time.perf_counter() - t0
        out[mode] = {"seconds": secs, "test_acc": feature_acc(model, test_feats, pre)}
        console.print(f"cache {mode:>9}: {secs:7.1f} s  test acc {out[mode]['test_acc']:.4f}")
    out["speedup_cold"] = out["recompute"]["seconds"] / out["cached"]["seconds"]
    out["speedup_warm"] = out["recompute"]["seconds"] / out["warm"]["seconds"]
    out["acc_gap_points"] = 100 * abs(out["recompute"]["test_acc"] - out["cached"]["test_acc"])
    return out


# ---- part 2: few-shot ------------------------------------------------------------------------------------
def few_shot(full: DataBundle, size: int, pre: Preprocess, test_feats: TensorSplit, test_rgb: TensorSplit,
             shots: list[int]) -> list:
    rows = []
    for k in shots:
        idx, seen = per_class(full.train.labels, k, 0), per_class(full.train.labels, min(k, 100), 0)
        grey = TensorSplit(full.train.images[idx], full.train.labels[idx])
        grey_val = TensorSplit(full.train.images[seen], full.train.labels[seen])  # inside the training draw
        scratch = DataBundle(grey, grey_val, None, full.classes, full.preprocess, f"fashion-mnist {k}/class")
        big = DataBundle(rgb(grey, size), rgb(grey_val, size), None, full.classes, pre, f"fashion-mnist {k}/class")
        batch = 32 if k < 500 else 64
        for name, method in (("seed-cnn", "(a) seed-cnn, scratch"), ("mobilenetv2", "(b) mobilenetv2, scratch")):
            torch.manual_seed(0)
            model = create_model(name, num_classes=10, in_chans=1, input_size=28)
            t0 = time.perf_counter()
            fit(model, scratch, cfg=run_cfg(SCRATCH_EPOCHS[k], batch, 1e-3), verbose=False)
            rows.append(row(method, k, time.perf_counter() - t0, image_acc(model, full.test, full.preprocess)))
        for head, method in (("linear", "(c) lite0 linear probe, cached"),
                             ("article", "(d) lite0 article head, cached")):
            tr.clear_memory_cache()
            model = lite0(head, size)
            t0 = time.perf_counter()
            transfer.train_transfer(model, big, run_cfg(HEAD_EPOCHS[k], batch, 1e-3, freeze_base=True), verbose=False)
            rows.append(row(method, k, time.perf_counter() - t0, feature_acc(model, test_feats, pre)))
        tr.clear_memory_cache()
        model = lite0("article", size)
        cfg = run_cfg(1, batch, 1e-3, unfreeze="all", head_epochs=HEAD_EPOCHS[k], finetune_epochs=FINETUNE_EPOCHS[k])
        t0 = time.perf_counter()
        transfer.train_transfer(model, big, cfg, verbose=False)
        rows.append(row("(e) lite0 fine-tuned (d + unfreeze all)", k, time.perf_counter() - t0,
                        image_acc(model, test_rgb, pre)))
    return rows


def row(method: str, k: int, secs: float, acc: float) -> dict:
    console.print(f"{k:>4}/class  {method:<42} {acc:.4f}  {secs:7.1f} s")
    return {"method": method, "per_class": k, "train_seconds": secs, "test_acc": acc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="lite0 input side in pixels (224 is its own; see above)")
    p.add_argument("--cache-epochs", type=int, default=5)
    p.add_argument("--parts", nargs="+", default=["cache", "few-shot"], choices=["cache", "few-shot"])
    p.add_argument("--shots", nargs="+", type=int, default=list(SHOTS), choices=SHOTS,
                   help="few-shot rows to (re)measure; the others are kept from the JSON")
    a = p.parse_args()
    torch.manual_seed(0)
    t_all = time.perf_counter()
    full = load_data(DataConfig(data="fashion-mnist"), seed=0)  # 28 px grey: 54k train / 6k val / 10k test
    weights_cfg = create_model("efficientnet-lite0", pretrained=True).pretrained_cfg
    pre = Preprocess(a.size, 3, "squash", weights_cfg["mean"], weights_cfg["std"])
    test_rgb = rgb(full.test, a.size)
    t0 = time.perf_counter()
    extractor = lite0("article", a.size)
    test_feats = FeatureSplit(tr.extract_features(extractor, test_rgb, pre, desc="test features"), full.test.labels)
    test_seconds = time.perf_counter() - t0
    console.print(f"test-set features: {len(test_rgb):,} images in {test_seconds:.1f} s")

    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    old = old if old.get("size") == a.size else {}  # a part measured at another size is not kept
    env = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "size": a.size,
           "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
           "test_feature_seconds": test_seconds}
    if "cache" in a.parts:
        old["cache"] = {**cache_speed(full, a.size, pre, test_feats, a.cache_epochs), **env,
                        "load_average": os.getloadavg()}
    if "few-shot" in a.parts:
        kept = [r for r in old.get("few_shot", {}).get("rows", []) if r["per_class"] not in a.shots]
        rows = kept + few_shot(full, a.size, pre, test_feats, test_rgb, a.shots)
        old["few_shot"] = {"rows": sorted(rows, key=lambda r: r["per_class"]), **env,
                           "load_average": os.getloadavg(),
                           "epochs": {"scratch": SCRATCH_EPOCHS, "head": HEAD_EPOCHS, "finetune": FINETUNE_EPOCHS}}
    old["size"] = a.size
    report(old)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(old, indent=2))
    console.print(f"wrote {RESULTS} ({time.perf_counter() - t_all:.0f} s in all)")


def report(results: dict) -> None:
    size, cache = results["size"], results.get("cache")
    if cache:
        cache_table(size, cache)
    if results.get("few_shot"):
        few_shot_table(size, results["few_shot"])


def cache_table(size: int, cache: dict) -> None:
    t = Table(title=f"Feature cache: article head on frozen EfficientNet-Lite0 at {size} px, {cache['epochs']} "
                    f"epochs, {cache['train_images']:,} train + {cache['val_images']:,} val images, fp32, 1 thread")
    for col in ("path", "wall s", "vs recompute", "test acc"):
        t.add_column(col, justify="left" if col == "path" else "right")
    base = cache["recompute"]["seconds"]
    for mode, label in (("recompute", "recompute the frozen base every epoch"),
                        ("cached", "cached, cold (extract once)"), ("warm", "cached, warm (features already there)")):
        c = cache[mode]
        t.add_row(label, f"{c['seconds']:.1f}", f"{base / c['seconds']:.1f}x", f"{c['test_acc']:.4f}")
    console.print(t)


def few_shot_table(size: int, part: dict) -> None:
    rows = part["rows"]
    f = Table(title=f"Few-shot Fashion-MNIST: test accuracy on 10,000 images (train wall s); lite0 at {size} px, "
                    f"scratch models at 28 px; test features once: {part['test_feature_seconds']:.0f} s")
    f.add_column("method")
    for k in SHOTS:
        f.add_column(f"{k}/class", justify="right")
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = {r["per_class"]: r for r in rows if r["method"] == method}
        f.add_row(method, *(f"{cells[k]['test_acc']:.4f} ({cells[k]['train_seconds']:.0f} s)" if k in cells else "-"
                            for k in SHOTS))
    console.print(f)


if __name__ == "__main__":
    main()
