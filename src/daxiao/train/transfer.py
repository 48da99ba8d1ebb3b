"""Transfer learning, the seed article's 转移学习 recipe and what comes after it.

    ImageNet backbone (frozen) -> GlobalAveragePooling -> Dense(1024, relu) -> Dense(classes, softmax)

`TransferModel` puts a new head on any zoo model's pooled features (timm's ``forward_head(pre_logits=True)``,
which is the global average pool). Training runs in up to two stages, each one `fit`:

    head stage       base frozen, BatchNorm in inference mode (as Keras' trainable=False), --head-epochs;
                     with no augmentation the base's features are computed once (the feature cache)
    fine-tune stage  --unfreeze all|last-N: the base's last N blocks train too, at lr x --backbone-lr-scale,
                     BatchNorm statistics still frozen (--freeze-bn), --finetune-epochs

Cached features are fed to the same `fit`: a TransferModel given a (B, features) tensor runs only its head,
so the run folder still holds the whole model (backbone and head) for `evaluate` and `predict`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import nn

from .config import DataConfig, RunConfig
from .data import DataBundle, Split, TensorSplit, make_loader
from .data.preprocess import Preprocess
from .errors import DaxiaoError
from .trainer import console, fit, match_model_to_data, resolve_device

HEAD_ARGS = ("head", "head_hidden", "head_dropout")  # create_model keywords that build a TransferModel


# ---- the model -------------------------------------------------------------------------------------------
def make_head(kind: str, in_features: int, num_classes: int, hidden: int = 1024, dropout: float = 0.0) -> nn.Module:
    """The article's head, Dense(hidden, relu) -> Dropout -> Dense(classes), or a linear probe; the pooling
    before it is the backbone's own global average pool. Softmax lives in the loss, as elsewhere."""
    if num_classes == 0:
        return nn.Identity()
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hidden, num_classes))


class TransferModel(nn.Module):
    """A backbone's pooled features followed by a new head, behind the zoo's interface.

    `forward` takes images, or (B, num_features) features already computed by `features` (the cache).
    Modules listed in `frozen` stay in eval mode when the model trains: frozen layers run in inference
    mode, so BatchNorm neither updates its statistics nor normalizes with batch statistics.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, head: str = "article", head_hidden: int = 1024,
                 head_dropout: float = 0.0):
        super().__init__()
        backbone.reset_classifier(0)  # the backbone now ends at its pooled features
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.head_kind, self.head_hidden, self.head_dropout = head, head_hidden, head_dropout
        self.reset_classifier(num_classes)
        self.pretrained_cfg = backbone.pretrained_cfg
        self.frozen: list[nn.Module] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> pooled backbone features (B, num_features): what the feature cache stores."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.backbone.forward_head(x, pre_logits=True)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x if x.ndim == 2 else self.features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def backbone_parameters(self):
        """The pretrained part: `build_optimizer` gives it lr x backbone_lr_scale (discriminative rates)."""
        return self.backbone.parameters()

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = make_head(self.head_kind, self.num_features, num_classes, self.head_hidden, self.head_dropout)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        for m in self.frozen:
            m.eval()
        return self


def with_head(model: nn.Module, num_classes: int | None = None, head: str = "article", head_hidden: int = 1024,
              head_dropout: float = 0.0) -> TransferModel:
    """`model` with its classifier replaced by `head` (see `make_head`); create_model calls this for ``head=``."""
    n = model.num_classes if num_classes is None else num_classes
    return TransferModel(model, n, head, head_hidden, head_dropout)


def resolve_head(m) -> str | None:
    """The head a model config asks for: --head, else the article's when the base is frozen at first."""
    return m.head or ("article" if m.freeze_base or m.unfreeze else None)


def head_kwargs(m) -> dict:
    """create_model keywords for the head of model config `m` (none: keep the model's own classifier)."""
    head = resolve_head(m)
    return {"head": head, "head_hidden": m.head_hidden, "head_dropout": m.head_dropout} if head else {}


# ---- freezing and unfreezing -----------------------------------------------------------------------------
def freeze_base(model: TransferModel) -> None:
    """Only the head trains; the whole backbone runs in inference mode."""
    model.backbone.requires_grad_(False)
    model.frozen = [model.backbone]


def backbone_blocks(backbone: nn.Module) -> list[list[str]]:
    """The backbone's parameter names grouped into blocks, input to output: timm's own grouping (each
    MBConv / residual block; the stem first, the final conv with the last block), else top-level children."""
    if hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters

        return list(group_parameters(backbone, backbone.group_matcher(coarse=False)).values())
    groups: dict[str, list[str]] = {}
    for name, _ in backbone.named_parameters():
        groups.setdefault(name.split(".")[0], []).append(name)
    return list(groups.values())


