"""`daxiao compare`: train (or load) several models under one recipe, then test, profile and rank them.

    parse --models -> check every name -> epochs (given, or fitted to --budget-minutes) -> for each model:
    runs.train into COMPARE/<model>/ -> test accuracy -> profile -> table, compare.csv/json, pareto.png,
    curves.png, report.html

Each model is an ordinary run folder, so `daxiao evaluate/predict` work on it, and `--resume` reuses the
finished ones (a `done.json` marks them) and continues a cut-off one from its last epoch.

A model entry is a zoo name, a name with its own settings in brackets (``mobilenet-v1[alpha=0.25]``,
``efficientnet-lite0[pretrained=true,unfreeze=all]``: any train setting), or an existing run folder or
weights file, which is loaded and measured but not trained.
"""

from __future__ import annotations

import copy
import csv
import difflib
import io
import json
import math
import re
import time
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import torch
from rich.markup import escape  # labels such as mobilenet-v1[alpha=0.5] are not markup
from rich.table import Table

from ..config import RunConfig, apply_overrides, load_yaml
from ..config.parsing import split_top_level
from ..console import console
from ..data import DataBundle, load_data, make_loader, subset
from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from ..files import FolderLock, atomic_write, atomic_write_json, check_new_folder
from ..inference.profile import human, human_bytes, profile_model
from ..inference.report import evaluate_model
from ..interrupt import begin
from ..models import list_models, model_info
from ..models.saved import load_run, read_meta, resolve_weights
from ..training.loop import evaluate, train_one_epoch
from ..training.precision import resolve_device
from ..training.runs import data_config, make_model, train
from ..training.session import prepare
from .report import write_figures_and_report


@dataclass
class Entry:
    """One model of the comparison: what the user typed, and what it means."""

    label: str                                       # as typed, e.g. "mobilenet-v1[alpha=0.25]"
    model: str | None = None                         # registry name; None for a given run
    settings: dict = field(default_factory=dict)     # this model's own settings, over the shared recipe
    run: Path | None = None                          # a given run folder or weights file: measured, not trained
    slug: str = ""                                   # its run folder's name inside the compare folder


# ---- --models ---------------------------------------------------------------------------------------------
def parse_models(models: str | list[str], base: RunConfig) -> list[Entry]:
    """Entries for --models, with every unknown name and bad setting reported in one error, before any
    training starts (a typo in the sixth model should not cost the first five models' training time)."""
    items = split_top_level(models) if isinstance(models, str) else [m.strip() for m in models if m.strip()]
    if not items:
        raise DaxiaoError("--models is empty; give a comma-separated list such as seed-cnn,mobilenet-v1,resnet18 "
                          "(see `daxiao models`).")
    entries, unknown, bad = [], [], []
    for item in items:
        m = re.fullmatch(r"([^\[\]]+?)(?:\[(.*)\])?", item)
        name, inner = (m.group(1).strip(), m.group(2)) if m else (item, None)
        if inner is None and (Path(item).is_dir() or item.endswith(".safetensors")):
            entries.append(Entry(item, run=Path(item)))
            continue
        try:
            name = model_info(name).name
        except DaxiaoError:
            close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
            unknown.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            continue
        settings = dict(kv.split("=", 1) for kv in split_top_level(inner or "") if "=" in kv)
        if inner and len(settings) != len(split_top_level(inner)):
            bad.append(f"{item} (settings are key=value)")
            continue
        try:
            apply_overrides(copy.deepcopy(base), settings).validate()
        except DaxiaoError as e:
            bad.append(f"{item}: {e}")
            continue
        entries.append(Entry(item, name, settings))
    if unknown or bad:
        parts = []
        if unknown:
            parts.append(f"unknown model{'s' if len(unknown) > 1 else ''} in --models: {', '.join(unknown)}; "
                         "see `daxiao models`, or use any timm model as timm:<name>")
        if bad:
            parts.append("bad settings: " + "; ".join(bad))
        raise DaxiaoError(". ".join(parts) + ".")
    seen: dict[str, int] = {}
    for e in entries:
        base_slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", e.run.stem if e.run and e.run.is_file() else
                           (e.run.name if e.run else e.label)).strip("-") or "model"
        seen[base_slug] = seen.get(base_slug, 0) + 1
        e.slug = base_slug if seen[base_slug] == 1 else f"{base_slug}-{seen[base_slug]}"
    return entries


def entry_config(base: RunConfig, entry: Entry, folder: Path) -> RunConfig:
    """The shared recipe with this model's name and own settings, writing to COMPARE/<slug>/."""
    cfg = apply_overrides(copy.deepcopy(base), {"model": entry.model or base.model.name, **entry.settings})
    cfg.project, cfg.name, cfg.resume, cfg.exist_ok = str(folder), entry.slug, False, True
    return cfg


