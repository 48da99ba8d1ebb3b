"""`daxiao export RUN`: a trained run -> a verified bundle (ONNX or TorchScript, optionally int8).

Parity is checked at export time on real validation images, the exported model against PyTorch:
max |delta logit|, top-1 agreement and the accuracy of each. A fp32 export that agrees on fewer than
99.9 % of the images, or whose logits differ by more than FP32_TOL (relative to the logits' scale), is
an error and writes no bundle: a model that predicts differently from the one that was validated is
the most common export complaint (Ultralytics' tracker), so it never ships silently.

ONNX: `torch.onnx.export(dynamo=True)`, the torch.export-based exporter (the TorchScript-based one is
deprecated since torch 2.9), with a dynamic batch axis and opset 18, which onnxruntime >= 1.14 runs.
TorchScript: `torch.jit.trace`, because the zoo's models are static graphs (no data-dependent control
flow), and trace accepts every timm/torchvision model where `torch.jit.script` rejects some of their
Python; the parity check would catch a trace that missed a branch. TorchScript is deprecated from torch
2.10 on but is still what libtorch (C++) and mobile runtimes load; ONNX is the recommended format, and
the only one the torch-free runtime runs.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..console import console
from ..data import load_data, make_loader
from ..errors import DaxiaoError, check_choice
from ..files import next_free
from ..models.saved import LoadedRun, load_run
from .bundle import write_bundle
from .quantize import INT8_MAX_DROP, best_int8
from .runtime import cpu_count, cpu_model, measure_latency, onnx_engine, paired_latency, torchscript_engine

FORMATS = ("onnx", "torchscript")
OPSET = 18
FP32_TOL = 1e-3       # max |delta logit| allowed, times max(1, max |logit|): float32 reordering stays ~1e-5
MIN_AGREEMENT = 99.9  # percent of top-1 predictions that must match PyTorch's


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, opset: int = OPSET) -> Path:
    """`model` as one self-contained .onnx file (weights inside), batch axis dynamic."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), opset_version=opset, dynamo=True, external_data=False,
                          verbose=False)
    except Exception as e:  # the exporter raises many types; the first line names the op that failed
        raise DaxiaoError(f"ONNX export of {type(model).__name__} failed: {str(e).splitlines()[0][:200]}") from None
    return path


def export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "jit.trace is deprecated" (torch >= 2.10); see the docstring
        traced = torch.jit.trace(model, example, check_trace=False)  # parity below is the stronger check
    traced.save(str(path))
    return path


