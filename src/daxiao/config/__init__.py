"""Run configuration: dataclasses <-> YAML <-> CLI flags.

Precedence is dataclass defaults < YAML file (``--config``) < CLI flags. Flag names are the field
names with '-' for '_' (``batch_size`` <-> ``--batch-size``); the one exception is ``model.name``,
spelled ``--model``. A YAML file may be nested (``train: {epochs: 5}``) or flat (``epochs: 5``).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import DaxiaoError, check_choice, did_you_mean
from ..files import atomic_write
from .augment import parse_augment
from .loss import parse_loss
from .recipes import RECIPES

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "triangle")
TTA = ("none", "flip", "flip-shift")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICE_RULE = r"auto|cpu|mps|cuda(:\d+)?"


@dataclass
class DataConfig:
    data: str = "digits"             # built-in name (`daxiao datasets`), an image folder, or a CSV of path,label
    val: str | None = None           # a separate validation folder or CSV; else split off train
    data_dir: str | None = None      # where a built-in set's files are, before the default places
    image_size: int | None = None    # pixels per side; None: native for built-ins, from the images for folders
    channels: int | None = None      # 1 or 3; None: what the data is
    resize: str = "squash"           # squash | crop | pad, for non-square images (see README)
    val_split: float = 0.1           # fraction of train held out for validation (stratified, seeded)
    workers: int = 2                 # DataLoader processes for image folders (in-memory sets need none)
    augment: str = "none"            # preset (none|seed|light|strong) and/or Keras names: "seed,rotation_range=10"
    balanced_sampling: bool = False  # draw classes evenly (weighted sampler, with replacement)
    data_cache: str = "auto"         # folders: auto | memory | disk | off: decode once into RAM or a memory-mapped file
    memory_budget: float = 0.25      # data_cache auto: decode into memory when it takes at most this fraction of RAM


@dataclass
class ModelConfig:
    name: str = field(default="seed-cnn", metadata={"flag": "model"})  # `daxiao models`, or timm:<name>
    pretrained: bool = False         # ImageNet weights, where the family has them
    activation: str | None = None    # relu | relu6 | tanh | gelu | silu; None: the family's own
    alpha: float | None = None       # width multiplier (mobilenet-v1)
    drop_rate: float | None = None   # dropout before the classifier; None: the family's own
    weights: str | None = None       # start from a local .safetensors/.pth state dict (the classifier may differ)
    freeze_base: bool = False        # transfer learning: train only the head; the base and its BatchNorm stay fixed
    head: str | None = None          # article: GAP, Dense(1024, relu), dropout, Dense | linear; None: article if frozen
    head_hidden: int = 1024          # width of the article head's hidden Dense layer
    head_dropout: float = 0.0        # dropout before the head's last layer (the article has none)
    unfreeze: str | None = None      # all | last-N: after the head stage, fine-tune the whole base or its last N blocks
    freeze_bn: bool = True           # keep the base's BatchNorm statistics fixed while fine-tuning


@dataclass
class OptimConfig:
    optimizer: str = "adam"          # adam | adamw | sgd | rmsprop (Keras' optimizer='adam')
    lr: float | None = None          # peak learning rate; None: 1e-3 (adam, adamw, rmsprop), 1e-2 (sgd), as Keras
    momentum: float = 0.9            # sgd and rmsprop
    nesterov: bool = False           # sgd
    weight_decay: float = 0.0        # never applied to norm or bias tensors
    schedule: str = "cosine"         # constant | step | cosine | onecycle | triangle; a function of the step
    warmup_epochs: float = 0.0       # linear warmup from lr/10 (constant, step and cosine)
    step_size: float = 0.0           # step schedule: epochs between decays; 0: a third of the epochs
    gamma: float = 0.1               # step schedule: lr factor at each decay
    backbone_lr_scale: float = 0.1   # fine-tuning: the pretrained base learns at lr x this (discriminative rates)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    loss: str = "cross-entropy"      # cross-entropy | label-smoothing=<eps> | mse | focal[=<gamma>]
    class_weight: str | None = None  # balanced | a list like 1,2,1: per-class loss weights for imbalanced data
    seed: int = 0                    # fixes the split, the init and the shuffle order
    patience: int = 0                # stop after this many epochs without a better val accuracy; 0: never
    precision: str = "auto"          # auto | fp32 | bf16 | fp16 (autocast); auto: bf16 where it was measured to help
    device: str = "auto"             # auto | cpu | cuda | cuda:N | mps; auto: CUDA, then MPS, then CPU
    compile: bool = False            # torch.compile the training forward (measured before turning it on)
    threads: int | None = None       # torch intra-op threads; None: torch's default (all cores)
    head_epochs: int | None = None   # transfer: epochs of the head stage (base frozen); 0 skips it; None: epochs
    finetune_epochs: int | None = None  # transfer with --unfreeze: epochs of the fine-tuning stage; None: epochs
    feature_cache: str = "memory"    # memory | disk | off: a frozen base's features are computed once, not every epoch
    cache_dir: str | None = None     # disk caches (features, decoded folders): where; None: under ~/.cache/daxiao
    deterministic: bool = False      # deterministic kernels, seeded workers, fp32 for precision=auto: a killed and
                                     # resumed run ends bit-identical to an uninterrupted one (README: Reliability)
    lookahead: bool = False          # airbench's lookahead: every 5 steps, weights pulled toward their running average
    tta: str = "none"                # none | flip | flip-shift: average logits over mirrored (and shifted) views


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str | None = None          # run folder name; None: <model>-<data>
    project: str = "runs"            # parent folder of run folders
    exist_ok: bool = False           # allow writing into an existing run folder (replaces its files)
    resume: bool = False             # continue the run in the run folder from last.safetensors
    recipe: str | None = None        # a named config diff (daxiao.config.recipes): defaults < recipe < YAML < flags

    # ---- conversions -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        cfg = cls()
        apply_overrides(cfg, _flatten(d))
        return cfg

    def validate(self) -> RunConfig:
        """Check ranges and names before anything is built; raise one clear DaxiaoError."""
        t, o, d = self.train, self.optim, self.data
        for what, value, ok, rule in [
            ("epochs", t.epochs, t.epochs >= 1, ">= 1"),
            ("batch_size", t.batch_size, t.batch_size >= 1, ">= 1"),
            ("patience", t.patience, t.patience >= 0, ">= 0"),
            ("lr", o.lr, o.lr is None or o.lr > 0, "> 0"),
            ("weight_decay", o.weight_decay, o.weight_decay >= 0, ">= 0"),
            ("momentum", o.momentum, 0 <= o.momentum < 1, "in [0, 1)"),
            ("warmup_epochs", o.warmup_epochs, o.warmup_epochs >= 0, ">= 0"),
            ("step_size", o.step_size, o.step_size >= 0, ">= 0"),
            ("gamma", o.gamma, 0 < o.gamma <= 1, "in (0, 1]"),
            ("val_split", d.val_split, 0 < d.val_split < 1, "in (0, 1)"),
            ("image_size", d.image_size, d.image_size is None or d.image_size >= 4, ">= 4"),
            ("channels", d.channels, d.channels in (None, 1, 3), "1 or 3"),
            ("workers", d.workers, d.workers >= 0, ">= 0"),
            ("memory_budget", d.memory_budget, 0 < d.memory_budget <= 1, "in (0, 1]"),
            ("threads", t.threads, t.threads is None or t.threads >= 1, ">= 1"),
            ("head_hidden", self.model.head_hidden, self.model.head_hidden >= 1, ">= 1"),
            ("head_dropout", self.model.head_dropout, 0 <= self.model.head_dropout < 1, "in [0, 1)"),
            ("backbone_lr_scale", o.backbone_lr_scale, o.backbone_lr_scale >= 0, ">= 0"),
            ("head_epochs", t.head_epochs, t.head_epochs is None or t.head_epochs >= 0, ">= 0"),
            ("finetune_epochs", t.finetune_epochs, t.finetune_epochs is None or t.finetune_epochs >= 1, ">= 1"),
        ]:
            if not ok:
                raise DaxiaoError(f"{what} must be {rule} (received {value}).")
        check_choice("optimizer", o.optimizer, OPTIMIZERS)
        check_choice("schedule", o.schedule, SCHEDULES)
        check_choice("precision", t.precision, PRECISIONS)
        if not re.fullmatch(DEVICE_RULE, t.device):
            raise DaxiaoError(f"device must be auto, cpu, cuda, cuda:N or mps (received {t.device!r}).")
        check_choice("tta", t.tta, TTA)
        if self.recipe is not None:
            check_choice("recipe", self.recipe, RECIPES)
        check_choice("resize", d.resize, ("squash", "crop", "pad"))
        check_choice("feature_cache", t.feature_cache, ("memory", "disk", "off"))
        check_choice("data_cache", d.data_cache, ("auto", "memory", "disk", "off"))
        if self.model.head is not None:
            check_choice("head", self.model.head, ("article", "linear"))
        if self.model.unfreeze is not None and not re.fullmatch(r"all|last-[1-9]\d*", self.model.unfreeze):
            raise DaxiaoError(f"unfreeze must be all or last-N with N >= 1 blocks, e.g. last-2 "
                              f"(received {self.model.unfreeze!r}).")
        parse_loss(t.loss)
        parse_augment(d.augment)
        return self


def _flatten(d: dict) -> dict:
    """Nested or flat YAML -> {field_name: value}. `model: seed-cnn` (a string) means model.name."""
    flat = {}
    for k, v in (d or {}).items():
        k = str(k).replace("-", "_")
        if k in _SECTIONS and isinstance(v, dict):
            for kk, vv in v.items():
                flat[_section_key(k, str(kk).replace("-", "_"))] = vv
        else:  # flat: a flag name (`model: seed-cnn` is model.name)
            flat[k] = v
    return flat


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig}


def _section_key(section: str, key: str) -> str:
    if key not in {f.name for f in dataclasses.fields(_SECTIONS[section])}:
        valid = [f.name for f in dataclasses.fields(_SECTIONS[section])]
        raise DaxiaoError(f"Unknown config key {section}.{key}.{did_you_mean(key, valid)} "
                          f"Valid keys in {section}: {', '.join(valid)}.")
    return f"{section}.{key}"


def _all_fields() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """{key: (section or None, field)} for every settable field; keys are unique across sections."""
    out: dict[str, tuple[str | None, dataclasses.Field]] = {}
    for section, cls in _SECTIONS.items():
        for f in dataclasses.fields(cls):
            out[f"{section}.{f.name}"] = (section, f)
            out.setdefault(f.metadata.get("flag", f.name), (section, f))
    for f in dataclasses.fields(RunConfig):
        if f.name not in _SECTIONS:
            out[f.name] = (None, f)
    return out


def _coerce(key: str, value, hint) -> object:
    """Check/convert `value` against the field's type hint (int, float, str, bool, or Optional of them)."""
    args = typing.get_args(hint)
    optional = type(None) in args or hint is types.NoneType
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise DaxiaoError(f"{key} cannot be empty.")
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number", bool: "true or false"}.get(base, "a string")
        raise DaxiaoError(f"{key} must be {kind} (received {value!r}).") from None


