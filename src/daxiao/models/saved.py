"""Saved models: safetensors with their description inside (and beside, as JSON), never pickle.

A weights file carries, in its safetensors metadata under ``daxiao``, everything needed to rebuild and
use the model: registry name and arguments, class names, preprocessing. A copied ``best.safetensors``
therefore works on its own. `load_run` is the one way back from a file or run folder to a model: every
reader (evaluate, predict, profile, compare, distill, embed, export, serve) goes through it. Resumable
training state (optimizer, scheduler, RNG) is the training layer's (`daxiao.training.checkpoint`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from ..config import RunConfig
from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from ..files import atomic_write, atomic_write_json
from .factory import check_args, create_model, model_info

FORMAT = "daxiao/1"

# Bounds on what a weights file may ask for: its description is data a stranger may have written, so
# nothing in it is used before it is checked (see `check_meta`). Raise them here if a real model needs more.
MAX_META_BYTES = 8 * 2**20     # the JSON description inside the file
MAX_IMAGE_SIZE = 2048          # pixels per side: a batch of 64 RGB float images at 2048 px is 3 GB already
MAX_CLASSES = 100_000
MAX_CLASS_NAME = 256           # characters
MAX_WIDTH = 65_536             # any width option (filters, hidden, head_hidden)
NAME_RE = re.compile(r"(timm:)?[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
# Keys a weights description may hold besides the required ones, and their types. Anything else is refused.
REQUIRED = {"format": str, "model": str, "model_args": dict, "classes": list, "preprocess": dict}
OPTIONAL = {"epoch": int, "val_acc": (float, int, type(None)), "config": dict}


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, meta: dict) -> None:
    """Tensors plus `meta` (under ``daxiao``) as one safetensors file, written atomically."""
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata={"daxiao": json.dumps(meta)})
    atomic_write(path, data)


def save_weights(model: nn.Module, path: str | Path, meta: dict) -> None:
    """Save `model`'s weights with `meta` (see `model_meta`) inside, and `meta` as `<path>.json` beside."""
    path = Path(path)
    state = model.state_dict()
    save_tensors(state, path, {"format": FORMAT, **meta})
    atomic_write_json(path.with_suffix(".json"), {"format": FORMAT, **meta})


def model_meta(model: nn.Module, classes: list[str], preprocess: Preprocess, **extra) -> dict:
    """What rebuilding and using `model` needs: registry name and arguments, classes, preprocessing."""
    if not hasattr(model, "daxiao_name"):
        raise DaxiaoError("Only models built by daxiao.create_model can be saved with their description; "
                          "pass run_dir=None to fit() to train another model without writing a run folder.")
    args = {**getattr(model, "daxiao_args", {}), "num_classes": model.num_classes}
    return {"model": model.daxiao_name, "model_args": args, "classes": list(classes),
            "preprocess": preprocess.to_dict(), **extra}


def read_meta(path: str | Path) -> dict:
    """The daxiao description stored in a weights file, checked against the schema (`check_meta`); one
    clear line naming the key and the file for anything else."""
    path = Path(path)
    meta = read_description(path)
    check_meta(meta, path)
    return meta


def read_description(path: str | Path) -> dict:
    """The raw JSON object under ``daxiao`` in a safetensors file (weights or training state), size-bounded
    but not yet checked against any schema."""
    path = Path(path)
    if not path.is_file():
        raise DaxiaoError(f"No such weights file: {path}.")
    if path.suffix != ".safetensors":
        raise DaxiaoError(f"{path} is not a .safetensors file; daxiao weights are <run>/best.safetensors.")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise DaxiaoError(f"{path} is corrupt or not a safetensors file ({str(e)[:80]}).") from None
    if "daxiao" not in meta:
        raise DaxiaoError(f"{path} is a safetensors file but not daxiao weights (no daxiao description inside); "
                          "use weights written by `daxiao train`.")
    raw = meta["daxiao"]
    if len(raw) > MAX_META_BYTES:
        raise DaxiaoError(f"{path}: its daxiao description is {len(raw):,} bytes (the limit is {MAX_META_BYTES:,}); "
                          "it was not written by daxiao.")
    try:
        desc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise DaxiaoError(f"{path}: its daxiao description is not valid JSON ({str(e)[:80]}).") from None
    if not isinstance(desc, dict):
        raise DaxiaoError(f"{path}: its daxiao description must be a JSON object (received {type(desc).__name__}).")
    return desc


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number daxiao writes")


