"""Large CPU batches before and after daxiao's memory-reuse setting (`daxiao.allocator.reuse_memory`).

Each allocator mode runs in a fresh process (glibc's settings are per process):

    system    glibc's defaults (DAXIAO_ALLOCATOR=system): the "before"
    daxiao    what the CLI does by itself: mallopt through ctypes, in-process, before torch is imported
    daxiao-late  the same call after `import torch` (a Python user's `fit`, `evaluate`, `extract_features`)
    env       the same thresholds given to glibc in the environment (MALLOC_MMAP_THRESHOLD_...) at exec
    jemalloc  LD_PRELOAD=libjemalloc.so.2 with decay off, when the library is installed (apt libjemalloc2)

and measures, with 2 torch threads, each case's images/s, user and system CPU seconds and minor page
faults (resource.getrusage around the timed part, after an untimed warm-up):

    infer b1 / b64   efficientnet-lite0 at 224 px, eval + inference mode, batch 1 and batch 64
    profile b64      `daxiao profile`'s throughput figure (inference.profile.time_forward, batch 64)
    extract          training.features.extract_features: 256 images at 224 px, batch 64, lite0's backbone
    evaluate         training.loop.evaluate: 256 images at 224 px, batch 64, the whole model
    train b64        resnet18 at 112 px, 10 classes, adam steps at batch 64, fp32

Run from the repository root, under the shared lock (about 3-4 minutes on 2 quiet cores):

    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/allocator.py

Prints a table and writes benchmarks/results/allocator.json (with the CPU model, flags and load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "allocator.json"
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
CASES = ("infer b1", "infer b64", "profile b64", "extract", "evaluate", "train b64")


def measure(work, images: int) -> dict:
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    work()
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    return {"images_per_s": images / wall, "wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime,
            "sys_s": r1.ru_stime - r0.ru_stime, "minor_faults": r1.ru_minflt - r0.ru_minflt}


def child(mode: str, repeats: int) -> dict:
    """The cases, in this process, after setting the allocator up as `mode` says."""
    from daxiao.allocator import reuse_memory

    # before torch is imported, as the CLI does it (cli.main calls it first); `daxiao-late` applies it after
    # torch and its libraries have started up, as a Python user's `fit` does
    state = reuse_memory() if mode == "daxiao" else {"applied": mode != "system", "how": mode}
    import torch

    if mode == "daxiao-late":
        state = reuse_memory()
    from daxiao.data import TensorSplit, make_loader
    from daxiao.data.preprocess import Preprocess
    from daxiao.inference.profile import time_forward
    from daxiao.models import create_model
    from daxiao.training.features import extract_features
    from daxiao.training.loop import evaluate

    torch.set_num_threads(2)
    torch.manual_seed(0)
    out: dict = {"mode": mode, "allocator": state}
    lite = create_model("efficientnet-lite0", num_classes=10, in_chans=3, input_size=224).eval()
    lite = lite.to(memory_format=torch.channels_last)
    for b in (1, 64):
        x = torch.randn(b, 3, 224, 224).contiguous(memory_format=torch.channels_last)
        n = max(repeats, 64 // b * 2) if b == 1 else repeats
        with torch.inference_mode():
            lite(x)
            lite(x)

            def run(x=x, n=n):
                for _ in range(n):
                    lite(x)
            out[f"infer b{b}"] = measure(run, n * b)
    prof = {}
    out["profile b64"] = measure(lambda: prof.update(time_forward(lite, 64, 224, 3, 2, repeats, 1, 60.0)), 0)
    out["profile b64"]["images_per_s"] = 64 / (prof["median_ms"] / 1e3)  # profile's own figure: the median run

    images = torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8)
    split = TensorSplit(images, torch.randint(0, 10, (256,)))
    pre = Preprocess(224, 3, mean=(0.5,) * 3, std=(0.5,) * 3)
    head = create_model("efficientnet-lite0", num_classes=10, in_chans=3, input_size=224, head="linear").eval()
    extract_features(head, TensorSplit(images[:64], split.labels[:64]), pre, 64, verbose=False)  # warm-up
    out["extract"] = measure(lambda: extract_features(head, split, pre, 64, verbose=False), len(split))
    loader = make_loader(split, 64, pre)
    out["evaluate"] = measure(lambda: evaluate(lite, loader), len(split))

    net = create_model("resnet18", num_classes=10, in_chans=3, input_size=112).train()
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    xb = torch.randn(64, 3, 112, 112).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, 10, (64,))

    def steps(n: int) -> None:
        for _ in range(n):
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    steps(2)
    out["train b64"] = measure(lambda: steps(repeats), 64 * repeats)
    return out


def run_mode(mode: str, repeats: int) -> dict | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "DAXIAO_ALLOCATOR"}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if mode == "system":
        env["DAXIAO_ALLOCATOR"] = "system"
    elif mode == "env":
        from daxiao.allocator import ENV

        env.update(ENV)
    elif mode == "jemalloc":
        if not JEMALLOC.is_file():
            return None
        env.update(LD_PRELOAD=str(JEMALLOC), MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1")
    p = subprocess.run([sys.executable, __file__, "--child", mode, "--repeats", str(repeats)], env=env,
                       capture_output=True, text=True)
    if p.returncode:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"mode {mode} failed")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["system", "daxiao", "daxiao-late", "env", "jemalloc"])
    ap.add_argument("--repeats", type=int, default=6, help="batches per timed case")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from machine import cpu_summary, load_average
    from rich.console import Console
    from rich.table import Table

    cpu, load_before = cpu_summary(), load_average()
    rows = [r for m in args.modes if (r := run_mode(m, args.repeats)) is not None]
    load_after = load_average()
    table = Table(title=f"allocator, 2 threads - {cpu['model']} ({cpu['flags']}); load {load_before} -> {load_after}")
    for col in ("case", "mode", "img/s", "x system", "user s", "sys s", "minor faults"):
        table.add_column(col, justify="left" if col in ("case", "mode") else "right")
    base = {c: rows[0][c]["images_per_s"] for c in CASES} if rows and rows[0]["mode"] == "system" else {}
    for case in CASES:
        for r in rows:
            m = r[case]
            speed = f"{m['images_per_s'] / base[case]:.2f}" if base else ""
            table.add_row(case, r["mode"], f"{m['images_per_s']:.1f}", speed, f"{m['user_s']:.1f}",
                          f"{m['sys_s']:.1f}", f"{m['minor_faults']:,}")
    Console(width=140).print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu": cpu, "load_before": load_before, "load_after": load_after,
                                   "threads": 2, "rows": rows}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