_HINTS = {cls: typing.get_type_hints(cls) for cls in (*_SECTIONS.values(), RunConfig)}


def apply_overrides(cfg: RunConfig, overrides: dict) -> RunConfig:
    """Set `overrides` ({'epochs': 5} or {'train.epochs': 5}) on `cfg`; unknown keys raise with suggestions."""
    fields = _all_fields()
    for key, value in overrides.items():
        if key not in fields:
            raise DaxiaoError(f"Unknown config key {key!r}.{did_you_mean(key, [k for k in fields if '.' not in k])}")
        section, f = fields[key]
        target = getattr(cfg, section) if section else cfg
        setattr(target, f.name, _coerce(key, value, _HINTS[type(target)][f.name]))
        explicit(cfg).add(f"{section}.{f.name}" if section else f.name)
    return cfg


def explicit(cfg: RunConfig) -> set[str]:
    """The settings someone chose (a recipe, a YAML file, a flag, an override), as "section.field" keys; the
    rest are still the dataclass defaults, which a model's own defaults may replace (`daxiao.models.registry`).
    Kept beside the fields, not in them, so config.yaml holds settings only."""
    if "_explicit" not in vars(cfg):
        cfg._explicit = set()  # type: ignore[attr-defined]
    return cfg._explicit  # type: ignore[attr-defined]


