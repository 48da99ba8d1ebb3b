"""Run a bundle: engines that turn normalized float32 batches into logits, and predict/evaluate on top.

`open_engine` picks the engine from what it is given: a bundle folder (ONNX through onnxruntime, the
torch-free path; a TorchScript bundle needs torch), a bare .onnx file (with classes and input size from
the caller), or a run folder / weights file (the PyTorch model itself, through `load_run`).
Images are decoded by `daxiao.data.decode` and preprocessed by the same `Preprocess` training used.
This module imports no torch unless a TorchScript bundle or a run folder is opened.
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.decode import BadImage, decode_array
from ..data.folder import collect_images, read_csv_list, scan_folder
from ..data.layout import detect_layout
from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from .bundle import Bundle, bundle_dir, read_bundle

OPT_LEVELS = ("disable", "basic", "extended", "all")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), for every figure that depends on it."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ort_session(path: str | Path, threads: int | None = None, opt_level: str = "all"):
    """An onnxruntime CPU session; `threads` intra-op threads (default: onnxruntime's, one per core)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DaxiaoError("Running ONNX models needs onnxruntime: pip install onnxruntime "
                          "(or pip install 'daxiao[deploy]').") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for invalid/unsupported graphs
        raise DaxiaoError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0][:200]}") from None


@dataclass
class Engine:
    """A model behind one `logits(x)` call. `run` is the backend's callable; it must be thread-safe
    (an onnxruntime session is; so is a torch module in eval mode under no_grad)."""

    name: str
    classes: list[str]
    preprocess: Preprocess
    kind: str                        # "onnx", "torchscript" or "torch"
    path: Path
    run: object = field(repr=False)  # callable: float32 (B, C, H, W) ndarray -> logits ndarray
    bundle: Bundle | None = None
    variant: str | None = None
    session: object = field(default=None, repr=False)  # the onnxruntime session, for benchmarks

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.run(np.ascontiguousarray(x, dtype=np.float32))

    def info(self) -> dict:
        """What GET /model and `daxiao predict --json` report about the model."""
        p = self.preprocess
        meta = self.bundle.meta if self.bundle else {}
        keys = ("max_abs_logit_diff", "top1_agreement", "acc_torch", "acc_export", "acc_drop", "passed")
        parity = {k: {m: v[m] for m in keys if m in v}
                  for k, v in meta.get("parity", {}).items() if isinstance(v, dict)}
        return {"name": self.name, "kind": self.kind, "variant": self.variant, "path": str(self.path),
                "classes": self.classes, "input_size": [p.channels, p.image_size, p.image_size],
                "preprocess": p.to_dict(), "params": meta.get("model", {}).get("params"),
                "parity": parity,
                "latency": meta.get("latency")}


def onnx_engine(path: Path, pre: Preprocess, classes: list[str], name: str, threads: int | None = None,
                opt_level: str = "all", bundle: Bundle | None = None, variant: str | None = None) -> Engine:
    sess = ort_session(path, threads, opt_level)
    inp, outp = sess.get_inputs()[0].name, sess.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run([outp], {inp: x})[0]

    return Engine(name, classes, pre, "onnx", path, run, bundle, variant, sess)


def torchscript_engine(path: Path, pre: Preprocess, classes: list[str], name: str, bundle: Bundle | None) -> Engine:
    try:
        import torch
    except ImportError:
        raise DaxiaoError(f"{path} is a TorchScript bundle, which needs torch; export with --format onnx for "
                          "the torch-free runtime.") from None
    import warnings

    with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated; the format is still what
        warnings.simplefilter("ignore", FutureWarning)  # libtorch (C++) and older runtimes load
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).float().numpy()

    return Engine(name, classes, pre, "torchscript", path, run, bundle, "fp32")


def torch_engine(path: str | Path) -> Engine:
    """A run folder or weights file, run by PyTorch itself (needs torch)."""
    try:
        from ..models.saved import load_run
    except ImportError:
        raise DaxiaoError(f"{path} is a run folder or weights file, which needs torch; export it with "
                          "`daxiao export` and use the bundle for the torch-free runtime.") from None
    import torch

    run = load_run(path)
    model = run.model.eval()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return Engine(run.name, run.classes, run.preprocess, "torch", run.path, forward)