# ---- data -------------------------------------------------------------------------------------------------
class DataCache:
    """Loads each distinct data configuration once (a pretrained model wants RGB at its own size)."""

    def __init__(self, limits: tuple[int | None, int | None, int | None]):
        self.limits, self._bundles = limits, {}

    def get(self, cfg: RunConfig) -> DataBundle:
        dcfg = data_config(cfg, cfg.model.name)
        key = json.dumps([vars(dcfg), cfg.train.seed], sort_keys=True)
        if key not in self._bundles:
            self._bundles[key] = subset(load_data(dcfg, cfg.train.seed, cache_dir=cfg.train.cache_dir), *self.limits,
                                        seed=cfg.train.seed)
        return self._bundles[key]


# ---- budget -----------------------------------------------------------------------------------------------
def seconds_per_epoch(cfg: RunConfig, bundle: DataBundle, steps: int = 6) -> float:
    """Estimated wall seconds of one epoch (training + validation): a few timed steps on a throwaway copy
    of the model, after one untimed step (oneDNN builds its kernels on the first), scaled up."""
    model = make_model(cfg, bundle)
    with torch.random.fork_rng(devices=[]):  # the probe must not shift anyone's random stream
        s = prepare(model, bundle, cfg)
        batches = list(islice(iter(s.train_loader), steps + 1))
        train_one_epoch(replace(s, train_loader=batches[:1]))
        t0 = time.perf_counter()
        train_one_epoch(replace(s, train_loader=batches[1:] or batches))
        per_step = (time.perf_counter() - t0) / max(len(batches) - 1, 1)
        val = list(islice(iter(s.val_loader), 2))
        t0 = time.perf_counter()
        evaluate(model, val, s.criterion, s.bf16, s.device)
        per_val = (time.perf_counter() - t0) / len(val)
    return per_step * len(s.train_loader) + per_val * len(s.val_loader)


def epochs_for_budget(plans: list[tuple[Entry, RunConfig, DataBundle]], minutes: float) -> dict[str, int]:
    """Epochs each model gets from a per-model budget of `minutes`; one error naming every model that
    cannot finish a single epoch, raised before any model trains."""
    out, short, lines = {}, [], []
    for entry, cfg, bundle in plans:
        per_epoch = seconds_per_epoch(cfg, bundle)
        out[entry.slug] = math.floor(minutes * 60 / per_epoch)
        lines.append(f"budget: {escape(entry.label)} ~{per_epoch:.1f} s per epoch -> {out[entry.slug]} epochs")
        if out[entry.slug] < 1:
            short.append((entry.label, per_epoch))
    if not short:
        console.print("\n".join(lines))
    else:
        need = max(s for _, s in short) / 60
        raise DaxiaoError(f"--budget-minutes {minutes:g} is too small for one epoch of "
                          f"{', '.join(f'{n} (~{s:.0f} s per epoch)' for n, s in short)}; give at least "
                          f"--budget-minutes {math.ceil(need * 100) / 100:g}, or --epochs N.")
    return out


# ---- the job ----------------------------------------------------------------------------------------------
def compare_folder(cfg: RunConfig) -> Path:
    """project/name, by default runs/compare-<data>; an existing folder needs --resume or --exist-ok."""
    folder = Path(cfg.project) / (cfg.name or f"compare-{Path(cfg.data.data.rstrip('/')).stem}")
    return check_new_folder(folder, cfg.resume or cfg.exist_ok, "Compare folder", "pass --resume to reuse its "
                            "finished models, --exist-ok to train them again, or another --name")


def compare(base: RunConfig, models: str | list[str], epochs: int | None = None, budget_minutes: float | None = None,
            limits: tuple[int | None, int | None, int | None] = (None, None, None), repeats: int = 20,
            verbose: bool = True) -> dict:
    """Train or load every model under one recipe, then test, profile and rank them.

    Args:
        base: the shared recipe (data, optimizer, schedule, batch size, seed ...); ``base.project/base.name``
            is the compare folder and ``base.resume`` reuses finished models in it.
        models: comma-separated entries (see module docstring) or a list of them.
        epochs: epochs per model (default: ``base.train.epochs``), or
        budget_minutes: wall minutes per model: each trains for the epochs that fit (measured per model).
        limits: (train, val, test) image counts of a stratified subset of an in-memory set, or None: all.
        repeats: timed runs per latency measurement.

    Returns:
        {"rows": [one dict per model], "folder", "files": {name: path}, "recipe": {...}}.

    Example:
        >>> compare(RunConfig(), "seed-cnn,mobilenet-v1", epochs=3)["rows"][0]["test_acc"]
    """
    base = copy.deepcopy(base)
    if budget_minutes is not None and budget_minutes <= 0:
        raise DaxiaoError(f"--budget-minutes must be > 0 (received {budget_minutes:g}).")
    if epochs is not None:
        base.train.epochs = epochs
    base.validate()
    entries = parse_models(models, base)
    folder = compare_folder(base)
    with FolderLock(folder, "Compare folder"):  # one compare per folder; its runs each lock their own as well
        begin("compare", folder)
        return _compare(base, entries, folder, budget_minutes, limits, repeats, verbose)


