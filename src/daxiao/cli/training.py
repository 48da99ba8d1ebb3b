"""`daxiao train`, `lr-find`, `augment-preview`, `tune` and `distill`: the commands that train."""

from __future__ import annotations

import argparse

from ..config import add_config_flags, config_from_args
from ..console import console as err
from ..console import escape, out


def resume_epochs(cfg, args: argparse.Namespace):
    """`--resume` without `--epochs` continues to the run's own epochs (resuming takes the larger of the
    two), not to the default 10: a resumed run must end where the uninterrupted one would have."""
    if cfg.resume and args.epochs is None and not getattr(args, "config", None):
        cfg.train.epochs = 1
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from ..training import distributed
    from ..training.runs import train

    cfg = resume_epochs(config_from_args(args), args)
    if args.nproc is not None and args.nproc > 1 and not distributed.launched():
        from .launch import launch

        return launch(args.argv, cfg, args.nproc)
    try:
        result = train(cfg)
    finally:
        distributed.shutdown()
    err.print(f"best val acc {result['best_val_acc']:.4f} at epoch {result['best_epoch']}; "
              f"run folder: [bold]{escape(str(result['run_dir']))}[/]")
    return 0

def cmd_lr_find(args: argparse.Namespace) -> int:
    from ..training.lr_find import lr_find
    from ..training.runs import build

    cfg = config_from_args(args).validate()
    model, bundle = build(cfg)
    r = lr_find(model, bundle, cfg, args.start_lr, args.end_lr, args.steps, args.out)
    out.print(f"suggested lr {r['suggested_lr']:.3g} (steepest loss descent; {len(r['lrs'])} steps); "
              f"plot: {escape(args.out)}")
    return 0

def cmd_augment_preview(args: argparse.Namespace) -> int:
    import torch

    from ..data import TensorSplit, load_data
    from ..data.augment import parse_augment, preview_grid
    from ..data.folder import ImageFiles

    cfg = config_from_args(args).validate()
    bundle = load_data(cfg.data, cfg.train.seed)
    split = bundle.train
    firsts = [int(i[0]) for c in range(len(bundle.classes)) if len(i := (split.targets == c).nonzero().flatten())]
    if isinstance(split, TensorSplit):
        images = split.images[firsts]
    else:
        files = ImageFiles([split.files.paths[i] for i in firsts], [0] * len(firsts), bundle.preprocess)
        images = torch.stack([files[k][0] for k in range(len(firsts))])
    path = preview_grid(images, split.targets[firsts], bundle.classes, parse_augment(cfg.data.augment), args.out,
                        per_class=args.per_class, seed=cfg.train.seed)
    out.print(f"wrote {escape(str(path))}: per class, an original and {args.per_class} augmented versions "
              f"({escape(cfg.data.augment)})")
    return 0

def cmd_tune(args: argparse.Namespace) -> int:
    from ..tune import TuneSettings, tune

    cfg = config_from_args(args)
    if args.report:
        from pathlib import Path

        from ..tune.report import report_study

        folder = Path(cfg.project) / (cfg.name or args.study or "tune-report")
        report_study(args.storage, args.study, folder)
        return 0
    if args.heartbeat < 1:
        err.print(f"[red]error:[/] --heartbeat must be >= 1 second (received {args.heartbeat}).")
        return 2
    settings = TuneSettings(space=args.space or {}, sampler=args.sampler, trials=args.trials, cv=args.cv,
                            pruner=args.pruner, jobs=args.jobs, storage=args.storage, study=args.study,
                            timeout=args.timeout, heartbeat=args.heartbeat)
    tune(cfg, settings)  # Ctrl-C: tune writes trials.csv/best.yaml, main() prints the command that resumes it
    return 0

def cmd_distill(args: argparse.Namespace) -> int:
    from ..models.saved import read_meta, resolve_weights
    from ..training.distill import distill

    if args.data is None and not args.config:  # the data the teacher was trained on
        data = read_meta(resolve_weights(args.teacher)).get("config", {}).get("data", {})
        args.data, args.data_dir = data.get("data", "digits"), args.data_dir or data.get("data_dir")
    cfg = resume_epochs(config_from_args(args), args)
    r = distill(cfg, args.teacher, args.kd_alpha, args.temperature, cache=args.teacher_cache)
    err.print(f"student best val acc {r['best_val_acc']:.4f} at epoch {r['best_epoch']} (teacher "
              f"{r['distill']['teacher_val_acc']:.4f}); run folder: [bold]{escape(str(r['run_dir']))}[/]")
    return 0


