"""Image folders against the built-in set they were written from: does a folder train as fast as the
in-memory set once decoded, and reach the same accuracy?

    .venv/bin/python benchmarks/folders.py --part fashion      # 70,000 PNGs, seed-cnn, 5 epochs
    .venv/bin/python benchmarks/folders.py --part 224          # upscaled JPEGs, efficientnet-lite0 frozen

`--part fashion` writes Fashion-MNIST (Debian's idx files) as PNGs into OUT/fashion/{train,test}/<class>/
(class folders named 0_T-shirt-top ... 9_Ankle-boot so that sorted names keep the built-in label order),
then trains seed-cnn for 5 epochs, each case in a fresh process:
    built-in      --data fashion-mnist (in memory)
    folder        --data OUT/fashion (train/ + test/), data cache auto -> memory; run twice (cold, warm)
    folder disk   --data-cache disk, a fresh cache folder: cold builds the cache, warm reuses it
    folder off    --data-cache off: decoded per batch by a DataLoader (the old path), one epoch, for scale
    csv           the train PNGs listed in the idx files' order (a CSV), test scored on test/
Same seed and same split in all of them. `--part 224` writes N Fashion-MNIST images upscaled to 224 px
RGB JPEGs (train/ + test/) and trains efficientnet-lite0 --pretrained --freeze-base with disk caches for
the decoded images and the features: cold (empty caches) then warm.

Figures: time to first batch (process start to the first training step: imports, scan, decode), images/s
per epoch, total wall time, test accuracy. Prints a table and JSON; writes benchmarks/results/folders-*.json.
Run it under `flock /tmp/daxiao-bench.lock`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def cpu() -> str:
    model, flags = platform.processor(), ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in have)
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores; {flags})"


def load_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    sys.path.insert(0, str(ROOT / "src"))
    from daxiao.data.builtin import FASHION_CLASSES, read_idx

    def part(name: str) -> np.ndarray:
        return read_idx(FASHION / f"{name}.gz")

    return (part("train-images-idx3-ubyte"), part("train-labels-idx1-ubyte"), part("t10k-images-idx3-ubyte"),
            part("t10k-labels-idx1-ubyte"), FASHION_CLASSES)


def class_dirs(classes: list[str]) -> list[str]:
    return [f"{i}_{c.replace('/', '-').replace(' ', '-')}" for i, c in enumerate(classes)]


def write_images(root: Path, x: np.ndarray, y: np.ndarray, names: list[str], size: int = 0,
                 ext: str = ".png") -> list[Path]:
    """One file per image, in threads (the encoders release the GIL); returns the paths in array order."""
    from PIL import Image

    for n in names:
        (root / n).mkdir(parents=True, exist_ok=True)
    paths = [root / names[int(label)] / f"{i:05d}{ext}" for i, label in enumerate(y)]

    def one(i: int) -> None:
        img = Image.fromarray(x[i], "L")
        if size:
            img = img.resize((size, size), Image.BILINEAR).convert("RGB")
        img.save(paths[i], quality=90) if ext == ".jpg" else img.save(paths[i])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(len(y))))
    return paths


def prepare_fashion(out: Path) -> Path:
    root = out / "fashion"
    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    xtr, ytr, xte, yte, classes = load_arrays()
    names = class_dirs(classes)
    t0 = time.perf_counter()
    train_paths = write_images(root / "train", xtr, ytr, names)
    write_images(root / "test", xte, yte, names)
    (out / "fashion-train.csv").write_text(
        "path,label\n" + "".join(f"{p},{names[int(label)]}\n" for p, label in zip(train_paths, ytr, strict=True)))
    (root / "done").write_text(f"{time.perf_counter() - t0:.1f}s")
    return root


def prepare_224(out: Path, n: int) -> Path:
    root = out / f"fashion224-{n}"
    if (root / "done").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    xtr, ytr, xte, yte, classes = load_arrays()
    names = class_dirs(classes)
    n_test = n // 5
    write_images(root / "train", xtr[:n - n_test], ytr[:n - n_test], names, size=224, ext=".jpg")
    write_images(root / "test", xte[:n_test], yte[:n_test], names, size=224, ext=".jpg")
    (root / "done").write_text("ok")
    return root


# ---- one case, in a fresh process ------------------------------------------------------------------------
def child(spec: dict) -> dict:
    t0 = float(os.environ["DAXIAO_BENCH_T0"])
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from daxiao.config import DataConfig, RunConfig
    from daxiao.data import load_data, make_loader
    from daxiao.training.callbacks import Callback
    from daxiao.training.loop import evaluate
    from daxiao.training.runs import build, train

    first: dict = {}

    class FirstBatch(Callback):
        def on_train_batch_begin(self, step, logs=None):
            first.setdefault("t", time.time() - t0)

    cfg = RunConfig.from_dict(spec["config"]).validate()
    t_build = time.perf_counter()
    _, bundle = build(cfg)
    t_build = time.perf_counter() - t_build
    r = train(cfg, bundle=bundle, callbacks=[FirstBatch()])
    model, pre = r["model"], r["preprocess"]
    test = bundle.test
    if test is None:  # the CSV case: the test folder, with the model's preprocessing and classes
        test = load_data(DataConfig(data=spec["test"]), 0, preprocess=pre, classes=bundle.classes).val
    with torch.no_grad():
        acc = evaluate(model, make_loader(test, 512, pre, workers=cfg.data.workers), device=torch.device("cpu"))["acc"]
    return {"case": spec["case"], "first_batch_s": first.get("t"), "load_s": t_build,
            "images_per_s": [h["images_per_s"] for h in r["history"]],
            "epoch_s": [h["epoch_seconds"] for h in r["history"]], "test_acc": acc,
            "wall_s": time.time() - t0, "train_type": type(bundle.train).__name__}


def run_case(case: str, config: dict, **extra) -> dict:
    env = {**os.environ, "DAXIAO_BENCH_T0": repr(time.time()), "PYTHONPATH": str(ROOT / "src")}
    spec = json.dumps({"case": case, "config": config, **extra})
    p = subprocess.run([sys.executable, __file__, "--child", spec], env=env, capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"{case} failed")
    log = [line for line in p.stderr.splitlines() if line.startswith(("layout", "data cache", "decoded", "reused"))]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["log"] = log
    print(f"  {case}: {r['wall_s']:.1f}s wall, load {r['load_s']:.1f}s, first batch {fmt(r['first_batch_s'])}s, "
          f"{np.median(r['images_per_s']):,.0f} img/s, test acc {r['test_acc']:.4f}  | {' | '.join(log)}", flush=True)
    return r


def fashion_cases(out: Path, epochs: int) -> list[dict]:
    root = prepare_fashion(out)
    runs = out / "runs"
    base = {"model": "seed-cnn", "epochs": epochs, "batch_size": 128, "seed": 0, "precision": "fp32",
            "project": str(runs), "exist_ok": True}
    disk = out / "cache-disk"
    shutil.rmtree(disk, ignore_errors=True)
    rows = [run_case("built-in fashion-mnist", {**base, "data": "fashion-mnist", "name": "builtin"})]
    for label in ("cold", "warm"):
        rows.append(run_case(f"folder, auto (memory), {label}", {**base, "data": str(root), "name": "mem"}))
    for label in ("cold", "warm"):
        rows.append(run_case(f"folder, --data-cache disk, {label}",
                             {**base, "data": str(root), "name": "disk", "data_cache": "disk", "cache_dir": str(disk)}))
    rows.append(run_case("folder, --data-cache off (per-batch decode, 1 epoch)",
                         {**base, "data": str(root), "name": "off", "data_cache": "off", "epochs": 1}))
    rows.append(run_case("CSV of the train PNGs in idx order", {**base, "data": str(out / "fashion-train.csv"),
                                                                "name": "csv"}, test=str(root / "test")))
    return rows


def big_cases(out: Path, n: int, epochs: int) -> list[dict]:
    root = prepare_224(out, n)
    cache = out / f"cache-224-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    base = {"model": "efficientnet-lite0", "pretrained": True, "freeze_base": True, "epochs": epochs,
            "batch_size": 64, "seed": 0, "data": str(root), "project": str(out / "runs"), "exist_ok": True,
            "name": "lite0", "data_cache": "disk", "feature_cache": "disk", "cache_dir": str(cache)}
    return [run_case(f"{n} JPEGs 224 px, lite0 frozen, {label}", base) for label in ("cold", "warm")]


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def interleaved(out: Path, rounds: int, steps: int) -> dict:
    """Training throughput once decoded, A/B/C in one process and alternated (the machine's load changes
    by the minute; alternating gives each source the same conditions): `steps` training steps of seed-cnn
    (batch 128, fp32, Adam) from the built-in set, the folder in memory and the folder's disk cache."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from daxiao.config import DataConfig
    from daxiao.data import load_data, make_loader
    from daxiao.models import create_model

    root = prepare_fashion(out)
    sources = {"built-in": load_data(DataConfig(data="fashion-mnist"), 0),
               "folder, memory": load_data(DataConfig(data=str(root), data_cache="memory"), 0),
               "folder, disk cache": load_data(DataConfig(data=str(root), data_cache="disk"), 0,
                                               cache_dir=out / "cache-disk")}
    rates: dict[str, list[float]] = {k: [] for k in sources}
    for r in range(rounds):
        for name, b in sources.items():
            torch.manual_seed(0)
            model = create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
            model = model.to(memory_format=torch.channels_last).train()
            opt = torch.optim.Adam(model.parameters(), 1e-3)
            loader = make_loader(b.train, 128, b.preprocess, shuffle=True, seed=r)
            it, seen = iter(loader), 0
            t0 = time.perf_counter()
            for _ in range(steps):
                batch = next(it).to(torch.device("cpu"))
                loss = torch.nn.functional.cross_entropy(model(batch.inputs), batch.targets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(batch)
            rates[name].append(seen / (time.perf_counter() - t0))
            print(f"  round {r + 1} {name}: {rates[name][-1]:,.0f} img/s", flush=True)
    base = float(np.median(rates["built-in"]))
    return {k: {"images_per_s": v, "median": float(np.median(v)), "vs_builtin": float(np.median(v)) / base}
            for k, v in rates.items()}


def table(rows: list[dict], anchor: float | None) -> str:
    lines = ["| case | load s (scan + decode) | time to first batch s | images/s per epoch | vs built-in | "
             "total wall s | test acc |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ips = r["images_per_s"]
        per = ", ".join(f"{v:,.0f}" for v in ips)
        ratio = f"{np.median(ips) / anchor:.2f}x" if anchor else ""
        lines.append(f"| {r['case']} | {r['load_s']:.1f} | {fmt(r['first_batch_s'])} | {per} | {ratio} | "
                     f"{r['wall_s']:.1f} | "
                     f"{r['test_acc']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["fashion", "224", "interleaved"], default="fashion")
    ap.add_argument("--rounds", type=int, default=5, help="--part interleaved: alternations")
    ap.add_argument("--steps", type=int, default=100, help="--part interleaved: training steps per measurement")
    ap.add_argument("--out", default="/tmp/daxiao-folders", help="where the image folders and caches go")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--images", type=int, default=5000, help="--part 224: images written (1/5 of them test)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    if not FASHION.is_dir():
        raise SystemExit(f"needs Debian's dataset-fashion-mnist ({FASHION})")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"CPU: {cpu()}; load before {load[0]:.2f}", flush=True)
    if a.part == "interleaved":
        r = interleaved(out, a.rounds, a.steps)
        after = os.getloadavg()
        print("| source | median img/s | vs built-in |\n|---|---:|---:|")
        for k, v in r.items():
            print(f"| {k} | {v['median']:,.0f} | {v['vs_builtin']:.2f}x |")
        dest = ROOT / "benchmarks" / "results" / "folders-interleaved.json"
        dest.parent.mkdir(exist_ok=True)
        dest.write_text(json.dumps({"cpu": cpu(), "load_before": load, "load_after": after, "rounds": a.rounds,
                                    "steps": a.steps, "sources": r, "command": " ".join(sys.argv)}, indent=2))
        return
    rows = fashion_cases(out, a.epochs) if a.part == "fashion" else big_cases(out, a.images, a.epochs)
    anchor = np.median(rows[0]["images_per_s"]) if a.part == "fashion" else None
    after = os.getloadavg()
    print(table(rows, anchor))
    result = {"part": a.part, "cpu": cpu(), "load_before": load, "load_after": after, "epochs": a.epochs,
              "rows": rows, "command": " ".join(sys.argv)}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    dest = ROOT / "benchmarks" / "results" / f"folders-{a.part}.json"
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