def unfreeze(model: TransferModel, spec: str, freeze_bn: bool = True) -> int:
    """Make the whole backbone ("all") or its last N blocks ("last-N") trainable again.

    BatchNorm layers stay in inference mode where they are still frozen, and everywhere with `freeze_bn`:
    a fine-tuning batch of a few images would otherwise overwrite ImageNet's statistics.

    Returns:
        The number of backbone parameters that now train.
    """
    blocks = backbone_blocks(model.backbone)
    n = len(blocks) if spec == "all" else int(spec.split("-")[1])
    if n > len(blocks):
        raise DaxiaoError(f"--unfreeze {spec}: the backbone has only {len(blocks)} blocks; use last-{len(blocks)} "
                          "or all.")
    names = {name for block in blocks[-n:] for name in block}
    params = dict(model.backbone.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in names)
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.frozen = [m for m in norms if freeze_bn or not any(p.requires_grad for p in m.parameters())]
    return sum(params[name].numel() for name in names)


# ---- the feature cache -----------------------------------------------------------------------------------
_MEMORY: OrderedDict[str, torch.Tensor] = OrderedDict()  # key -> features, most recent last
MEMORY_ENTRIES = 16  # a few data sets x splits: features are small (N x 1280 floats)


def cache_key(model: TransferModel, split: Split, pre: Preprocess, bf16: bool) -> str:
    """Changes whenever the features would: the images (content, or file paths, sizes and times), the
    backbone (name, arguments, every weight and BatchNorm statistic), the preprocessing and the precision."""
    h = hashlib.blake2b(digest_size=16)
    desc = {"model": getattr(model, "daxiao_name", type(model.backbone).__name__), "bf16": bf16,
            "args": {k: v for k, v in getattr(model, "daxiao_args", {}).items() if k not in HEAD_ARGS},
            "preprocess": pre.to_dict(), "format": 1}
    h.update(json.dumps(desc, sort_keys=True, default=str).encode())
    for t in model.backbone.state_dict().values():
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    if isinstance(split, TensorSplit):
        images = split.images
        if images.ndim == 4 and images.shape[1] == 3 and images.stride(1) == 0:  # grey expanded as a view
            images = images[:, :1]
        h.update(images.contiguous().numpy())
    else:
        for p in split.files.paths:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@torch.no_grad()
def extract_features(model: TransferModel, split: Split, pre: Preprocess, batch_size: int = 256, workers: int = 2,
                     bf16: bool = False, desc: str = "features", verbose: bool = True) -> torch.Tensor:
    """Pooled backbone features of every image in `split`, in order, as float32 (N, num_features)."""
    device = next(model.parameters()).device
    model.eval()
    loader = make_loader(split, batch_size, pre, workers=workers)
    out = []
    progress = _progress() if verbose else None
    with progress or nullcontext():
        task = progress.add_task(desc, total=len(loader)) if progress else None
        for images, _ in loader:
            images = images.to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out.append(model.features(images).float().cpu())
            if progress:
                progress.advance(task)
    feats = torch.cat(out) if out else torch.empty(0, model.num_features)
    if len(feats) != len(split):
        raise DaxiaoError(f"{desc}: {len(split) - len(feats)} images could not be read while computing features.")
    return feats


def cached_features(model: TransferModel, split: Split, pre: Preprocess, cache: str = "memory",
                    cache_dir: str | Path | None = None, bf16: bool = False, batch_size: int = 256, workers: int = 2,
                    desc: str = "features", verbose: bool = True) -> torch.Tensor:
    """`extract_features`, computed once per key and kept in memory or in `cache_dir` (safetensors)."""
    folder = writable_cache_dir(cache_dir) if cache == "disk" else None  # checked first: fail before any work
    key = cache_key(model, split, pre, bf16)
    if key in _MEMORY:
        _MEMORY.move_to_end(key)
        return _MEMORY[key]
    path = None
    if folder is not None:
        path = folder / f"{key}.safetensors"
        if path.is_file():
            return _remember(key, load_file(str(path))["features"])
    feats = extract_features(model, split, pre, batch_size, workers, bf16, desc, verbose)
    if path is not None:
        tmp = path.with_name(path.name + ".tmp")  # written beside and renamed: never half a file
        try:
            save_file({"features": feats}, str(tmp), metadata={"daxiao": json.dumps({"n": len(feats)})})
            os.replace(tmp, path)
        except OSError as e:  # a read-only mount, a full disk
            raise DaxiaoError(f"Cannot write to the feature cache {path.parent} ({e.strerror}); pass --cache-dir "
                              "DIR somewhere writable, or --feature-cache memory.") from None
    return _remember(key, feats)