def add_commands(sub) -> None:
    t = sub.add_parser("train", help="train a model; writes a run folder",
                       description="Train a model. Settings: defaults < --config YAML < flags.")
    t.add_argument("--config", help="YAML file of settings (nested or flat keys, as in a run's config.yaml)")
    add_config_flags(t)
    t.add_argument("--nproc", type=int, metavar="N",
                   help="data-parallel: N processes on this machine through torchrun (gloo on CPU, NCCL on GPUs); "
                        "--batch-size is per process, the lr is used as given")
    t.set_defaults(fn=cmd_train)

    lf = sub.add_parser("lr-find", help="learning-rate range test: plot loss against lr, suggest a value",
                        description="Takes the same settings as train (model, data, optimizer, batch size, loss).")
    lf.add_argument("--config")
    add_config_flags(lf)
    lf.add_argument("--out", default="lr_find.png", help="plot file (PNG)")
    lf.add_argument("--start-lr", type=float, default=1e-7)
    lf.add_argument("--end-lr", type=float, default=10.0)
    lf.add_argument("--steps", type=int, default=100)
    lf.set_defaults(fn=cmd_lr_find)

    ap = sub.add_parser("augment-preview", help="a PNG grid of original vs augmented images per class",
                        description="See what --augment does before training: e.g. --augment seed --out grid.png")
    ap.add_argument("--config")
    add_config_flags(ap, sections=("data", "train"))
    ap.add_argument("--out", default="augment_preview.png")
    ap.add_argument("--per-class", type=int, default=6)
    ap.set_defaults(fn=cmd_augment_preview)

    tu = sub.add_parser(
        "tune", help="hyperparameter search (grid, random, TPE) with cross-validation and pruning",
        description="Search training settings with Optuna. The other flags set the base config every trial starts "
                    "from; --space names what varies: choices a,b,c or ranges low:high[:log|:step]. Example: "
                    "daxiao tune --model seed-tiny-cnn --space optimizer=adam,sgd activation=relu,tanh "
                    "batch_size=10,20,50 lr=1e-4:1e-1:log --sampler tpe --trials 30 --cv 3")
    tu.add_argument("--config", help="YAML file of base settings (as for train)")
    tu.add_argument("--space", nargs="+", metavar="NAME=VALUES",
                    help="name=a,b,c | name=low:high[:log|:step] | a YAML file of them (label_smoothing too)")
    tu.add_argument("--sampler", default="tpe", help="grid | random | tpe (Bayesian; default)")
    tu.add_argument("--trials", type=int, help="number of trials (default: the whole grid for grid, else 20)")
    tu.add_argument("--cv", type=int, default=3, help="stratified folds (default 3, as the article); 0: hold-out")
    tu.add_argument("--pruner", default="median", help="median | halving | hyperband | none")
    tu.add_argument("--jobs", type=int, default=1, help="worker processes (threads per worker: cores / jobs)")
    tu.add_argument("--storage", help="Optuna storage URL (postgresql://user@host/db, sqlite:///x.db) or a journal "
                                      "file; default: study.journal in the study folder. Workers on any machine "
                                      "join by the same command with --storage and --study")
    tu.add_argument("--study", help="study name in the storage (default: the study folder's name)")
    tu.add_argument("--timeout", type=float, help="minutes; no new trial starts after this")
    tu.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                    help="database storages: a running trial's heartbeat period; a trial silent for twice this "
                         "(its worker was killed) is failed and retried by another worker (default 60)")
    tu.add_argument("--report", action="store_true",
                    help="print the leaderboard of --study in --storage and write trials.csv, best.yaml and the "
                         "plots (into --project/--name, default --project/STUDY), without training")
    add_config_flags(tu)
    tu.set_defaults(fn=cmd_tune)

    di = sub.add_parser("distill", help="knowledge distillation: train a small student on a big teacher's logits",
                        description="Hinton-style distillation: loss = kd_alpha * KL(teacher/T || student/T) * T^2 "
                                    "+ (1 - kd_alpha) * CE. The other flags are train's and configure the student; "
                                    "--data defaults to the teacher's training data.")
    di.add_argument("--teacher", required=True, metavar="RUN", help="a run folder or weights file")
    di.add_argument("--student", dest="model", metavar="MODEL", help="the student model (same as --model)")
    # --kd-alpha, not --alpha: --alpha is already mobilenet-v1's width multiplier, which a student may need
    di.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the teacher term, 0..1 (Hinton's alpha)")
    di.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T")
    di.add_argument("--teacher-cache", action=argparse.BooleanOptionalAction, default=True,
                    help="compute the teacher's logits once when there is no augmentation (default)")
    di.add_argument("--config", help="YAML file of the student's settings (as for train)")
    add_config_flags(di)
    di.set_defaults(fn=cmd_distill)
