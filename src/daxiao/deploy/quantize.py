"""int8 by onnxruntime's post-training static quantization, keeping the variant measured fastest here.

Static (not dynamic) quantization: activations get fixed scales from calibration images, so convolutions
run as int8 kernels end to end; per-channel weight scales keep the depthwise convolutions of MobileNets
accurate. Which format is fastest depends on the CPU (VNNI or not, AVX-512 or AVX2) and on onnxruntime's
kernels for the model's ops, and public reports (onnxruntime #17389, #24374, #26143) find int8 often no
faster than fp32 on CPU. So every candidate (QDQ and QOperator, u8/s8 activations) is built, scored
on the parity images and timed on this machine; the fastest whose accuracy holds is kept. No torch.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..console import console
from ..errors import DaxiaoError

# (quant format, activation type, weight type). u8 weights are left out: onnxruntime's x86 int8 GEMMs
# take s8 weights (u8 x s8 is the VNNI/AVX2 fast path) and u8 weights mainly add a conversion.
CANDIDATES = (("QDQ", "s8", "s8"), ("QDQ", "u8", "s8"), ("QOperator", "u8", "s8"), ("QOperator", "s8", "s8"))
INT8_MAX_DROP = 1.0  # points of accuracy an int8 model may lose against fp32 and still be a candidate


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over float32 batches."""

    def __init__(self, name: str, batches: list[np.ndarray]):
        self.name, self.it = name, iter(batches)

    def get_next(self) -> dict | None:
        x = next(self.it, None)
        return None if x is None else {self.name: x}

    def rewind(self) -> None:  # used by some calibrators
        pass


def _batches(x: np.ndarray, size: int = 32) -> Iterator[np.ndarray]:
    for i in range(0, len(x), size):
        yield np.ascontiguousarray(x[i:i + size], dtype=np.float32)


def quantize_one(fp32: Path, out: Path, calib: np.ndarray, fmt: str, act: str, weight: str,
                 input_name: str = "input") -> Path:
    """One static-int8 model of `fp32`, calibrated (min-max) on `calib` (normalized float32 images)."""
    from onnxruntime.quantization import QuantType

    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    root = logging.getLogger()  # onnxruntime.quantization logs advice through the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        return _quantize(fp32, out, calib, fmt, types[act], types[weight], input_name)
    finally:
        root.setLevel(level)


def _quantize(fp32: Path, out: Path, calib: np.ndarray, fmt: str, act, weight, input_name: str) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference + graph clean-up first, as onnxruntime's quantization guide recommends
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception:  # a graph the pre-processor cannot handle still quantizes without it
            src = fp32
        quantize_static(str(src), str(out), _Reader(input_name, list(_batches(calib))),
                        quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                        activation_type=act, weight_type=weight, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    return out


def best_int8(fp32: Path, out: Path, calib: np.ndarray, score: Callable[[Path], dict],
              time_all: Callable[[dict[str, Path]], dict[str, dict]], fp32_acc: float,
              candidates: tuple[tuple[str, str, str], ...] = CANDIDATES) -> tuple[Path | None, list[dict], dict]:
    """Build every candidate and score it (`score(path)` -> {"acc", ...}); then time fp32 and all usable
    candidates together (`time_all({key: path})` -> {key: {"median_ms", ...}}, in alternating rounds) and
    keep the fastest whose accuracy drop is at most INT8_MAX_DROP points (else the most accurate).
    Returns (the kept model at `out`, or None if none could be built; one row per candidate; fp32's latency)."""
    if len(calib) == 0:
        raise DaxiaoError("--int8 needs calibration images, and none were found; pass --data with training images.")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        paths: dict[str, Path] = {}
        for k, (fmt, act, weight) in enumerate(candidates):
            key = f"{fmt}-{act}{weight}"
            path = Path(tmp) / f"{key}.onnx"
            row = {"format": fmt, "activations": act, "weights": weight, "per_channel": True}
            console.print(f"int8 {k + 1}/{len(candidates)}: {fmt} {act}/{weight}, calibrating on {len(calib)} images")
            try:
                quantize_one(fp32, path, calib, fmt, act, weight)
                row.update(score(path))
                paths[key] = path
            except DaxiaoError as e:  # a combination this onnxruntime build cannot run
                row["error"] = str(e)[:200]
            except Exception as e:  # quantize_static refuses some graphs/combinations
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            row["acc_drop"] = round(100 * (fp32_acc - row["acc"]), 3) if "acc" in row else None
            rows.append(row)
        if not paths:
            for r in rows:
                console.print(f"  {r['format']} {r['activations']}/{r['weights']}: not usable: {r['error']}")
            return None, rows, {}
        times = time_all({"fp32": fp32, **paths})
        for r in rows:
            key = f"{r['format']}-{r['activations']}{r['weights']}"
            if key in times:
                r["latency"] = times[key]
                console.print(f"  {r['format']} {r['activations']}/{r['weights']}: acc {r['acc']:.4f} "
                              f"(drop {r['acc_drop']:+.2f} pt), batch-1 {r['latency']['median_ms']:.3f} ms "
                              f"(fp32 {times['fp32']['median_ms']:.3f} ms)")
            else:
                console.print(f"  {r['format']} {r['activations']}/{r['weights']}: not usable: {r['error']}")
        ok = [r for r in rows if "latency" in r]
        good = [r for r in ok if r["acc_drop"] <= INT8_MAX_DROP]
        best = min(good, key=lambda r: r["latency"]["median_ms"]) if good else max(ok, key=lambda r: r["acc"])
        best["chosen"] = True
        paths[f"{best['format']}-{best['activations']}{best['weights']}"].replace(out)
    return out, rows, times["fp32"]