def check_meta(meta: dict, path: str | Path) -> None:
    """Refuse a weights description that daxiao would not have written: unknown or missing keys, wrong
    types, a model outside the zoo, options its registry entry does not declare, sizes past the bounds
    above. Raises one DaxiaoError naming the key and `path`; builds, loads and fetches nothing."""
    where = f"{path}: "

    def bad(key: str, why: str) -> DaxiaoError:
        return DaxiaoError(f"{where}weights metadata {key} {why}; the file was not written by daxiao as it is "
                           "(refused, nothing loaded).")

    for key, want in REQUIRED.items():
        if key not in meta:
            raise bad(key, "is missing")
        if not isinstance(meta[key], want):
            raise bad(key, f"must be a {want.__name__} (received {type(meta[key]).__name__})")
    for key, value in meta.items():
        if key in REQUIRED:
            continue
        if key not in OPTIONAL:
            raise bad(repr(key), f"is not a key daxiao writes (allowed: {', '.join([*REQUIRED, *OPTIONAL])})")
        if not isinstance(value, OPTIONAL[key]) or isinstance(value, bool):
            raise bad(key, f"has the wrong type ({type(value).__name__})")
    if meta["format"] != FORMAT:
        raise bad("format", f"is {str(meta['format'])[:40]!r}, not {FORMAT!r}")
    name = meta["model"]
    if not NAME_RE.fullmatch(name):
        raise bad("model", f"{name[:60]!r} is not a model name")
    if name.startswith("timm:"):
        import timm

        if not timm.is_model(name[5:]):  # hub references (hf-hub:...) are not timm model names either
            raise bad("model", f"{name!r} names no timm model")
    try:
        info = model_info(name)
    except DaxiaoError:
        raise bad("model", f"{name!r} is not in the zoo (see `daxiao models`)") from None
    args = meta["model_args"]
    check_args(info, args, where)
    _check_bounds(args, bad)
    classes = meta["classes"]
    if not 1 <= len(classes) <= MAX_CLASSES or not all(isinstance(c, str) and len(c) <= MAX_CLASS_NAME
                                                        for c in classes):
        raise bad("classes", f"must be 1 to {MAX_CLASSES:,} names of at most {MAX_CLASS_NAME} characters")
    if args.get("num_classes", len(classes)) != len(classes):
        raise bad("model_args.num_classes", f"is {args.get('num_classes')} but the file lists {len(classes)} classes")
    _check_preprocess(meta["preprocess"], args, bad)
    if "config" in meta:
        try:
            RunConfig.from_dict(meta["config"])
        except DaxiaoError as e:
            raise bad("config", f"is not a run config ({e})") from None
        except (TypeError, AttributeError, ValueError):
            raise bad("config", "is not a run config") from None


def _check_bounds(args: dict, bad) -> None:
    for key, low, high in (("num_classes", 0, MAX_CLASSES), ("in_chans", 1, 4), ("input_size", 1, MAX_IMAGE_SIZE),
                           ("filters", 1, MAX_WIDTH), ("hidden", 1, MAX_WIDTH), ("head_hidden", 1, MAX_WIDTH),
                           ("alpha", 1e-3, 4), ("drop_rate", 0, 1), ("head_dropout", 0, 1)):
        v = args.get(key)
        if v is not None and not (low <= v <= high and math.isfinite(v)):
            raise bad(f"model_args.{key}", f"is {v} (allowed {low} to {high})")
    if args.get("activation") not in (None, "relu", "relu6", "tanh", "gelu", "silu"):
        raise bad("model_args.activation", f"{str(args['activation'])[:40]!r} is not an activation daxiao has")
    if args.get("head") not in (None, "article", "linear"):
        raise bad("model_args.head", f"{str(args['head'])[:40]!r} is not a head daxiao has")