def apply_defaults(cfg: RunConfig, defaults: dict) -> list[str]:
    """Set each of `defaults` ({"epochs": 20, "lr": 3e-3}) that nobody chose explicitly; returns the keys set.
    They stay unmarked, so a later layer of defaults may still replace them."""
    fields, done = _all_fields(), []
    for key, value in defaults.items():
        section, f = fields[key]
        if (f"{section}.{f.name}" if section else f.name) in explicit(cfg):
            continue
        target = getattr(cfg, section) if section else cfg
        setattr(target, f.name, _coerce(key, value, _HINTS[type(target)][f.name]))
        done.append(key)
    return done


def load_yaml(path: str | Path) -> RunConfig:
    return RunConfig.from_dict(_read_yaml(path))


def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DaxiaoError(f"No such config file: {p}.")
    try:
        d = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DaxiaoError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if d is None:  # never "all defaults": an empty file is a mistake or a write cut off, not a request
        raise DaxiaoError(f"{p} is empty; it holds no settings. Pass a YAML file of settings (a run's config.yaml "
                          "is one).")
    if not isinstance(d, dict):
        raise DaxiaoError(f"{p} must hold a mapping of settings (received {type(d).__name__}).")
    return d


def save_yaml(cfg: RunConfig, path: str | Path) -> None:
    """Written atomically (temporary file, fsync, rename): a reader sees the old file or the whole new one."""
    atomic_write(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ---- CLI flags -----------------------------------------------------------------------------------
def add_config_flags(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(_SECTIONS)) -> None:
    """One flag per field of the given sections (and the run-level fields), all defaulting to None,
    so that only flags the user typed override the YAML file."""
    for key, (section, f) in _all_fields().items():
        if "." in key or (section is not None and section not in sections):
            continue
        flag = "--" + key.replace("_", "-")
        hint = _HINTS[_SECTIONS[section] if section else RunConfig][f.name]
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if dataclasses.is_dataclass(base):
            continue
        kw: dict = {"dest": key, "default": None}
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = f.name.upper()
        parser.add_argument(flag, **kw)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """defaults < --recipe < --config YAML < flags typed on the command line. (A model's own defaults, from
    the registry, fill in what none of these set; `daxiao.training.runs` applies them.)"""
    fields = _all_fields()
    typed = {k: v for k, v in vars(args).items() if k in fields and "." not in k and v is not None}
    d = _read_yaml(args.config) if getattr(args, "config", None) else {}
    name = typed.get("recipe") or _flatten(d).get("recipe")
    cfg = apply_recipe(RunConfig(), name) if name else RunConfig()
    apply_overrides(cfg, _flatten(d))
    return apply_overrides(cfg, typed)


def apply_recipe(cfg: RunConfig, name: str) -> RunConfig:
    """The settings of recipe `name` (daxiao.config.recipes) on `cfg`, and cfg.recipe = name."""
    check_choice("recipe", name, RECIPES)
    return apply_overrides(cfg, {**RECIPES[name], "recipe": name})


def setting_types() -> dict[str, object]:
    """{flag key (with '_'): type hint} of every scalar setting: the names YAML files, flags and
    search spaces may use."""
    out: dict[str, object] = {}
    for key, (section, f) in _all_fields().items():
        hint = _HINTS[_SECTIONS[section] if section else RunConfig][f.name]
        if "." not in key and not dataclasses.is_dataclass(hint):
            out[key] = hint
    return out