def writable_cache_dir(cache_dir: str | Path | None) -> Path:
    folder = Path(cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "daxiao" / "features")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DaxiaoError(f"Cannot create the feature cache directory {folder} ({e.strerror}); pass --cache-dir DIR "
                          "somewhere writable, or --feature-cache memory.") from None
    if not os.access(folder, os.W_OK):
        raise DaxiaoError(f"The feature cache directory {folder} is read-only; pass --cache-dir DIR somewhere "
                          "writable, or --feature-cache memory.")
    return folder


def clear_memory_cache() -> None:
    """Forget the features kept in memory (benchmarks time each run cold)."""
    _MEMORY.clear()


def _remember(key: str, feats: torch.Tensor) -> torch.Tensor:
    _MEMORY[key] = feats
    while len(_MEMORY) > MEMORY_ENTRIES:
        _MEMORY.popitem(last=False)
    return feats


def feature_bundle(model: TransferModel, bundle: DataBundle, cfg: RunConfig, verbose: bool = True) -> DataBundle:
    """`bundle` with its train and val images replaced by the frozen base's features (the test split is
    left out: training never reads it). The preprocessing stays the images' own, saved with the model."""
    t = cfg.train
    bundle = match_model_to_data(model, bundle)  # the weights' normalization, as fit will train the head with
    model.to(resolve_device()).to(memory_format=torch.channels_last)
    bf16 = extraction_bf16(t.precision, model, bundle, cfg.data.workers)
    t0 = time.perf_counter()

    def feats(name: str) -> TensorSplit:
        split = bundle.split(name)
        f = cached_features(model, split, bundle.preprocess, t.feature_cache, t.cache_dir, bf16,
                            max(256, t.batch_size), cfg.data.workers, f"{name} features", verbose)
        return TensorSplit(f, split.targets)

    out = DataBundle(feats("train"), feats("val"), None, bundle.classes, bundle.preprocess,
                     f"{bundle.source} (cached {model.num_features}-d features)", bundle.skipped)
    if verbose:
        console.print(f"features of {len(out.train) + len(out.val)} images ready in {time.perf_counter() - t0:.1f}s")
    return out


def extraction_bf16(precision: str, model: TransferModel, bundle: DataBundle, workers: int) -> bool:
    """bf16 or fp32 for extraction, by the rule `fit` uses: auto times both on a real batch (forward only)."""
    if precision != "auto":
        return precision == "bf16"
    from .trainer import bf16_supported

    device = next(model.parameters()).device
    if not bf16_supported(device):
        return False
    images, _ = next(iter(make_loader(bundle.train, 64, bundle.preprocess, workers=workers)))
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    model.eval()

    @torch.no_grad()
    def seconds(bf16: bool) -> float:
        times = []
        for _ in range(3):  # the first call builds oneDNN kernels: not counted
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                model.features(images)
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    return seconds(True) < 0.85 * seconds(False)


def can_cache(cfg: RunConfig) -> bool:
    """Features are fixed only when every epoch sees the same pixels: no per-sample augmentation."""
    return cfg.train.feature_cache != "off" and cfg.data.augment.strip() in ("", "none")


# ---- the stages -------------------------------------------------------------------------------------------
def train_transfer(model: TransferModel, bundle: DataBundle, cfg: RunConfig, run_dir: str | Path | None = None,
                   verbose: bool = True) -> dict:
    """The head stage, then (with --unfreeze) the fine-tuning stage; each stage is one `fit`.

    With both stages the head stage writes ``RUN/head/`` and fine-tuning writes ``RUN/``; with the head
    stage alone it writes ``RUN/``. Either way ``RUN/`` ends holding the whole model.

    Returns:
        The last stage's `fit` result; with two stages it carries the first's under ``"head_stage"``.
    """
    if not isinstance(model, TransferModel):
        raise DaxiaoError("Transfer training needs a model with a new head: create it with head='article' "
                          "or head='linear' (the CLI does so for --freeze-base and --unfreeze).")
    cfg = copy.deepcopy(cfg)
    t, m = cfg.train, cfg.model
    t.head_epochs = t.epochs if t.head_epochs is None else t.head_epochs  # explicit in config.yaml: repeatable
    t.finetune_epochs = t.epochs if t.finetune_epochs is None else t.finetune_epochs
    if m.unfreeze and cfg.resume:
        raise DaxiaoError("--resume does not continue a two-stage (--unfreeze) run yet; start a new run.")
    if not m.unfreeze and t.head_epochs == 0:
        raise DaxiaoError("--head-epochs 0 trains nothing without --unfreeze; give it at least 1.")
    run = Path(run_dir) if run_dir else None
    result: dict = {}
    if t.head_epochs:
        freeze_base(model)
        data = feature_bundle(model, bundle, cfg, verbose) if can_cache(cfg) else bundle
        head_run = (run / "head" if m.unfreeze else run) if run else None
        result = fit(model, data, cfg, run_dir=head_run, verbose=verbose, epochs=t.head_epochs)
    if m.unfreeze:
        n = unfreeze(model, m.unfreeze, m.freeze_bn)
        if verbose:
            console.print(f"fine-tuning: {n:,} backbone parameters unfrozen ({m.unfreeze}) at lr x "
                          f"{cfg.optim.backbone_lr_scale}, BatchNorm statistics {'frozen' if m.freeze_bn else 'live'}")
        head_stage = result
        result = fit(model, bundle, cfg, run_dir=run, verbose=verbose, epochs=t.finetune_epochs)
        result["head_stage"] = head_stage
    return result


