"""Search spaces: `optimizer=adam,sgd lr=1e-4:1e-1:log` (or the same in YAML) -> checked parameters.

A parameter is any training setting (a `daxiao train` flag name, `batch_size` or `batch-size`) plus
`label_smoothing`, which sets `--loss label-smoothing=<value>`. Values are either choices (a list) or a
range ``low:high`` with an optional ``:log`` or ``:step`` (``8:64:8``); ranges of integer-valued settings
are sampled as integers. Everything is checked against the config before any trial runs.
"""

from __future__ import annotations

import copy
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import RunConfig, apply_overrides, setting_types
from ..errors import DaxiaoError, did_you_mean

# Where a study reads and writes, how fast it runs, or what cross-validation replaces: never searched.
NOT_SEARCHABLE = {"name", "project", "exist_ok", "resume", "data", "val", "data_dir", "workers", "threads", "seed",
                  "patience", "precision", "val_split", "weights", "feature_cache", "cache_dir",
                  "unfreeze", "head_epochs", "finetune_epochs"}  # tune trains one stage (see study.tune)
EXTRA = {"label_smoothing": float}  # searched as a number, applied as the loss "label-smoothing=<v>"


@dataclass(frozen=True)
class Param:
    name: str                       # the config key (flag name with '_')
    choices: tuple | None = None    # categorical, or None for a range
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def grid_values(self) -> list:
        """The values a grid visits: the choices, or every step of an integer or stepped range."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None and not self.integer or self.log:
            raise DaxiaoError(f"Grid search needs a list of values for {self.name} (e.g. {self.name}=1e-3,1e-2,1e-1), "
                              "or a stepped range low:high:step; or use --sampler random or tpe for ranges.")
        step = self.step or 1
        n = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        vals = [self.low + i * step for i in range(n)]
        return [int(v) for v in vals] if self.integer else vals


def searchable() -> dict[str, type]:
    """{name: type} of every parameter a space may name."""
    return {**{k: v for k, v in setting_types().items() if k not in NOT_SEARCHABLE}, **EXTRA}


def _scalar(text: str):
    """'10' -> 10, '1e-3' -> 0.001, 'true' -> True, else the stripped string. (Not YAML's rules: PyYAML
    reads '1e-3' as a string.)"""
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _yaml_scalar(value):
    """YAML reads 1e-4 as a string (it wants 1.0e-4): numbers written either way are numbers."""
    return _scalar(value) if isinstance(value, str) else value


def _is_int_type(hint) -> bool:
    return hint is int or int in typing.get_args(hint)


def parse_param(name: str, spec) -> Param:
    """One parameter from its CLI text (``adam,sgd`` / ``1e-4:1e-1:log``) or YAML value (list, or
    a mapping with low/high/log/step)."""
    key = name.strip().replace("-", "_")
    valid = searchable()
    if key not in valid:
        raise DaxiaoError(f"Unknown search parameter {name!r}.{did_you_mean(key, valid)} "
                          f"Searchable: {', '.join(sorted(valid))}.")
    integer = _is_int_type(valid[key])
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown or not {"low", "high"} <= set(spec):
            raise DaxiaoError(f"{key}: a range is a mapping with low and high (and optionally log, step); "
                              f"received {spec}.")
        low, high, step = (_yaml_scalar(spec.get(k)) for k in ("low", "high", "step"))
        return _range(key, low, high, bool(spec.get("log")), step, integer)
    if isinstance(spec, list | tuple):
        choices = [_yaml_scalar(c) for c in spec]
    else:
        text = str(spec).strip()
        if ":" in text and "," not in text and key not in ("augment", "loss"):
            parts = text.split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]):
                raise DaxiaoError(f"{key}={text}: a range is low:high, low:high:log or low:high:step.")
            low, high = _scalar(parts[0]), _scalar(parts[1])
            log = len(parts) == 3 and parts[2].strip().lower() == "log"
            step = _scalar(parts[2]) if len(parts) == 3 and not log else None
            return _range(key, low, high, log, step, integer)
        choices = [_scalar(c) for c in text.split(",")] if text else []
        choices = [c for c in choices if c != ""]
    if not choices:
        raise DaxiaoError(f"{key} has no values to try; give at least one, e.g. {key}=a,b.")
    if len(set(map(str, choices))) != len(choices):
        raise DaxiaoError(f"{key} lists a value twice: {choices}.")
    return Param(key, choices=tuple(choices))


def _range(key: str, low, high, log: bool, step, integer: bool) -> Param:
    for v in (low, high, step):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise DaxiaoError(f"{key}: range bounds must be numbers (received {low!r}:{high!r}).")
    if low > high:
        raise DaxiaoError(f"{key}: the range's low ({low}) is greater than its high ({high}); write {high}:{low}.")
    if log and low <= 0:
        raise DaxiaoError(f"{key}: a log range needs low > 0 (received {low}).")
    if step is not None and step <= 0:
        raise DaxiaoError(f"{key}: the step must be > 0 (received {step}).")
    integer = integer and float(low).is_integer() and float(high).is_integer() and (step is None or
                                                                                  float(step).is_integer())
    return Param(key, low=low, high=high, log=log, step=step, integer=integer)


def parse_space(items: list[str] | dict | str | Path) -> dict[str, Param]:
    """`--space` tokens (``name=values`` or a YAML file) or a mapping -> {name: Param}, in the given order."""
    if isinstance(items, str | Path):
        items = [str(items)]
    specs: dict = {}
    if isinstance(items, dict):
        specs = dict(items)
    else:
        for token in items:
            if "=" in token:
                k, v = token.split("=", 1)
                specs[k] = v
                continue
            path = Path(token)
            if not path.is_file():
                raise DaxiaoError(f"--space {token!r} is neither name=values (e.g. lr=1e-4:1e-1:log) nor a YAML file.")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise DaxiaoError(f"{path} must map parameter names to values or ranges.")
            specs.update(loaded)
    if not specs:
        raise DaxiaoError("The search space is empty; pass --space name=values ... (e.g. optimizer=adam,sgd).")
    return {p.name: p for p in (parse_param(k, v) for k, v in specs.items())}


def apply_params(base: RunConfig, params: dict) -> RunConfig:
    """A trial's config: `base` with the sampled values set (label_smoothing becomes the loss)."""
    cfg = copy.deepcopy(base)
    params = dict(params)
    if "label_smoothing" in params:
        eps = params.pop("label_smoothing")
        params["loss"] = f"label-smoothing={eps}" if eps else "cross-entropy"
    return apply_overrides(cfg, params)


def check_space(base: RunConfig, space: dict[str, Param]) -> None:
    """Every choice and both ends of every range must make a valid config: fail before any training."""
    for p in space.values():
        values = p.choices if p.choices is not None else (p.low, p.high)
        for v in values:
            try:
                apply_params(base, {p.name: v}).validate()
            except DaxiaoError as e:
                raise DaxiaoError(f"search space {p.name}={v}: {e}") from None
    if "model" in space:
        from ..models import model_info

        for name in space["model"].choices or ():
            model_info(str(name))  # unknown model names fail here, with suggestions


def grid_size(space: dict[str, Param]) -> int:
    return math.prod(len(p.grid_values()) for p in space.values())