def open_engine(source: str | Path, variant: str | None = None, threads: int | None = None, opt_level: str = "all",
                classes: list[str] | None = None, image_size: int | None = None, resize: str = "squash",
                mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> Engine:
    """The engine for a bundle, a bare .onnx file (needs `classes` and `image_size`), or a run folder."""
    source = Path(source)
    folder = bundle_dir(source)
    if folder is not None:
        b = read_bundle(folder)
        if b.runtime == "torchscript":
            return torchscript_engine(b.file(), b.preprocess, b.classes, b.name, b)
        if source.suffix == ".onnx" and variant is None:  # a model file named inside the bundle: that one
            variant = next((v for v, f in b.meta["files"].items() if f["path"] == source.name), None)
        variant = variant or b.default
        return onnx_engine(b.file(variant), b.preprocess, b.classes, b.name, threads, opt_level, b, variant)
    if source.suffix == ".onnx":
        if not source.is_file():
            raise DaxiaoError(f"No such ONNX file: {source}.")
        missing = [flag for flag, v in (("--classes", classes), ("--image-size", image_size)) if not v]
        if missing:
            raise DaxiaoError(f"{source} is not a daxiao bundle (no bundle.json beside it): pass "
                              f"{' and '.join(missing)} (classes comma-separated or a file with one per line).")
        sess = ort_session(source, threads, opt_level)
        shape = sess.get_inputs()[0].shape
        channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else 3
        pre = Preprocess(image_size, channels, resize, mean or (0.5,) * channels, std or (0.5,) * channels)
        return onnx_engine(source, pre, list(classes), source.stem, threads, opt_level, None, "fp32")
    return torch_engine(source)


def read_classes(value: str | None) -> list[str] | None:
    """--classes: 'a,b,c' or a text file with one class per line."""
    if not value:
        return None
    p = Path(value)
    names = p.read_text().splitlines() if p.is_file() else value.split(",")
    names = [n.strip() for n in names if n.strip()]
    if len(names) < 2:
        raise DaxiaoError(f"--classes {value!r} names {len(names)} class; give at least two (a,b,...) or a file.")
    return names


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def top_k(engine: Engine, probs: np.ndarray, k: int) -> list[list[dict]]:
    k = min(k, len(engine.classes))
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"class": engine.classes[c], "probability": round(float(p[c]), 6)} for c in row]
            for p, row in zip(probs, idx, strict=True)]


def predict_arrays(engine: Engine, images: list[np.ndarray], k: int = 5) -> list[list[dict]]:
    """uint8 (C, S, S) arrays from `decode_array` -> top-k per image."""
    x = engine.preprocess.normalize_array(np.stack(images))
    return top_k(engine, softmax(engine.logits(x)), k)


def predict_files(engine: Engine, inputs: list[str | Path], k: int = 5, batch_size: int = 64) -> list[dict]:
    """Top-k for each file (folders searched); unreadable files are reported per file, as `daxiao predict`."""
    results: list[dict] = []
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if batch:
            for (i, _), top in zip(batch, predict_arrays(engine, [a for _, a in batch], k), strict=True):
                results[i]["top"] = top
            batch.clear()

    for f in collect_images(inputs):
        results.append({"file": str(f)})
        try:
            batch.append((len(results) - 1, decode_array(f, engine.preprocess)))
        except BadImage as e:
            results[-1]["error"] = f"bad image: {e}"
        if len(batch) >= batch_size:
            flush()
    flush()
    return results


def measure_latency(engine: Engine, batch: int = 1, runs: int = 50, warmup: int = 5, budget_s: float = 0.5) -> dict:
    """Median and p95 of `runs` timed calls on a random batch (stops early after `budget_s`)."""
    p = engine.preprocess
    x = np.random.default_rng(0).standard_normal((batch, p.channels, p.image_size, p.image_size), dtype=np.float32)
    for _ in range(warmup):
        engine.logits(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (time.perf_counter() - start < budget_s or len(times) < 5):
        t = time.perf_counter()
        engine.logits(x)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 4), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 4),
            "runs": len(times), "batch": batch}


