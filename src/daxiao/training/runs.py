"""Run folders and the `train` job: config -> data -> model -> fit -> run folder.

A run folder (``runs/<name>/``) holds config.yaml, metrics.csv, best/last weights with their JSON
sidecars, last.state.safetensors for resuming, and confusion_matrix.png. It is never overwritten
without ``exist_ok`` or ``resume``; an unnamed run gets the next free ``<model>-<data>[-N]``.
"""

from __future__ import annotations

import copy
import glob
import re
from dataclasses import replace
from pathlib import Path

import torch

from ..config import DataConfig, RunConfig, apply_defaults, apply_overrides, load_yaml
from ..console import console, escape
from ..data import DataBundle, TensorSplit, load_data
from ..errors import DaxiaoError
from ..files import check_new_folder, next_free
from ..models import create_model, model_info
from ..models.head import TransferModel, head_kwargs
from ..models.pretrained import load_weights, weights_input_size
from ..models.saved import read_description
from . import distributed
from .callbacks import Callback
from .checkpoint import PREV_STATE, STATE
from .fit import fit
from .transfer import train_transfer


def default_name(cfg: RunConfig) -> str:
    data = Path(cfg.data.data.rstrip("/")).stem  # "digits", or the folder/CSV name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.model.name}-{data}").strip("-")


def run_folder(cfg: RunConfig) -> Path:
    """The folder this run writes to, checked against overwriting and against resuming nothing. An unnamed
    run claims the next free ``<model>-<data>[-N]`` (created here, so two processes never share one);
    ``--resume`` without ``--name`` picks the most recently saved unfinished run of this model and data."""
    project = Path(cfg.project)
    if cfg.resume:
        run = project / cfg.name if cfg.name else latest_unfinished(cfg)
        if not any((run / n).is_file() for n in (STATE, PREV_STATE)):
            raise DaxiaoError(f"--resume: no run to resume at {run} (no {STATE}); "
                              "pass --name of an existing run folder.")
        return run
    if cfg.name is None:
        return next_free(project, default_name(cfg), create=True)
    return check_new_folder(project / cfg.name, cfg.exist_ok)


def latest_unfinished(cfg: RunConfig) -> Path:
    """The run of `cfg`'s model and data (``<model>-<data>`` or ``-N``) saved most recently that has fewer
    epochs than it was started with (or than `cfg` asks for now); says which it picked."""
    project, base = Path(cfg.project), default_name(cfg)
    found = []
    for run in project.glob(f"{glob.escape(base)}*"):
        if run.name != base and not re.fullmatch(re.escape(base) + r"-\d+", run.name):
            continue
        state = run / STATE
        try:
            done = read_description(state).get("epoch", 0)
            wanted = max(load_yaml(run / "config.yaml").train.epochs, cfg.train.epochs)
        except DaxiaoError:
            continue
        if done < wanted:
            found.append((state.stat().st_mtime, run, done, wanted))
    if not found:
        raise DaxiaoError(f"--resume: no unfinished run of {cfg.model.name} on {cfg.data.data} in {project} "
                          f"({base}[-N] with fewer epochs than asked); pass --name RUN, and --epochs N to extend a "
                          "finished one.")
    _, run, done, wanted = max(found, key=lambda f: f[0])
    console.print(f"resuming {run} (the most recent unfinished run of {cfg.model.name} on {cfg.data.data}: "
                  f"{done} of {wanted} epochs done)")
    return run


def saved_config(run: Path) -> RunConfig:
    """A run's config.yaml; if it is missing, empty or unreadable, the config its saved state carries
    (never the defaults: that would silently resume another model on other data)."""
    try:
        return load_yaml(run / "config.yaml")
    except DaxiaoError as e:
        try:
            meta = read_description(run / STATE)
            cfg = RunConfig.from_dict(meta["config"])
        except (DaxiaoError, KeyError, TypeError):
            raise DaxiaoError(f"--resume: {e} The saved state carries no config either; start the run again "
                              "with --exist-ok.") from None
        console.print(f"[yellow]warning:[/] {escape(str(e))} Using the config saved with the training state.")
        return cfg


def build(cfg: RunConfig) -> tuple[torch.nn.Module, DataBundle]:
    """The data, then a model shaped for it (classes, channels, input size), initialised from the seed."""
    info = model_info(cfg.model.name)  # unknown names fail here, before any data is read
    bundle = load_data(data_config(cfg, info.name), cfg.train.seed, cache_dir=cfg.train.cache_dir)
    small = info.min_image_size and cfg.data.image_size is None and bundle.preprocess.image_size < info.min_image_size
    if small and isinstance(bundle.train, TensorSplit):  # a built-in set: upscaled (see ModelInfo)
        bundle = load_data(replace(data_config(cfg, info.name), image_size=info.min_image_size), cfg.train.seed)
        bundle.size_rule = f"{info.name} upscales small built-in sets to {info.min_image_size} px"
    if cfg.model.pretrained and cfg.data.image_size is None:
        bundle.size_rule = (f"{info.name}'s pretrained weights take {bundle.preprocess.image_size} px "
                            "(--image-size N overrides)")
    return make_model(cfg, bundle), bundle


