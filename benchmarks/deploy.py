"""Shipping the small models, measured: PyTorch eager vs ONNX fp32 vs ONNX int8 (and OpenVINO on the same
ONNX file where it is installed), then a loopback load test of `daxiao serve`.

Part 1. Each model trains briefly on the embedded digits set (so accuracy means something; --epochs),
is exported by `daxiao export --int8` (parity-checked; int8 = the variant the export measured fastest)
and measured: batch-1 latency (median, p95) and batch-64 throughput on 1 thread and on all threads;
test accuracy of each backend on the digits test split (360 images, the same normalized inputs for all);
size on disk; and onnxruntime's graph optimisation levels (basic, extended, all = its default) at batch 1,
1 thread. Models: seed-cnn (8 px, the article's DNN), squeezenet1_1, mobilenet-v1, mobilenetv2
(--image-size px, default 32, grey).

Part 2. `daxiao serve` (one process, the mobilenet-v1 bundle) on 127.0.0.1 and an asyncio httpx client with
--clients concurrent connections (default 200) POSTing different digit images until --requests are done or
--seconds pass: p50/p99 latency, requests/s, errors (anything but a correct 200). Client and server share
this machine's cores.

Run from the repository root, alone (the lock keeps other benchmarks off the CPU):

    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/deploy.py            # ~5 min on 2 cores
    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/deploy.py --models seed-cnn --skip-load

Writes benchmarks/results/deploy.json (every figure, the CPU model and flags, the load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from daxiao.config import RunConfig
from daxiao.data import load_data, make_loader
from daxiao.deploy.export import export_run
from daxiao.deploy.runtime import cpu_count, cpu_model, ort_session
from daxiao.models.saved import load_run
from daxiao.training.runs import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
console = Console(width=None if sys.stdout.isatty() else 180)
MODELS = {"seed-cnn": {"epochs": 15}, "squeezenet1_1": {"lr": 1e-3}, "mobilenet-v1": {}, "mobilenetv2": {}}


def timed(fn, x, runs: int, budget_s: float) -> list[float]:
    out, start = [], time.perf_counter()
    while len(out) < runs and (time.perf_counter() - start < budget_s or len(out) < 5):
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
    return out


def measure_all(fns: dict, shape: tuple[int, ...], threads: int, rounds: int = 12) -> dict[str, dict]:
    """Batch-1 latency and batch-64 throughput of several backends in alternating rounds: load from other
    processes (this machine is shared) then hits every backend alike instead of whichever ran during a
    busy moment."""
    x1 = np.random.default_rng(0).standard_normal((1, *shape), dtype=np.float32)
    x64 = np.random.default_rng(1).standard_normal((64, *shape), dtype=np.float32)
    b1: dict[str, list[float]] = {k: [] for k in fns}
    b64: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for x in (x1, x1, x1, x64):
            fn(x)
    for _ in range(rounds):
        for k, fn in fns.items():
            b1[k] += timed(fn, x1, 25, 0.3)
            b64[k] += timed(fn, x64, 2, 0.3)
    out = {}
    for k in fns:
        t1 = sorted(b1[k])
        out[k] = {"threads": threads, "b1_median_ms": 1000 * statistics.median(t1),
                  "b1_p95_ms": 1000 * t1[int(0.95 * (len(t1) - 1))], "b1_runs": len(t1),
                  "b64_images_per_s": 64 / statistics.median(b64[k]), "b64_runs": len(b64[k])}
    return out


def torch_fn(model: torch.nn.Module):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def ort_fn(path: Path, threads: int, level: str = "all"):
    s = ort_session(path, threads, level)
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def openvino_fn(path: Path, threads: int):
    try:
        import openvino as ov
    except ImportError:
        return None
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                           "PERFORMANCE_HINT": "LATENCY"})
    return lambda x: compiled([x])[0]


def test_arrays(run) -> tuple[np.ndarray, np.ndarray]:
    cfg = run.config
    bundle = load_data(cfg.data, cfg.train.seed, preprocess=run.preprocess)
    xs, ys = zip(*((b.inputs.numpy(), b.targets.numpy()) for b in make_loader(bundle.test, 64, run.preprocess,
                                                                               workers=0)), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def accuracy(fn, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.concatenate([np.asarray(fn(x[i:i + 64])).argmax(1) for i in range(0, len(x), 64)])
    return float((pred == y).mean())


def bench_model(name: str, opts: dict, args, work: Path) -> dict:
    size = 8 if name == "seed-cnn" else args.image_size
    epochs = opts.get("epochs", args.epochs)
    cfg = RunConfig.from_dict({"project": str(work / "runs"), "name": name, "model": name, "epochs": epochs,
                               "image_size": size, "channels": 1, "precision": "fp32", "batch_size": 64,
                               "lr": opts.get("lr", 3e-3), "seed": 0}).validate()
    t = time.time()
    train(cfg, verbose=False)
    console.print(f"{name}: trained {epochs} epochs at {size} px in {time.time() - t:.0f} s")
    run = load_run(work / "runs" / name)
    summary = export_run(run.path, "onnx", work / "bundles" / name, int8=True, calib=256)
    bdir = Path(summary["bundle"])
    meta = json.loads((bdir / "bundle.json").read_text())
    fp32, int8 = bdir / "model.onnx", bdir / "model.int8.onnx"
    x, y = test_arrays(run)
    shape = x.shape[1:]
    model = run.model.eval()
    all_t = cpu_count()
    paths = {"pytorch eager": None, "onnx fp32": fp32, "onnx int8": int8 if int8.exists() else None,
             "openvino fp32": fp32}
    rows = {k: {"backend": k, "by_threads": []} for k, v in paths.items() if k == "pytorch eager" or v is not None}
    for threads in sorted({1, all_t}):
        torch.set_num_threads(threads)
        fns = {}
        for label in list(rows):
            if label == "pytorch eager":
                fns[label] = torch_fn(model)
            elif label.startswith("openvino"):
                fn = openvino_fn(paths[label], threads)
                if fn is None:
                    rows.pop(label)
                    continue
                fns[label] = fn
            else:
                fns[label] = ort_fn(paths[label], threads)
        for label, m in measure_all(fns, shape, threads).items():
            rows[label]["by_threads"].append(m)
            rows[label].setdefault("test_acc", accuracy(fns[label], x, y))
    for label, row in rows.items():
        row["bytes"] = ((work / "runs" / name / "best.safetensors").stat().st_size if paths[label] is None
                        else paths[label].stat().st_size)
    rows = list(rows.values())
    torch.set_num_threads(all_t)
    lv_fns = {lv: ort_fn(fp32, 1, lv) for lv in ("basic", "extended", "all")}
    levels = {lv: m["b1_median_ms"] for lv, m in measure_all(lv_fns, shape, 1, rounds=6).items()}
    return {"model": name, "image_size": size, "epochs": epochs, "params": meta["model"]["params"],
            "rows": rows, "ort_levels_b1_1thread_ms": levels, "default": meta["default"],
            "int8": meta["int8"], "parity": meta["parity"], "notes": summary["notes"], "n_test": int(len(y))}


# ---- load test -----------------------------------------------------------------------------------------
WRK_LUA = """
local bodies, n = {}, 0
init = function(args)
  for i, path in ipairs(args) do local f = io.open(path, "rb"); bodies[i] = f:read("*all"); f:close() end