def validation_data(run: LoadedRun, data: str | None, data_dir: str | None, n_val: int,
                    n_calib: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(val inputs, val labels, calibration inputs, description): normalized exactly as in training.
    The run's own data and split by default (validation split for parity, training split for calibration)."""
    pre = run.preprocess
    if data is None:
        if run.config is None:
            need = "the parity check and int8 calibration need" if n_calib else "the parity check needs"
            raise DaxiaoError(f"{run.path} does not record its training data, which {need}; "
                              "pass --data with labelled images of its classes.")
        cfg = replace(run.config.data, augment="none", workers=0, data_dir=data_dir or run.config.data.data_dir)
        bundle, seed, where = load_data(cfg, run.config.train.seed, preprocess=pre), run.config.train.seed, cfg.data
        if bundle.classes != run.classes:
            raise DaxiaoError(f"{where} now has classes {bundle.classes[:5]}..., not the run's; pass --data.")
    else:
        bundle = load_data(DataConfig(data=data, data_dir=data_dir, workers=0), 0, preprocess=pre, classes=run.classes)
        seed, where = 0, data

    def take(split, n: int, shuffle: bool) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys, have = [], [], 0
        if split is not None and n > 0:
            for b in make_loader(split, 64, pre, shuffle=shuffle, seed=seed, workers=0):
                xs.append(b.inputs)
                ys.append(b.targets)
                have += len(b.targets)
                if have >= n:
                    break
        if not xs:
            return torch.empty(0, pre.channels, pre.image_size, pre.image_size), torch.empty(0, dtype=torch.long)
        return torch.cat(xs)[:n].contiguous(), torch.cat(ys)[:n]

    x_val, y_val = take(bundle.val, n_val, False)
    if not len(x_val):
        raise DaxiaoError(f"{where} has no validation images for the parity check; pass --data.")
    x_cal, _ = take(bundle.train, n_calib, True)
    return x_val, y_val, x_cal, f"{where} ({'val' if data is None else 'all'})"


def compare(ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> dict:
    """Parity numbers of `got` logits against the `ref` (PyTorch) logits."""
    scale = max(1.0, float(np.abs(ref).max()))
    return {"max_abs_logit_diff": float(np.abs(ref - got).max()),
            "top1_agreement": round(100 * float((ref.argmax(1) == got.argmax(1)).mean()), 3),
            "acc_torch": float((ref.argmax(1) == labels).mean()), "acc_export": float((got.argmax(1) == labels).mean()),
            "tolerance": FP32_TOL * scale, "min_agreement": MIN_AGREEMENT}


def logits_of(run_fn, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([run_fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def export_run(source: str | Path, fmt: str = "onnx", out: str | Path | None = None, int8: bool = False,
               calib: int = 256, data: str | None = None, data_dir: str | None = None, parity_images: int = 1000,
               exist_ok: bool = False) -> dict:
    """Export a run folder or weights file to a verified bundle; returns a summary (bundle path, parity,
    latency, default variant, notes). Raises DaxiaoError (and writes nothing) when parity fails."""
    check_choice("--format", fmt, FORMATS)
    if int8 and fmt != "onnx":
        raise DaxiaoError("--int8 quantizes ONNX models: use --format onnx.")
    if int8 and calib < 1:
        raise DaxiaoError(f"--int8 needs calibration images: --calib must be >= 1 (received {calib}).")
    run = load_run(source)
    home = run.path.parent
    out = Path(out) if out else next_free(home, f"bundle-{fmt}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not exist_ok:
        raise DaxiaoError(f"{out} exists; choose another --out, or pass --exist-ok to replace it.")
    model, pre = run.model.eval().float(), run.preprocess
    console.print(f"export {run.name} ({run.path}) -> {fmt}; parity images from the run's data")
    x_val, y_val, x_cal, where = validation_data(run, data, data_dir, parity_images, calib if int8 else 0)
    if int8 and len(x_cal) == 0:
        raise DaxiaoError(f"--int8 needs calibration images and {where} has no training split; pass --data.")
    with torch.no_grad():
        ref = logits_of(lambda x: model(torch.from_numpy(x)).float().numpy(), x_val.numpy())
    labels = y_val.numpy()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent if out.parent.exists() else None) as tmp:
        tmp = Path(tmp)
        example = x_val[:2].clone()
        if fmt == "onnx":
            path = export_onnx(model, example, tmp / "model.onnx")
            engine = onnx_engine(path, pre, run.classes, run.name)
        else:
            path = export_torchscript(model, example, tmp / "model.ts")
            engine = torchscript_engine(path, pre, run.classes, run.name, None)
        p32 = compare(ref, logits_of(engine.logits, x_val.numpy()), labels)
        p32["passed"] = p32["top1_agreement"] >= MIN_AGREEMENT and p32["max_abs_logit_diff"] <= p32["tolerance"]
        console.print(f"parity fp32 on {len(labels)} images of {where}: top-1 agreement {p32['top1_agreement']:.2f} %, "
                      f"max |dlogit| {p32['max_abs_logit_diff']:.2e} (tolerance {p32['tolerance']:.1e}), "
                      f"acc torch {p32['acc_torch']:.4f} / {fmt} {p32['acc_export']:.4f}")
        if not p32["passed"]:
            raise DaxiaoError(f"Parity check failed: the {fmt} model agrees with PyTorch on "
                              f"{p32['top1_agreement']:.2f} % of {len(labels)} images (need {MIN_AGREEMENT} %) "
                              f"with max |dlogit| {p32['max_abs_logit_diff']:.3g} (tolerance {p32['tolerance']:.3g}); "
                              "no bundle written. "
                              "Report the model name with this message.")
        files = {"fp32": path}
        latency = {"threads": cpu_count(), "cpu": cpu_model(), "fp32": measure_latency(engine)}
        parity = {"images": len(labels), "data": where, "fp32": p32}
        default, int8_info = "fp32", None
        if int8:
            def score(p: Path) -> dict:
                e = onnx_engine(p, pre, run.classes, run.name)
                c = compare(ref, logits_of(e.logits, x_val.numpy()), labels)
                return {"acc": c["acc_export"], "top1_agreement": c["top1_agreement"],
                        "max_abs_logit_diff": c["max_abs_logit_diff"]}

            def time_all(paths: dict[str, Path]) -> dict[str, dict]:
                engines = {k: engine if k == "fp32" else onnx_engine(p, pre, run.classes, run.name)
                           for k, p in paths.items()}
                return paired_latency(engines)

            q, rows, f32_paired = best_int8(path, tmp / "model.int8.onnx", x_cal.numpy(), score, time_all,
                                            p32["acc_export"])
            int8_info = {"calibration_images": len(x_cal), "max_drop": INT8_MAX_DROP, "candidates": rows}
            if q is None:
                notes.append("int8: no candidate could be built on this onnxruntime; the bundle has fp32 only.")
            else:
                best = next(r for r in rows if r.get("chosen"))
                files["int8"] = q
                parity["int8"] = {"max_abs_logit_diff": best["max_abs_logit_diff"], "passed": True,
                                  "top1_agreement": best["top1_agreement"], "acc_export": best["acc"],
                                  "acc_drop": best["acc_drop"], "format": best["format"],
                                  "activations": best["activations"], "weights": best["weights"]}
                # fp32 and every int8 candidate were timed in alternation: the decision compares like with like
                latency["fp32"], latency["int8"] = f32_paired, best["latency"]
                f32, i8 = latency["fp32"]["median_ms"], latency["int8"]["median_ms"]
                if i8 >= f32:
                    notes.append(f"int8 is slower than fp32 here ({i8:.3f} vs {f32:.3f} ms at batch 1, "
                                 f"{cpu_model()}): fp32 stays the bundle's default.")
                elif best["acc_drop"] > INT8_MAX_DROP:
                    notes.append(f"int8 loses {best['acc_drop']:.2f} points of accuracy (> {INT8_MAX_DROP}): "
                                 "fp32 stays the bundle's default.")
                else:
                    default = "int8"
                    notes.append(f"int8 ({best['format']} {best['activations']}/{best['weights']}) is "
                                 f"{f32 / i8:.2f}x faster than fp32 at batch 1 and loses {best['acc_drop']:.2f} "
                                 "points: it is the bundle's default (--variant fp32 picks the other).")
        meta = {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runtime": fmt, "default": default,
            "model": {"name": run.name, "args": run.meta.get("model_args", {}), "source": str(run.path),
                      "params": int(sum(p.numel() for p in model.parameters())), "epoch": run.meta.get("epoch"),
                      "val_acc": run.meta.get("val_acc")},
            "input": {"name": "input", "shape": [None, pre.channels, pre.image_size, pre.image_size],
                      "dtype": "float32", "normalized": "uint8 * scale + shift, per channel (see preprocess)"},
            "output": {"name": "logits", "shape": [None, len(run.classes)]},
            "preprocess": pre.to_dict(), "classes": run.classes, "config": run.meta.get("config"),
            "metrics": read_metrics(run.path.parent), "parity": parity, "latency": latency, "int8": int8_info,
            "exporter": {"torch": torch.__version__, "opset": OPSET if fmt == "onnx" else None,
                         "onnxruntime": _ort_version()},
        }
        write_bundle(out, files, meta, exist_ok)
    for n in notes:
        console.print(n)
    return {"bundle": str(out), "default": default, "parity": parity, "latency": latency, "notes": notes}


def read_metrics(run_dir: Path) -> list[dict] | None:
    """The run's metrics.csv (one row per epoch), when the weights sit in their run folder."""
    import csv

    f = run_dir / "metrics.csv"
    if not f.is_file():
        return None
    with open(f, newline="") as fh:
        return list(csv.DictReader(fh))


def _ort_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__
