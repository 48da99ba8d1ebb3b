"""Run folders and the `train` job: config -> data -> model -> fit -> run folder.

A run folder (``runs/<name>/``) holds config.yaml, metrics.csv, best/last weights with their JSON
sidecars, last.state.safetensors for resuming, and confusion_matrix.png. It is never overwritten
without ``exist_ok`` or ``resume``; an unnamed run gets the next free ``<model>-<data>[-N]``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .config import RunConfig, apply_overrides, load_yaml
from .data import DataBundle, load_data
from .errors import DaxiaoError
from .profile import count_params
from .registry import create_model, model_info
from .trainer import fit


def default_name(cfg: RunConfig) -> str:
    data = Path(cfg.data.data.rstrip("/")).stem  # "digits", or the folder/CSV name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.model.name}-{data}").strip("-")


def run_folder(cfg: RunConfig) -> Path:
    """The folder this run writes to, checked against overwriting and against resuming nothing."""
    project = Path(cfg.project)
    if cfg.resume:
        run = project / (cfg.name or default_name(cfg))
        if not (run / "last.state.safetensors").is_file():
            raise DaxiaoError(f"--resume: no run to resume at {run} (no last.state.safetensors); "
                              "pass --name of an existing run folder.")
        return run
    if cfg.name is None:
        base, n = default_name(cfg), 1
        run = project / base
        while run.exists():
            n += 1
            run = project / f"{base}-{n}"
        return run
    run = project / cfg.name
    if run.exists() and any(run.iterdir()) and not cfg.exist_ok:
        raise DaxiaoError(f"Run folder {run} exists; choose another --name, or pass --exist-ok to replace its "
                          "files, or --resume to continue it.")
    return run


def build(cfg: RunConfig) -> tuple[torch.nn.Module, DataBundle]:
    """The data, then a model shaped for it (classes, channels, input size), initialised from the seed."""
    info = model_info(cfg.model.name)  # unknown names fail here, before any data is read
    bundle = load_data(cfg.data, cfg.train.seed)
    pre, m = bundle.preprocess, cfg.model
    torch.manual_seed(cfg.train.seed)
    model = create_model(info.name, pretrained=m.pretrained, num_classes=len(bundle.classes),
                         in_chans=pre.channels, input_size=pre.image_size, activation=m.activation,
                         alpha=m.alpha, drop_rate=m.drop_rate)
    return model, bundle


def train(cfg: RunConfig, verbose: bool = True) -> dict:
    """The `daxiao train` job. With ``resume`` the run's own config.yaml is the base and `cfg`'s epochs
    (if larger) extends it."""
    cfg.validate()
    run = run_folder(cfg)
    if cfg.resume:
        saved = load_yaml(run / "config.yaml")
        apply_overrides(saved, {"epochs": max(cfg.train.epochs, saved.train.epochs), "resume": True,
                                "name": run.name, "project": cfg.project})
        cfg = saved
    model, bundle = build(cfg)
    result = fit(model, bundle, cfg, run_dir=run, verbose=verbose)
    result["params"] = count_params(model)
    result["model"] = model
    return result