def _compare(base: RunConfig, entries: list[Entry], folder: Path, budget_minutes: float | None,
             limits: tuple[int | None, int | None, int | None], repeats: int, verbose: bool) -> dict:
    data = DataCache(limits)
    plans = [(e, entry_config(base, e, folder)) for e in entries]
    todo = [(e, c, data.get(c)) for e, c in plans if e.run is None and not _done(folder / e.slug, base.resume)]
    if budget_minutes is not None:
        fitted = epochs_for_budget([p for p in todo if not _resumable(folder / p[0].slug, base.resume)],
                                   budget_minutes)
        for e, c, _ in todo:  # a cut-off model continues with the epochs it started with
            c.train.epochs = fitted.get(e.slug) or load_yaml(folder / e.slug / "config.yaml").train.epochs
    folder.mkdir(parents=True, exist_ok=True)
    rows, t_start = [], time.perf_counter()
    for i, (entry, cfg) in enumerate(plans, 1):
        if verbose:
            left = f", {_eta(t_start, i - 1, len(plans))} left" if i > 1 else ""
            console.rule(f"[bold]model {i}/{len(plans)}: {escape(entry.label)}[/]{left}")
        rows.append(_one(entry, cfg, folder, data, base.resume, repeats, verbose))
        _write_tables(folder, rows, base, budget_minutes)  # after every model: a cut-off compare keeps them
    mark_pareto(rows)
    files = _write_tables(folder, rows, base, budget_minutes)
    files.update(write_figures_and_report(folder, rows, recipe(base, budget_minutes)))
    return {"rows": rows, "folder": str(folder), "files": files, "recipe": recipe(base, budget_minutes)}


def _done(run: Path, resume: bool) -> bool:
    return resume and (run / "done.json").is_file()


def _resumable(run: Path, resume: bool) -> bool:
    return resume and (run / "last.state.safetensors").is_file()


def _eta(t_start: float, finished: int, total: int) -> str:
    per = (time.perf_counter() - t_start) / max(finished, 1)
    return f"~{per * (total - finished) / 60:.1f} min"


def _one(entry: Entry, cfg: RunConfig, folder: Path, data: DataCache, resume: bool, repeats: int,
         verbose: bool) -> dict:
    """Train (unless given or already done), then test and profile one model; its row of the table."""
    run = folder / entry.slug
    if entry.run is not None:
        done = _given_run(entry.run)
    elif _done(run, resume):
        done = json.loads((run / "done.json").read_text())
        if verbose:
            console.print(f"reusing {escape(str(run))} (finished: {done['epochs']} epochs)")
    else:
        cfg.resume = _resumable(run, resume)
        t0 = time.perf_counter()
        r = train(cfg, verbose=verbose, bundle=data.get(cfg), model_defaults=False)  # one recipe for all
        done = {"epochs": len(r["history"]), "train_seconds": r["train_seconds"], "best_val_acc": r["best_val_acc"],
                "wall_seconds": time.perf_counter() - t0, "run_dir": str(run)}
        atomic_write_json(run / "done.json", done)
    model, pre, test_acc, split = _test(done["run_dir"], entry, cfg, data)
    prof = profile_model(model, pre.image_size, pre.channels, repeats=repeats, max_seconds=3.0)
    return {"label": entry.label, "model": getattr(model, "daxiao_name", entry.model), **done, "test_acc": test_acc,
            "test_split": split, "history": _history(Path(done["run_dir"])), **_flat(prof), "profile": prof}


def _given_run(path: Path) -> dict:
    meta = read_meta(resolve_weights(path))
    run = path if path.is_dir() else path.parent
    hist = _history(run)
    return {"epochs": len(hist), "train_seconds": sum(h.get("epoch_seconds", 0) for h in hist),
            "best_val_acc": max((h["val_acc"] for h in hist), default=meta.get("val_acc")), "wall_seconds": None,
            "run_dir": str(path)}


