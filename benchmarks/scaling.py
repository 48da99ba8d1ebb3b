"""Scaling past one process: data-parallel training (1 vs 2 torchrun processes) and a tuning study shared
through PostgreSQL (1 vs 2 workers), on this machine's CPU.

    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/scaling.py          # ~10 min on 2 cores
    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/scaling.py --quick  # digits only, ~2 min
    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/scaling.py --threads 1  # on busy shared cores

1. `daxiao train` of seed-cnn on Fashion-MNIST (digits without it) with the same global batch: one process
   with all cores, then `--nproc 2` with cores/2 threads each. Reported from metrics.csv (last epoch: the
   first pays oneDNN's kernel building): images/s in total and per process, val accuracy. Then one process
   with and without --compile (torch.compile), to decide on measurement whether it pays.
2. The all-reduce: DDP sends every gradient each step. Its bytes are counted from the model and one
   all-reduce of that size is timed over gloo between two local processes; with those figures a step on N
   machines is predicted as compute (measured) + a ring all-reduce (2 (N-1)/N x bytes over the link).
3. A grid of seed-tiny-cnn trials on digits in a throwaway PostgreSQL cluster (tests/pgserver.py), run by one
   worker, then by two started at once: trials per minute from the first trial's start to the last's end.

Writes benchmarks/results/scaling.json and prints the tables, with the CPU model, flags and load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scaling.json"
sys.path.insert(0, str(ROOT / "tests"))  # pgserver: the throwaway cluster the tests use


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")), platform.processor())
    flags = next((ln.split(":", 1)[1].split() for ln in info if ln.startswith("flags")), [])
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "flags": [f for f in (
        "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags], "torch": torch.__version__,
        "python": platform.python_version(), "load_start": os.getloadavg()}


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    r = subprocess.run([sys.executable, "-m", "daxiao", *argv], env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"daxiao {' '.join(argv)} failed:\n{r.stderr[-3000:]}")
    return r


# ---- 1. data-parallel training ---------------------------------------------------------------------------------
def train_row(data: str, nproc: int, threads: int, global_batch: int, epochs: int, project: Path,
              *extra: str) -> dict:
    name = f"p{nproc}t{threads}{''.join(extra).replace('-', '')}-{len(list(project.iterdir()))}"
    argv = ["train", "--model", "seed-cnn", "--data", data, "--epochs", str(epochs), "--batch-size",
            str(global_batch // nproc), "--precision", "fp32", "--schedule", "constant", "--project", str(project),
            "--name", name, "--threads", str(threads), *extra]
    argv += ["--nproc", str(nproc)] if nproc > 1 else []
    t0 = time.perf_counter()
    cli(*argv)
    wall = time.perf_counter() - t0
    with open(project / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    print("done:", " ".join(argv[1:]), rows[-1], flush=True)  # partial results survive an interrupted run
    last = rows[-1]
    total = float(last["images_per_s"])  # all processes' images / s (the loop reduces the counts)
    return {"processes": nproc, "threads_per_process": threads, "batch_per_process": global_batch // nproc,
            "global_batch": global_batch, "options": " ".join(extra), "images_per_s_total": round(total),
            "images_per_s_per_process": round(total / nproc), "epoch_seconds": float(last["epoch_seconds"]),
            "first_epoch_seconds": float(rows[0]["epoch_seconds"]), "val_acc": float(last["val_acc"]),
            "wall_seconds_with_startup": round(wall, 1)}


# ---- 2. the all-reduce -----------------------------------------------------------------------------------------
def _allreduce_worker(rank: int, nbytes: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    t = torch.zeros(nbytes // 4)
    for _ in range(5):
        dist.all_reduce(t)
    dist.barrier()
    reps, t0 = 50, time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(t)
    seconds = (time.perf_counter() - t0) / reps
    if rank == 0:
        Path(out).write_text(json.dumps({"seconds": seconds}))
    dist.destroy_process_group()


def allreduce(nbytes: int) -> float:
    import pgserver
    import torch.multiprocessing as mp

    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        mp.spawn(_allreduce_worker, args=(nbytes, pgserver.free_port(), f.name), nprocs=2)
        return json.loads(Path(f.name).read_text())["seconds"]


def predict(step_compute_s: float, nbytes: int, batch: int, links_gbit=(1, 10, 100)) -> list[dict]:
    """Images/s on N machines of one process each: N x batch / (compute + ring all-reduce), no overlap (DDP
    overlaps the all-reduce with the backward pass, so this is the pessimistic side)."""
    rows = []
    for gbit in links_gbit:
        for n in (1, 2, 4, 8, 16):
            comm = 0.0 if n == 1 else 2 * (n - 1) / n * nbytes / (gbit * 1e9 / 8)
            rows.append({"link_gbit_s": gbit, "machines": n, "comm_ms": round(comm * 1e3, 3),
                         "images_per_s": round(n * batch / (step_compute_s + comm)),
                         "efficiency": round(step_compute_s / (step_compute_s + comm), 3)})
    return rows


# ---- 3. a shared study ------------------------------------------------------------------------------------------
def study_row(base_url: str, workers: int, space: list[str], epochs: int, project: Path,
              threads: int | None = None) -> dict:
    import optuna
    import pgserver

    from daxiao.tune.storage import database_url

    url = pgserver.create_database(base_url, f"w{workers}")
    cores = len(os.sched_getaffinity(0))
    threads = threads or max(1, cores // workers)
    argv = ["tune", "--model", "seed-tiny-cnn", "--sampler", "grid", "--cv", "0", "--epochs", str(epochs),
            "--precision", "fp32", "--schedule", "constant", "--threads", str(threads), "--pruner", "none",
            "--storage", url, "--study", "grid", "--space", *space]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "daxiao", *argv, "--project", str(project / f"w{workers}-{i}")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(workers)]
    for p in procs:
        if p.wait():
            sys.exit(f"tune worker failed:\n{p.stderr.read()[-3000:]}")
    wall = time.perf_counter() - t0
    trials = optuna.load_study(study_name="grid", storage=database_url(url)).get_trials()
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return {"workers": workers, "threads_per_worker": threads, "trials": len(trials),
            "complete": sum(t.state.name == "COMPLETE" for t in trials),
            "workers_seen": len({t.user_attrs.get("worker") for t in trials}),
            "trials_per_min": round(len(trials) / span * 60, 1), "study_seconds": round(span, 1),
            "wall_seconds_with_startup": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits only and a smaller grid")
    ap.add_argument("--threads", type=int, help="threads of the --compile rows and of each tuning worker (default: "
                                                "cores / processes); 1 keeps busy shared cores from stalling OpenMP")
    a = ap.parse_args()
    info = machine()
    fashion = Path("/usr/share/datasets/fashion-mnist").is_dir() and not a.quick
    data, epochs, batch = ("fashion-mnist", 2, 128) if fashion else ("digits", 3, 64)
    out: dict = {"machine": info, "data": data, "epochs": epochs, "study_epochs": 2 if a.quick else 6,
                 "command": "flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/scaling.py"
                            + (" --quick" if a.quick else "") + (f" --threads {a.threads}" if a.threads else "")}
    cores = info["cores"]
    with tempfile.TemporaryDirectory() as tmp:
        out["train"] = [train_row(data, n, t, batch, epochs, Path(tmp))
                        for n, t in ((1, 1), (1, cores), (2, max(1, cores // 2)))]
        out["compile"] = [train_row(data, 1, a.threads or cores, batch, epochs, Path(tmp), *flag)
                          for flag in ((), ("--compile",))]

    from daxiao.config import RunConfig
    from daxiao.data import load_data
    from daxiao.models import create_model
    from daxiao.training.distributed import gradient_bytes
    from daxiao.training.runs import data_config

    b = load_data(data_config(RunConfig.from_dict({"data": data}), "seed-cnn"), 0)
    model = create_model("seed-cnn", num_classes=len(b.classes), in_chans=b.preprocess.channels,
                         input_size=b.preprocess.image_size)
    nbytes = gradient_bytes(model)
    one = max((r for r in out["train"] if r["processes"] == 1), key=lambda r: r["images_per_s_total"])
    step = one["global_batch"] / one["images_per_s_total"]  # the best one-process step: the compute of a step
    per_machine_batch = one["global_batch"]
    out["allreduce"] = {"gradient_bytes_per_step": nbytes, "params": sum(p.numel() for p in model.parameters()),
                        "gloo_2proc_localhost_ms": round(allreduce(nbytes) * 1e3, 3),
                        "step_compute_ms_one_machine": round(step * 1e3, 2), "batch_per_machine": per_machine_batch}
    out["predicted"] = predict(step, nbytes, per_machine_batch)

    import pgserver

    reason = pgserver.why_not()
    if reason:
        out["study"] = {"skipped": reason}
    else:
        space = (["optimizer=adam,sgd", "lr=0.001,0.002,0.003"] if a.quick
                 else ["optimizer=adam,sgd", "lr=0.001,0.002,0.003", "activation=relu,tanh"])
        with pgserver.server() as base, tempfile.TemporaryDirectory() as tmp:
            out["study"] = [study_row(base, w, space, out["study_epochs"], Path(tmp), a.threads) for w in (1, 2)]
    info["load_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1))
    report(out)


def report(out: dict) -> None:
    c = Console(width=140)
    m = out["machine"]
    c.print(f"{m['cpu']} ({m['cores']} cores; {', '.join(m['flags'])}), torch {m['torch']}, load "
            f"{m['load_start'][0]:.2f} -> {m['load_end'][0]:.2f}")
    t = Table(title=f"seed-cnn on {out['data']}, same global batch, last of {out['epochs']} epochs")
    for col in ("processes", "threads/process", "batch/process", "images/s total", "images/s per process",
                "epoch s", "val acc"):
        t.add_column(col, justify="right")
    for r in out["train"]:
        t.add_row(str(r["processes"]), str(r["threads_per_process"]), str(r["batch_per_process"]),
                  f"{r['images_per_s_total']:,}", f"{r['images_per_s_per_process']:,}", f"{r['epoch_seconds']:.2f}",
                  f"{r['val_acc']:.4f}")
    c.print(t)
    t = Table(title=f"torch.compile, one process: last of {out['epochs']} epochs, and the first (compiling)")
    for col in ("options", "images/s", "first epoch s", "val acc"):
        t.add_column(col, justify="right")
    for r in out["compile"]:
        t.add_row(r["options"] or "(eager)", f"{r['images_per_s_total']:,}", f"{r['first_epoch_seconds']:.1f}",
                  f"{r['val_acc']:.4f}")
    c.print(t)
    ar = out["allreduce"]
    c.print(f"all-reduce: {ar['gradient_bytes_per_step']:,} bytes of gradients per step ({ar['params']:,} params); "
            f"gloo, 2 local processes: {ar['gloo_2proc_localhost_ms']} ms per all-reduce; one step of "
            f"{ar['batch_per_machine']} images: {ar['step_compute_ms_one_machine']} ms")
    t = Table(title="predicted: one process per machine, ring all-reduce not overlapped (pessimistic)")
    for col in ("link Gbit/s", "machines", "all-reduce ms", "images/s", "efficiency"):
        t.add_column(col, justify="right")
    for r in out["predicted"]:
        t.add_row(str(r["link_gbit_s"]), str(r["machines"]), str(r["comm_ms"]), f"{r['images_per_s']:,}",
                  f"{r['efficiency']:.0%}")
    c.print(t)
    if isinstance(out["study"], dict):
        c.print(f"shared study: skipped ({out['study']['skipped']})")
    else:
        t = Table(title=f"grid study in PostgreSQL (seed-tiny-cnn, digits, hold-out, {out['study_epochs']} epochs "
                        "per trial)")
        for col in ("workers", "threads/worker", "trials", "complete", "trials/min", "study s", "wall s"):
            t.add_column(col, justify="right")
        for r in out["study"]:
            t.add_row(str(r["workers"]), str(r["threads_per_worker"]), str(r["trials"]), str(r["complete"]),
                      str(r["trials_per_min"]), str(r["study_seconds"]), str(r["wall_seconds_with_startup"]))
        c.print(t)
    c.print(json.dumps(out))


if __name__ == "__main__":
    main()