def paired_latency(engines: dict[str, Engine], rounds: int = 15, calls: int = 10) -> dict[str, dict]:
    """Batch-1 latency of several engines measured in alternating rounds, so that a burst of load from
    other processes hits all of them alike (one after the other, a busy moment can fake a 10x gap).
    Per engine: the median over rounds of each round's median call, and the p95 of all calls."""
    p = next(iter(engines.values())).preprocess
    x = np.random.default_rng(0).standard_normal((1, p.channels, p.image_size, p.image_size), dtype=np.float32)
    for e in engines.values():
        for _ in range(5):
            e.logits(x)
    per_round: dict[str, list[float]] = {k: [] for k in engines}
    every: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for k, e in engines.items():
            ts = []
            for _ in range(calls):
                t = time.perf_counter()
                e.logits(x)
                ts.append((time.perf_counter() - t) * 1000)
            per_round[k].append(statistics.median(ts))
            every[k] += ts
    return {k: {"median_ms": round(statistics.median(per_round[k]), 4),
                "p95_ms": round(sorted(every[k])[int(0.95 * (len(every[k]) - 1))], 4), "runs": len(every[k]),
                "batch": 1, "paired": True} for k in engines}


def evaluate_files(engine: Engine, data: str | Path, split: str = "test", batch_size: int = 64,
                   workers: int = 2) -> dict:
    """Accuracy and per-class metrics of `engine` on an image folder or CSV list (all its images; in a
    train/val/test layout, the `split` folder), in the model's class order. Torch-free."""
    path = Path(data)
    layout, scored = detect_layout(path), "all"
    if layout.kind in ("splits", "train-test", "train"):  # the asked split's folder, else val, else test
        folders = {"train": layout.train, "val": layout.val, "test": layout.test}
        scored = next(n for n in (split, "val", "test", "train") if folders.get(n))
        path = folders[scored]
    if path.is_file() and path.suffix.lower() == ".csv":
        paths, labels, found = read_csv_list(path)
    elif path.is_dir():
        paths, labels, found = scan_folder(path)
    else:
        raise DaxiaoError(f"--data {data!r} is not an image folder or .csv list.")
    extra = [c for c in found if c not in engine.classes]
    if extra:
        raise DaxiaoError(f"{path} has classes the model was not trained on: {', '.join(extra[:5])}.")
    labels = [engine.classes.index(found[i]) for i in labels]

    def decode(p: Path) -> np.ndarray | None:
        try:
            return decode_array(p, engine.preprocess)
        except BadImage:
            return None

    with ThreadPoolExecutor(max(1, workers)) as pool:  # Pillow releases the GIL while decoding
        arrays = list(pool.map(decode, paths))
    keep = [i for i, a in enumerate(arrays) if a is not None]
    if not keep:
        raise DaxiaoError(f"{path}: none of the {len(paths)} images could be read.")
    y = np.array([labels[i] for i in keep])
    probs = np.concatenate([softmax(engine.logits(engine.preprocess.normalize_array(
        np.stack([arrays[i] for i in keep[j:j + batch_size]])))) for j in range(0, len(keep), batch_size)])
    names = [str(paths[i]) for i in keep]
    return {**scores(y, probs, engine.classes), "data": str(data), "split": scored,
            "skipped": len(paths) - len(keep), "labels": y, "probs": probs, "names": names}


def scores(y: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """acc, loss (cross-entropy), top-5 (5+ classes) and per-class precision/recall/F1, in numpy."""
    pred = probs.argmax(1)
    n = len(y)
    out = {"acc": float((pred == y).mean()), "n": n,
           "loss": float(-np.log(np.clip(probs[np.arange(n), y], 1e-12, None)).mean())}
    if probs.shape[1] >= 5:
        out["top5"] = float((np.argsort(-probs, 1)[:, :5] == y[:, None]).any(1).mean())
    per = {}
    for i, c in enumerate(classes):
        tp = int(((pred == i) & (y == i)).sum())
        npred, support = int((pred == i).sum()), int((y == i).sum())
        prec = tp / npred if npred else 0.0
        rec = tp / support if support else 0.0
        per[c] = {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
                  "support": support}
    out["per_class"] = per
    return out


def open_for_cli(source: str, args) -> Engine:
    """The engine for `daxiao predict/evaluate/serve` flags (variant, threads, bare-ONNX options)."""
    mean = tuple(float(v) for v in args.mean.split(",")) if getattr(args, "mean", None) else None
    std = tuple(float(v) for v in args.std.split(",")) if getattr(args, "std", None) else None
    return open_engine(source, getattr(args, "variant", None), getattr(args, "threads", None),
                       classes=read_classes(getattr(args, "classes", None)),
                       image_size=getattr(args, "image_size", None),
                       resize=getattr(args, "resize", None) or "squash", mean=mean, std=std)


def is_deploy_source(source: str | Path) -> bool:
    """A bundle or an .onnx file: what `predict`/`evaluate` route to this runtime instead of torch."""
    return bundle_dir(source) is not None or Path(source).suffix == ".onnx"