def _check_preprocess(p: dict, args: dict, bad) -> None:
    fields = {"image_size": int, "channels": int, "resize": str, "mean": list, "std": list}
    if set(p) != set(fields):
        raise bad("preprocess", f"must hold exactly {', '.join(fields)} (received {', '.join(map(repr, p))[:80]})")
    for key, want in fields.items():
        if not isinstance(p[key], want) or isinstance(p[key], bool):
            raise bad(f"preprocess.{key}", f"must be a {want.__name__}")
    if not 1 <= p["image_size"] <= MAX_IMAGE_SIZE:
        raise bad("preprocess.image_size", f"is {p['image_size']} (allowed 1 to {MAX_IMAGE_SIZE} pixels per side)")
    if p["channels"] not in (1, 3):
        raise bad("preprocess.channels", f"is {p['channels']} (allowed 1 or 3)")
    if p["resize"] not in ("squash", "crop", "pad"):
        raise bad("preprocess.resize", f"{p['resize'][:40]!r} is not squash, crop or pad")
    for key in ("mean", "std"):
        v = p[key]
        if len(v) not in (1, p["channels"]) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                         and math.isfinite(x) for x in v):
            raise bad(f"preprocess.{key}", f"must be {p['channels']} finite numbers")
    if any(x <= 0 for x in p["std"]):
        raise bad("preprocess.std", "must be positive")
    for key, other in (("input_size", "image_size"), ("in_chans", "channels")):
        if key in args and args[key] != p[other]:
            raise bad(f"model_args.{key}", f"is {args[key]} but preprocess.{other} is {p[other]}")


@dataclass
class LoadedRun:
    """A trained model and everything needed to use it, read from one weights file."""

    model: nn.Module               # in eval mode, on the CPU
    preprocess: Preprocess         # exactly what training applied
    classes: list[str]
    meta: dict                     # the file's whole description (model, model_args, epoch, val_acc ...)
    path: Path                     # the weights file read
    config: RunConfig | None = field(default=None)  # the run's resolved config, where the file carries it

    @property
    def name(self) -> str:
        return self.meta["model"]

    @property
    def data(self) -> str | None:
        """The data the model was trained on, as the run's config names it."""
        return self.config.data.data if self.config else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        p = self.preprocess
        return (p.channels, p.image_size, p.image_size)


def load_run(path: str | Path) -> LoadedRun:
    """Rebuild the model in a daxiao weights file, or in a run folder's best (else last) weights.

    Example:
        >>> run = load_run("runs/seed-cnn-digits")
        >>> run.model(run.preprocess.normalize(images)).argmax(1)
    """
    path = resolve_weights(path)
    meta = read_meta(path)
    check_shapes(meta, path)
    model = create_model(meta["model"], pretrained=False, **meta["model_args"])
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, SafetensorError) as e:
        raise DaxiaoError(f"{path} does not match model {meta['model']!r}: {str(e).splitlines()[0][:160]}") from None
    config = RunConfig.from_dict(meta["config"]) if isinstance(meta.get("config"), dict) else None
    return LoadedRun(model.eval(), Preprocess(**meta["preprocess"]), list(meta["classes"]), meta, path, config)


def check_shapes(meta: dict, path: Path) -> None:
    """Build the described model on the meta device (no memory, no weights) and compare its tensors' names
    and shapes with the file's header, so a description that asks for a bigger model than the file holds
    is refused before anything real is allocated."""
    try:
        with torch.device("meta"):
            ghost = create_model(meta["model"], pretrained=False, **meta["model_args"])
        want = {k: tuple(v.shape) for k, v in ghost.state_dict().items()}
    except DaxiaoError as e:
        raise DaxiaoError(f"{path}: {e}") from None
    except Exception as e:  # a family that cannot be built on the meta device: the bounds checks still hold
        if isinstance(e, (MemoryError, RecursionError)):
            raise DaxiaoError(f"{path}: its model description is too large to build.") from None
        return
    with safe_open(str(path), "pt") as f:
        have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if want != have:
        diff = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
        raise DaxiaoError(f"{path}: its description ({meta['model']} {meta['model_args']}) does not match the tensors "
                          f"it holds (first difference: {diff[0]}); refused, nothing loaded.")


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, meta): `load_run` for callers that want the two parts."""
    run = load_run(path)
    return run.model, run.meta


def resolve_weights(path: str | Path) -> Path:
    """A run folder means its best.safetensors (else last.safetensors)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (p / name).is_file():
                return p / name
        raise DaxiaoError(f"{p} holds no best.safetensors or last.safetensors; is it a daxiao run folder?")
    if not p.exists():
        raise DaxiaoError(f"No such run folder or weights file: {p}.")
    return p