end
request = function()
  n = n + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "image/png"}, bodies[(n % #bodies) + 1])
end
"""


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m[2]]


def run_wrk(url: str, files: list[Path], clients: int, seconds: float, work: Path) -> dict:
    """wrk (Debian's, C): one client thread keeps its own CPU use small next to the server's."""
    (work / "post.lua").write_text(WRK_LUA)
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "10s", "--latency",
                          "-s", str(work / "post.lua"), url, "--", *map(str, files)],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = (sum(map(int, sock.groups())) if sock else 0) + (int(non2xx[1]) if non2xx else 0)
    return {"client": "wrk -t1", "requests": int(total[1]), "seconds": _ms(total[2] + total[3]) / 1000,
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), "errors": errors,
            "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]), "raw": out}


def run_httpx(url: str, pngs: list[bytes], clients: int, requests: int, seconds: float) -> dict:
    """Fallback without wrk: asyncio httpx clients (their own CPU cost is larger)."""
    import httpx

    lat, errors, done = [], 0, 0

    async def client(c, k: int, stop: float) -> None:
        nonlocal errors, done
        while done < requests and time.perf_counter() < stop:
            done += 1
            t = time.perf_counter()
            try:
                r = await c.post("/predict", content=pngs[(k + done) % len(pngs)],
                                 headers={"content-type": "image/png"})
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            lat.append(time.perf_counter() - t)
            errors += not ok

    async def main() -> float:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
            start = time.perf_counter()
            await asyncio.gather(*(client(c, k, start + seconds) for k in range(clients)))
            return time.perf_counter() - start

    wall = asyncio.run(main())
    lat.sort()
    return {"client": "httpx asyncio", "requests": len(lat), "errors": errors, "seconds": wall,
            "requests_per_s": len(lat) / wall, "p50_ms": 1000 * lat[len(lat) // 2],
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))]}


def load_test(bundle: Path, clients: int, requests: int, seconds: float, work: Path) -> dict:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    files = []
    for i in range(64):  # different images, so a server mixing answers would also be exercised
        files.append(work / f"load{i}.png")
        Image.fromarray((d.images[1437 + i] * 16).clip(0, 255).astype(np.uint8), "L").save(files[-1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "daxiao", "serve", str(bundle), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        if shutil.which("wrk"):
            r = run_wrk(url, files, clients, seconds, work)
        else:
            r = run_httpx(url, [f.read_bytes() for f in files], clients, requests, seconds)
    finally:
        server.terminate()
        server.wait(10)
    return {"clients": clients, "model": bundle.name, **r}


def machine() -> dict:
    flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("flags")), [])
    import onnxruntime
    try:
        import openvino
        ov = openvino.__version__
    except ImportError:
        ov = None
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
            if f in flags]
    return {"cpu": cpu_model(), "cores": cpu_count(), "simd_flags": simd, "load_avg_before": os.getloadavg(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "openvino": ov,
            "python": platform.python_version()}


def print_tables(results: list[dict], load: dict | None, info: dict) -> None:
    t = Table(title=f"deploy: digits, {info['cpu']} ({info['cores']} cores; {' '.join(info['simd_flags'])})")
    for col in ("model", "backend", "test acc", "size", "b1 ms 1T (p95)", "b64 img/s 1T",
                f"b1 ms {info['cores']}T (p95)", f"b64 img/s {info['cores']}T", "vs eager b1 1T"):
        t.add_column(col, justify="left" if col in ("model", "backend") else "right")
    for r in results:
        eager = r["rows"][0]["by_threads"][0]["b1_median_ms"]
        for row in r["rows"]:
            m = row["by_threads"]
            cells = [f"{m[0]['b1_median_ms']:.3f} ({m[0]['b1_p95_ms']:.3f})", f"{m[0]['b64_images_per_s']:,.0f}"]
            cells += ([f"{m[-1]['b1_median_ms']:.3f} ({m[-1]['b1_p95_ms']:.3f})", f"{m[-1]['b64_images_per_s']:,.0f}"]
                      if len(m) > 1 else ["-", "-"])
            t.add_row(f"{r['model']} {r['image_size']}px", row["backend"], f"{row['test_acc']:.4f}",
                      f"{row['bytes'] / 1024:,.0f} KiB", *cells, f"{eager / m[0]['b1_median_ms']:.2f}x")
    console.print(t)
    lv = Table(title="onnxruntime graph optimisation level, fp32, batch 1, 1 thread (ms; 'all' is the default)")
    for col in ("model", "basic", "extended", "all", "int8 kept", "int8 candidates (format act/w: ms, acc drop)"):
        lv.add_column(col)
    for r in results:
        cands = "; ".join(f"{c['format']} {c['activations']}/{c['weights']}: "
                          + (f"{c['latency']['median_ms']:.3f}, {c['acc_drop']:+.2f}" if "latency" in c else "n/a")
                          for c in r["int8"]["candidates"])
        lv.add_row(r["model"], *(f"{r['ort_levels_b1_1thread_ms'][k]:.3f}" for k in ("basic", "extended", "all")),
                   r["default"], cands)
    console.print(lv)
    for r in results:
        for n in r["notes"]:
            console.print(f"{r['model']}: {n}")
    if load:
        console.print(f"load test ({load['client']}): {load['clients']} concurrent clients, {load['requests']} "
                      f"requests to `daxiao serve` "
                      f"({load['model']}) in {load['seconds']:.1f} s: {load['requests_per_s']:,.0f} req/s, "
                      f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, errors {load['errors']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "deploy.json"))
    args = p.parse_args()
    info = machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            results.append(bench_model(name, MODELS.get(name, {}), args, work))
        load = None
        if not args.skip_load:
            served = next((r["model"] for r in results if r["model"] == "mobilenet-v1"), results[0]["model"])
            load = load_test(work / "bundles" / served, args.clients, args.requests, args.seconds, work)
    info["load_avg_after"] = os.getloadavg()
    print_tables(results, load, info)
    out = {"machine": info, "command": " ".join(sys.argv), "models": results, "load_test": load}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