def with_model_defaults(cfg: RunConfig) -> RunConfig:
    """`cfg` with the model's own defaults (its registry entry) in every setting nobody chose; `compare`
    does not call this, as it trains every model under one recipe."""
    apply_model_defaults(cfg)
    return cfg


def apply_model_defaults(cfg: RunConfig) -> dict:
    """Fill, in place, the settings nobody chose with the model's own defaults (`scratch_defaults` too when
    it starts from random weights); returns {setting: value} of those set, also kept beside the fields (as
    `explicit` is) for fit's header to name."""
    info = model_info(cfg.model.name)
    todo = dict(info.defaults)
    if not (cfg.model.pretrained or cfg.model.weights):
        todo.update(info.scratch_defaults)
    applied = {k: todo[k] for k in apply_defaults(cfg, todo)} if todo else {}
    cfg._model_defaults = applied  # type: ignore[attr-defined]
    return applied


def data_config(cfg: RunConfig, name: str) -> DataConfig:
    """Pretrained weights decide the data's defaults: their input size, and RGB (grey images repeated over
    three channels, small ones upscaled), unless --image-size or --channels say otherwise."""
    if not cfg.model.pretrained:
        return cfg.data
    return replace(cfg.data, image_size=cfg.data.image_size or weights_input_size(name),
                   channels=cfg.data.channels or 3)


def make_model(cfg: RunConfig, bundle: DataBundle) -> torch.nn.Module:
    """The configured model shaped for `bundle` (classes, channels, input size), initialised from the seed."""
    pre, m = bundle.preprocess, cfg.model
    if (m.freeze_base or m.unfreeze) and not (m.pretrained or m.weights):
        console.print("[yellow]warning:[/] --freeze-base/--unfreeze without --pretrained or --weights freezes "
                      "randomly initialised weights: the head learns from random features.")
    torch.manual_seed(cfg.train.seed)
    model = create_model(model_info(m.name).name, pretrained=m.pretrained, num_classes=len(bundle.classes),
                         in_chans=pre.channels, input_size=pre.image_size, activation=m.activation,
                         alpha=m.alpha, drop_rate=m.drop_rate, **head_kwargs(m))
    if m.weights:
        report = load_weights(model, m.weights)
        console.print(f"weights from {m.weights}: {_summary(report)}", markup=False)
    return model


def _summary(report: dict[str, list[str]]) -> str:
    parts = [f"{len(v)} {k} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})" for k, v in report.items() if v]
    return "; ".join(parts) if parts else "every tensor matched"


def train(cfg: RunConfig, verbose: bool = True, bundle: DataBundle | None = None,
          callbacks: list[Callback] | None = None, model_defaults: bool = True) -> dict:
    """The `daxiao train` job. With ``resume`` the run's own config.yaml is the base and `cfg`'s epochs
    (if larger) extends it. `bundle`: data already loaded for this config (compare loads it once for
    every model); `callbacks` join the loop (distillation's teacher). `model_defaults`: fill the settings
    nobody chose with the model's own (`with_model_defaults`)."""
    if model_defaults and not cfg.resume:
        cfg = with_model_defaults(copy.deepcopy(cfg))
    cfg.validate()
    distributed.setup(cfg.train.device, cfg.train.threads)  # in a torchrun job: join it before choosing the folder
    run = distributed.on_rank_zero(lambda: run_folder(cfg))  # one folder, chosen once, for every rank
    if cfg.resume:
        saved = saved_config(run)
        apply_overrides(saved, {"epochs": max(cfg.train.epochs, saved.train.epochs), "resume": True,
                                "name": run.name, "project": cfg.project})
        cfg = saved
    model, bundle = build(cfg) if bundle is None else (make_model(cfg, bundle), bundle)
    if isinstance(model, TransferModel) and (cfg.model.freeze_base or cfg.model.unfreeze):
        result = train_transfer(model, bundle, cfg, run_dir=run, verbose=verbose)
    else:
        result = dict(fit(model, bundle, cfg=cfg, run_dir=run, verbose=verbose, callbacks=callbacks))
    return {**result, "params": sum(p.numel() for p in model.parameters()), "model": model}
