"""Defaults that work: `daxiao train --data digits --model NAME` with no other flag, for every zoo model.

Each model trains in a fresh process that does exactly what these two commands do:

    daxiao train --data digits --model NAME --seed S --project runs/bench-defaults --name NAME-sS
    daxiao evaluate runs/bench-defaults/NAME-sS        # digits' fixed 20 % test split (360 images)

Printed per model: its own defaults (the registry's, as the run applied them), epochs, wall seconds (from
the child's first daxiao import to its test accuracy: loading, training, testing), best val accuracy, test
accuracy, the bar of the README's models table and whether it is met; with the CPU's model and flags and
the load average. JSON in benchmarks/results/defaults.json. A run of some models (--models) on the same
machine replaces their rows and keeps the others.

The bars are set before measuring, one per model: 0.97 for the models made for small images (seed-cnn,
seed-tiny-cnn, airnet) and 0.95 for the ImageNet-style ones trained from scratch (the issue's bar for
the demo's small model). A scikit-learn SVM reaches about 0.99 on the same 8x8 digits.

Run from the repository root, under the shared lock (about 25 minutes on 2 cores for every model but
resnet50, which alone takes about 15):

    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/defaults.py
    flock /tmp/daxiao-bench.lock .venv/bin/python benchmarks/defaults.py --models mobilenet-v1 resnet18
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import cpu_summary, load_average  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "defaults.json"
SMALL_IMAGE_MODELS = ("seed-cnn", "seed-tiny-cnn", "airnet")


def bar(name: str) -> float:
    return 0.97 if name in SMALL_IMAGE_MODELS else 0.95


def child(name: str, seed: int, project: str) -> dict:
    """One model, as the two CLI commands above would run it; returns its row."""
    t0 = time.perf_counter()
    from daxiao.cli import build_parser
    from daxiao.config import config_from_args
    from daxiao.inference.report import evaluate_model
    from daxiao.training.runs import apply_model_defaults, train

    argv = ["train", "--data", "digits", "--model", name, "--seed", str(seed), "--project", project,
            "--name", f"{name}-s{seed}", "--exist-ok", "--quiet"]
    cfg = config_from_args(build_parser().parse_args(argv))
    applied = apply_model_defaults(copy.deepcopy(cfg))  # only to report them: train applies its own
    result = train(cfg, verbose=False)
    test = evaluate_model(result["run_dir"], split="test")
    return {"model": name, "seed": seed, "own_defaults": applied, "epochs": len(result["history"]),
            "best_val_acc": result["best_val_acc"], "test_acc": test["acc"], "test_images": test["n"],
            "train_seconds": result["train_seconds"], "wall_seconds": time.perf_counter() - t0,
            "bar": bar(name)}


def main() -> None:
    from daxiao.models import list_models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list_models(), help="default: every registered model")
    ap.add_argument("--skip", nargs="*", default=[], help="models to leave out (e.g. resnet50)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--project", default="runs/bench-defaults")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.seed, a.project)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    cpu, started, load_start = cpu_summary(), datetime.now(timezone.utc).isoformat(timespec="seconds"), load_average()
    console.print(f"CPU: {cpu['model']}, {cpu['cores']} cores, {cpu['flags']}; torch {cpu['torch']}; "
                  f"load {load_start}")
    rows = []
    for name in [m for m in a.models if m not in a.skip]:
        console.print(f"{name} ...")
        p = subprocess.run([sys.executable, __file__, "--child", name, "--seed", str(a.seed), "--project", a.project],
                           capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            console.print(f"[red]{name} failed[/]:\n{p.stderr[-2000:]}")
            rows.append({"model": name, "error": p.stderr[-500:]})
            continue
        row = json.loads(p.stdout.strip().splitlines()[-1])
        rows.append(row)
        console.print(f"  test {row['test_acc']:.4f} (bar {row['bar']}), val {row['best_val_acc']:.4f}, "
                      f"{row['epochs']} epochs, {row['wall_seconds']:.0f} s")

    table = Table(title=f"daxiao train --data digits --model NAME (seed {a.seed}); {cpu['model']}, "
                        f"{cpu['cores']} cores, {cpu['flags']}")
    for col in ("model", "own defaults", "epochs", "wall s", "val acc", "test acc", "bar", "met"):
        table.add_column(col, justify="left" if col in ("model", "own defaults") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["model"], "failed", "", "", "", "", "", "no")
            continue
        own = ", ".join(f"{k} {v}" for k, v in r["own_defaults"].items()) or "-"
        table.add_row(r["model"], own, str(r["epochs"]), f"{r['wall_seconds']:.0f}", f"{r['best_val_acc']:.4f}",
                      f"{r['test_acc']:.4f}", f"{r['bar']:.2f}", "yes" if r["test_acc"] >= r["bar"] else "NO")
    console.print(table)
    out = {"benchmark": "defaults", "started_utc": started, "cpu": cpu, "load_start": load_start,
           "load_end": load_average(), "seed": a.seed,
           "command": "daxiao train --data digits --model NAME --seed S && daxiao evaluate RUN",
           "rows": rows}
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if set(a.models) - set(a.skip) != set(list_models()) and old.get("cpu", {}).get("platform") == cpu["platform"]:
        # a partial run on the same machine updates its own rows and keeps the others
        keep = [r for r in old.get("rows", []) if r["model"] not in {r["model"] for r in rows}]
        out["rows"] = keep + rows
        out["partial_runs"] = old.get("partial_runs", []) + [{"models": [r["model"] for r in rows],
                                                              "started_utc": started, "load_start": load_start}]
    RESULTS.write_text(json.dumps(out, indent=1))
    console.print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