def _test(run_dir: str, entry: Entry, cfg: RunConfig, data: DataCache) -> tuple[torch.nn.Module, Preprocess,
                                                                                   float, str]:
    """Accuracy on the test split (val where the data has none), with the weights' own preprocessing. A
    trained entry uses the compare's data (and its test subset); a given run uses its own training data."""
    loaded = load_run(run_dir)
    model, pre = loaded.model, loaded.preprocess
    if entry.run is not None:
        r = evaluate_model(run_dir)
        return model, pre, r["acc"], r["split"]
    bundle = data.get(cfg)
    split = "test" if bundle.test is not None else "val"
    device = resolve_device(cfg.train.device)
    model.to(device).to(memory_format=torch.channels_last)
    r = evaluate(model, make_loader(bundle.split(split), 256, pre, workers=cfg.data.workers), device=device)
    return model.cpu(), pre, r["acc"], split


def _history(run: Path) -> list[dict]:
    path = run / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def _flat(p: dict) -> dict:
    return {"params": p["params"], "macs": p["macs"], "size_fp32_bytes": p["size_fp32_bytes"],
            "size_int8_bytes": p["size_int8_bytes"], "peak_activation_bytes": p["peak_activation_bytes"],
            "latency_ms": p["latency_1thread"]["median_ms"],
            "latency_iqr_ms": p["latency_1thread"]["q3_ms"] - p["latency_1thread"]["q1_ms"],
            "latency_all_threads_ms": p["latency_all_threads"]["median_ms"],
            "throughput_images_per_s": p["throughput"]["images_per_s"]}


# ---- Pareto -----------------------------------------------------------------------------------------------
def pareto_flags(accuracy: list[float], latency: list[float]) -> list[bool]:
    """True where no other model is at least as accurate and at least as fast, and strictly better in one."""
    points = list(zip(accuracy, latency, strict=True))
    return [not any(a2 >= a and l2 <= lat and (a2 > a or l2 < lat) for a2, l2 in points) for a, lat in points]


def mark_pareto(rows: list[dict]) -> None:
    """Pareto-optimal in (test accuracy up, batch-1 one-thread latency down): the trade-off a user picks from."""
    for row, flag in zip(rows, pareto_flags([r["test_acc"] for r in rows], [r["latency_ms"] for r in rows]),
                         strict=True):
        row["pareto"] = flag


# ---- outputs ----------------------------------------------------------------------------------------------
CSV_FIELDS = ["label", "model", "test_acc", "test_split", "best_val_acc", "epochs", "train_seconds", "params", "macs",
              "size_fp32_bytes", "size_int8_bytes", "peak_activation_bytes", "latency_ms", "latency_iqr_ms",
              "latency_all_threads_ms", "throughput_images_per_s", "pareto", "run_dir"]


def recipe(cfg: RunConfig, budget_minutes: float | None) -> dict:
    t, o = cfg.train, cfg.optim
    epochs = f"{t.epochs} epoch{'s' if t.epochs != 1 else ''} per model"
    return {"data": cfg.data.data, "budget": f"{budget_minutes:g} min per model" if budget_minutes else epochs,
            "optimizer": o.optimizer, "lr": o.lr, "schedule": o.schedule, "batch_size": t.batch_size,
            "augment": cfg.data.augment, "seed": t.seed, "torch": torch.__version__}


def _write_tables(folder: Path, rows: list[dict], cfg: RunConfig, budget_minutes: float | None) -> dict[str, str]:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    atomic_write(folder / "compare.csv", buf.getvalue())
    atomic_write_json(folder / "compare.json", {"recipe": recipe(cfg, budget_minutes), "rows": rows})
    return {"csv": str(folder / "compare.csv"), "json": str(folder / "compare.json")}


def compare_table(rows: list[dict], rec: dict) -> Table:
    table = Table(title=f"{rec['data']}: {rec['budget']}, same recipe ({rec['optimizer']}, {rec['schedule']}, "
                        f"batch {rec['batch_size']}, seed {rec['seed']}); latency: batch 1, median ± IQR/2")
    for col in ("model", "test acc", "params", "MACs", "size fp32", "latency 1 thread", "latency all", "img/s b64",
                "train time", "epochs", "Pareto"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        table.add_row(escape(r["label"]), f"{r['test_acc']:.4f}", human(r["params"]), human(r["macs"]),
                      human_bytes(r["size_fp32_bytes"]), f"{r['latency_ms']:.2f} ± {r['latency_iqr_ms'] / 2:.2f} ms",
                      f"{r['latency_all_threads_ms']:.2f} ms", f"{r['throughput_images_per_s']:,.0f}",
                      f"{r['train_seconds']:.1f} s", str(r["epochs"]), "★" if r.get("pareto") else "")
    return table
