"""Kill and resume: SIGKILL `daxiao train --deterministic` at N random moments, resume each with
`daxiao train --resume`, and compare the final weights with an uninterrupted run, tensor by tensor.

Kill points are drawn uniformly over the training phase of the uninterrupted run: from the moment its
first epoch was saved to the moment its last was (any step of epochs 2-20, any checkpoint write). A kill
that lands after the last commit leaves a finished run: `--resume` says so (exit 2) and its weights are
compared as they are. Prints a table and writes benchmarks/results/kill_resume.json.

    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/kill_resume.py --points 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from safetensors.torch import load_file

EPOCHS = 20
TRAIN = ["train", "--model", "seed-tiny-cnn", "--epochs", str(EPOCHS), "--batch-size", "32", "--deterministic",
         "--precision", "fp32", "--threads", "1", "--drop-rate", "0.2"]


def cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(x.split(":", 1)[1].strip() for x in info.splitlines() if x.startswith("model name"))
        flags = next(x.split(":", 1)[1].split() for x in info.splitlines() if x.startswith("flags"))
        keep = [f for f in flags if f.startswith(("avx512f", "avx2", "amx", "avx512_bf16"))]
        return f"{model} ({' '.join(sorted(set(keep)))})"
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def daxiao(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daxiao", *args], capture_output=True, text=True, **kw)


def same(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def start(project: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daxiao", *TRAIN, "--project", str(project), "--name", name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def saved_epoch(run: Path) -> int:
    from daxiao.models.saved import read_description

    try:
        return read_description(run / "last.state.safetensors")["epoch"]
    except Exception:
        return 0


def wait_saved(run: Path, proc: subprocess.Popen, epoch: int = 1) -> float | None:
    """When `run`'s `epoch` was committed (perf_counter), or None if the process ended first."""
    while saved_epoch(run) < epoch:
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    project = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    ref = start(project, "straight")
    first = wait_saved(project / "straight", ref)
    last = wait_saved(project / "straight", ref, EPOCHS)
    ref.wait()
    assert ref.returncode == 0
    train_phase = last - first
    rows = []
    for i in range(a.points):
        name, at = f"cut{i}", rng.uniform(0, train_phase)
        proc = start(project, name)
        if wait_saved(project / name, proc) is None:
            raise SystemExit(f"{name} ended before its first epoch was saved")
        time.sleep(at)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        run = project / name
        epoch = saved_epoch(run)
        r = daxiao("train", "--resume", "--name", name, "--project", str(project))
        complete = r.returncode == 2 and "already finished" in r.stderr  # killed after the last commit
        ok = (r.returncode == 0 or complete) and all(same(project / "straight" / f, run / f)
                                                     for f in ("last.safetensors", "best.safetensors"))
        rows.append({"kill_after_first_epoch_s": round(at, 2), "saved_epoch_at_kill": epoch,
                     "resume_exit": r.returncode, "already_complete": complete, "bit_identical": ok})
    table = Table(title=f"SIGKILL at {a.points} random moments between the saves of epoch 1 and {EPOCHS} "
                        f"({train_phase:.1f} s), then --resume")
    for col in ("kill at (s after epoch 1)", "epochs saved at kill", "resume", "bit-identical"):
        table.add_column(col)
    for row in rows:
        table.add_row(f"{row['kill_after_first_epoch_s']:.2f}", str(row["saved_epoch_at_kill"]),
                      "already complete" if row["already_complete"] else f"exit {row['resume_exit']}",
                      "yes" if row["bit_identical"] else "NO")
    wall = train_phase
    console = Console()
    console.print(table)
    summary = {"points": a.points, "bit_identical": sum(r["bit_identical"] for r in rows),
               "resumed": sum(not r["already_complete"] for r in rows), "train_phase_seconds": round(wall, 2),
               "cpu": cpu(),
               "load": os.getloadavg(), "torch": torch.__version__, "command": " ".join(TRAIN), "rows": rows}
    console.print(f"bit-identical: {summary['bit_identical']}/{a.points} ({summary['resumed']} resumed, the rest "
                  f"killed after their last commit); CPU {summary['cpu']}; load {summary['load'][0]:.2f}")
    out = Path(__file__).parent / "results" / "kill_resume.json"
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))


if __name__ == "__main__":
    main()