# ---- embed: features for use elsewhere --------------------------------------------------------------------
def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logit features of any zoo model (for a TransferModel: its backbone's, before the head)."""
    if isinstance(model, TransferModel):
        return model.features(x)
    return model.forward_head(model.forward_features(x), pre_logits=True)


def embed(source: str, data: str | None, out: str | Path, split: str = "all", image_size: int | None = None,
          data_dir: str | None = None, batch_size: int = 256, workers: int = 2, verbose: bool = True) -> dict:
    """Write pooled features of `data` as ``OUT.npy`` (float32, N x F), labels as ``OUT.labels.npy``
    (int64) and ``OUT.json`` (classes, item names, the rows of each split, model and preprocessing).

    Args:
        source: a run folder or daxiao weights file (its preprocessing is used), or a model name, which
            is built with its pretrained ImageNet weights at their input size (or `image_size`), RGB.
        data: built-in name, folder or CSV; None for a run means the data it was trained on.
        split: train, val, test or all (rows in that order).

    Example:
        >>> embed("efficientnet-lite0", "digits", "digits.npy", image_size=64)
    """
    import numpy as np

    from .data import load_data

    out = Path(out)
    if out.suffix != ".npy":
        raise DaxiaoError(f"--out must end in .npy (received {out.name}); labels and names are written beside it.")
    model, pre, data = _embed_model(source, data, image_size)
    if data is None:
        raise DaxiaoError(f"{source} is a model name: say which images to embed with --data.")
    bundle = load_data(DataConfig(data=data, data_dir=data_dir, workers=workers), 0, preprocess=pre)
    names = ("train", "val", "test") if split == "all" else (split,)
    names = tuple(n for n in names if getattr(bundle, n) is not None)
    model.to(resolve_device()).to(memory_format=torch.channels_last).eval()
    feats, labels, items, rows = [], [], [], {}
    extractor = _Extractor(model)
    for name in names:
        part = bundle.split(name)
        f = extract_features(extractor, part, pre, batch_size, workers, desc=f"{name} features", verbose=verbose)
        rows[name] = [sum(len(x) for x in feats), sum(len(x) for x in feats) + len(f)]
        feats.append(f)
        labels.append(part.targets)
        items += [f"{name}/{n}" for n in part.names()]
    out.parent.mkdir(parents=True, exist_ok=True)
    x = torch.cat(feats).numpy().astype(np.float32)
    np.save(out, x)
    np.save(out.with_suffix(".labels.npy"), torch.cat(labels).numpy().astype(np.int64))
    meta = {"source": str(source), "data": data, "rows": rows, "classes": bundle.classes, "items": items,
            "shape": list(x.shape), "preprocess": pre.to_dict()}
    out.with_suffix(".json").write_text(json.dumps(meta))
    return {"features": str(out), "labels": str(out.with_suffix(".labels.npy")), "json": str(out.with_suffix(".json")),
            "shape": list(x.shape), "rows": rows}


class _Extractor(nn.Module):
    """Gives any zoo model the `features` method that `extract_features` calls."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_features = model.num_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return pooled_features(self.model, x)


def _embed_model(source: str, data: str | None, image_size: int | None) -> tuple[nn.Module, Preprocess, str | None]:
    from .checkpoint import load_model
    from .models.pretrained import weights_input_size
    from .registry import create_model

    if Path(source).exists():
        model, meta = load_model(source)
        pre = Preprocess(**meta["preprocess"])
        return model, pre, data or meta.get("config", {}).get("data", {}).get("data")
    size = image_size or weights_input_size(source)
    model = create_model(source, pretrained=True, num_classes=0, in_chans=3, input_size=size)
    cfg = model.pretrained_cfg
    pre = Preprocess(size, 3, "squash", cfg.get("mean") or (0.5,) * 3, cfg.get("std") or (0.5,) * 3)
    return model, pre, data


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True)
