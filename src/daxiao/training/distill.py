"""`daxiao distill`: knowledge distillation from a trained big model into a small one (Hinton et al. 2015,
"Distilling the Knowledge in a Neural Network", https://arxiv.org/abs/1503.02531).

    loss = alpha * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - alpha) * CE(student, labels)

T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (the paper, section 2).

How it fits the one training loop: `fit` runs unchanged, with one callback, `Distillation`, whose
`on_train_loss` hook turns each training batch's usual loss into the loss above, with the teacher's
logits for exactly that batch's samples (`Batch.index`). Accuracy, progress, augmentation (Mixup's soft
labels too), schedules and checkpoints all behave as in `daxiao train`. Validation never calls the hook,
so the val loss is the student's own loss, comparable with a plain run's.

Teacher logits come from one of two places:
    cached       no augmentation and an in-memory data set: every epoch shows the teacher the same
                 pixels, so its logits for each training image are computed once, with its own
                 preprocessing (size, channels, normalization), and looked up by the batch's
                 `index` (which samples the batch holds)
    on the fly   otherwise (augmentation, image folders, or --no-teacher-cache): the teacher sees the
                 student's batch as it is after augmentation, converted to the teacher's channels, size and
                 normalization
The teacher is frozen (eval mode, no gradients) in both.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..config.augment import parse_augment
from ..console import console, escape, progress
from ..data import DataBundle, Split, load_data, make_loader, subset
from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from ..files import atomic_write_json, next_free
from ..models.saved import load_run
from .callbacks import Callback
from .distributed import device_for_rank
from .loop import evaluate
from .precision import resolve_device
from .runs import apply_model_defaults, data_config, default_name, train


class Distillation(Callback):
    """Adds the teacher's term to every training batch's loss (see the module docstring).

    Args:
        alpha, temperature: the soft term's weight and T; alpha 0 is exactly the plain loss (tested).
        cache: (N, classes) teacher logits of every training image, in split order; or None, with
        teacher: the frozen teacher (columns in the data's order) and convert: student batch -> teacher input.
    """

    def __init__(self, alpha: float, temperature: float, cache: torch.Tensor | None = None,
                 teacher: nn.Module | None = None, convert=None):
        self.alpha, self.temperature = alpha, temperature
        self.cache, self.teacher, self.convert = cache, teacher, convert

    def teacher_logits(self, batch) -> torch.Tensor:
        if self.cache is not None:
            return self.cache[batch.index.to(self.cache.device)].to(batch.inputs.device)
        with torch.inference_mode():
            x = self.convert(batch.inputs).contiguous(memory_format=torch.channels_last)
            return self.teacher(x).float().clone()  # clone: out of inference mode

    def on_train_loss(self, batch, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        if self.alpha == 0:
            return loss
        teacher = self.teacher_logits(batch)
        assert teacher.shape == logits.shape, f"teacher logits {tuple(teacher.shape)} vs student {tuple(logits.shape)}"
        return self.alpha * kd_term(logits, teacher, self.temperature) + (1 - self.alpha) * loss


def kd_term(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def input_converter(student: Preprocess, teacher: Preprocess):
    """Normalized student batch -> normalized teacher batch: undo the student's normalization, change
    channels (grey repeated, or ITU-R 601 luma) and size (bilinear), apply the teacher's normalization."""
    if (student.channels, student.image_size, student.mean, student.std) == (
            teacher.channels, teacher.image_size, teacher.mean, teacher.std):
        return lambda x: x

    def convert(x: torch.Tensor) -> torch.Tensor:
        s_mean, s_std = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in (student.mean, student.std))
        x = x * s_std + s_mean  # back to [0, 1]
        if teacher.channels != student.channels:
            luma = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
            x = x.expand(-1, 3, -1, -1) if teacher.channels == 3 else (x * luma).sum(1, keepdim=True)
        if teacher.image_size != student.image_size:
            x = F.interpolate(x, size=(teacher.image_size,) * 2, mode="bilinear", align_corners=False,
                              antialias=teacher.image_size < student.image_size)
        t_mean, t_std = (torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in (teacher.mean, teacher.std))
        return (x - t_mean) / t_std

    return convert


# ---- the teacher ------------------------------------------------------------------------------------------
def load_teacher(path: str | Path, classes: list[str], data: str) -> tuple[nn.Module, Preprocess, torch.Tensor]:
    """The frozen teacher, its preprocessing, and the index of each data class in its outputs; a teacher
    trained on other classes is refused with both lists named."""
    run = load_run(path)
    teacher, t_classes = run.model, run.classes
    if sorted(t_classes) != sorted(classes):
        raise DaxiaoError(f"The teacher {path} was trained on classes {_short(t_classes)} but --data {data} has "
                          f"classes {_short(classes)}; distill on the data the teacher knows.")
    for p in teacher.parameters():
        p.requires_grad_(False)
    order = torch.tensor([t_classes.index(c) for c in classes])  # teacher's columns in the data's class order
    return teacher.eval(), run.preprocess, order


def _short(classes: list[str]) -> str:
    return "[" + ", ".join(classes[:10]) + (f", ... ({len(classes)} in all)" if len(classes) > 10 else "") + "]"


def teacher_data(cfg: RunConfig, pre: Preprocess) -> DataBundle:
    """The student's data loaded again with the teacher's own preprocessing (size, channels, normalization)
    and split exactly as the student's: same settings, same seed."""
    return load_data(replace(cfg.data, augment="none"), cfg.train.seed, preprocess=pre, cache_dir=cfg.train.cache_dir)


@torch.inference_mode()
def teacher_logits(teacher: nn.Module, split: Split, pre: Preprocess, order: torch.Tensor,
                   workers: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """The teacher's logits (data's class order) for every image of `split`, in split order."""
    device = device or resolve_device()
    teacher.to(device).to(memory_format=torch.channels_last)
    out = []
    with progress("teacher logits", len(split), "images") as bar:
        for batch in make_loader(split, 256, pre, workers=workers):
            out.append(teacher(batch.to(device).inputs).float())
            bar.advance(len(batch))
    return torch.cat(out)[:, order]


def can_cache(cfg: RunConfig, bundle: DataBundle) -> bool:
    """Cached teacher logits are right only when every epoch shows the same pixels."""
    return parse_augment(cfg.data.augment).is_identity and bundle.in_memory


def distillation(teacher: nn.Module, bundle: DataBundle, t_bundle: DataBundle, order: torch.Tensor, alpha: float,
                 temperature: float, cache: bool = True, device: torch.device | None = None) -> Distillation:
    """The callback for this student's data: cached teacher logits when the data allows, else on the fly."""
    device = device or resolve_device()
    if cache and bundle.in_memory and t_bundle.in_memory:
        # the cache is indexed by the student's sample numbers: both splits must hold the same images
        assert torch.equal(t_bundle.train.targets, bundle.train.targets), "teacher and student splits differ"
        logits = teacher_logits(teacher, t_bundle.train, t_bundle.preprocess, order, device=device)
        return Distillation(alpha, temperature, cache=logits.to(device))
    convert = input_converter(bundle.preprocess, t_bundle.preprocess)
    on_the_fly = _Reordered(teacher.to(device).to(memory_format=torch.channels_last), order)
    return Distillation(alpha, temperature, teacher=on_the_fly, convert=convert)


class _Reordered(nn.Module):
    """The teacher with its output columns in the data's class order."""

    def __init__(self, teacher: nn.Module, order: torch.Tensor):
        super().__init__()
        self.teacher, self.order = teacher, order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)[:, self.order.to(x.device)]


# ---- the job ----------------------------------------------------------------------------------------------
def distill(cfg: RunConfig, teacher: str | Path, alpha: float = 0.5, temperature: float = 4.0,
            cache: bool = True, verbose: bool = True,
            limits: tuple[int | None, int | None, int | None] = (None, None, None)) -> dict:
    """Train `cfg`'s model (the student) with knowledge distillation from the run at `teacher`.

    Args:
        cfg: the student's settings, exactly as for `daxiao train` (data, augmentation, schedule ...).
        teacher: a run folder or weights file trained on the same classes.
        alpha: weight of the soft (teacher) term; 0 is plain training.
        temperature: T, softening both distributions; the soft term is scaled by T^2.
        cache: compute the teacher's logits once when the data allows it (see module docstring).
        limits: (train, val, test) images of a stratified subset, as `daxiao compare` takes them; the
            teacher's copy of the data gets the same subset (the draw depends on labels and seed only).

    Returns:
        `runs.train`'s result, plus "distill": the settings and the teacher's val accuracy on this split
        (also written to RUN/distill.json).

    Example:
        >>> distill(RunConfig.from_dict({"model": "mobilenet-v1", "alpha": 0.5}), "runs/resnet18-digits")
    """
    if not 0 <= alpha <= 1:
        raise DaxiaoError(f"alpha must be in [0, 1] (received {alpha}).")
    if temperature <= 0:
        raise DaxiaoError(f"temperature must be > 0 (received {temperature}).")
    cfg = copy.deepcopy(cfg)
    if not cfg.resume:  # the student's own defaults now, so the teacher cache sees its augmentation
        apply_model_defaults(cfg)  # announced by train, once the student is built
    cfg.validate()
    if not cfg.name and not cfg.resume:
        cfg.name = next_free(Path(cfg.project), f"{default_name(cfg)}-kd").name
    bundle = subset(load_data(data_config(cfg, cfg.model.name), cfg.train.seed, cache_dir=cfg.train.cache_dir),
                    *limits, seed=cfg.train.seed)
    model, t_pre, order = load_teacher(teacher, bundle.classes, cfg.data.data)
    t_bundle = subset(teacher_data(cfg, t_pre), *limits, seed=cfg.train.seed)
    device = device_for_rank(cfg.train.device)  # --device; cuda:LOCAL_RANK in a torchrun job
    t_acc = evaluate(_Reordered(model.to(device).to(memory_format=torch.channels_last), order),
                     make_loader(t_bundle.val, 256, t_pre, workers=cfg.data.workers), device=device)["acc"]
    cached = cache and can_cache(cfg, bundle)
    settings = {"teacher": str(teacher), "alpha": alpha, "temperature": temperature,
                "teacher_logits": "cached" if cached else "on the fly", "teacher_val_acc": t_acc}
    if verbose:
        console.print(f"distilling {escape(str(teacher))} (val acc {t_acc:.4f} on this split) into "
                      f"{escape(cfg.model.name)}: alpha {alpha}, T {temperature}, "
                      f"teacher logits {settings['teacher_logits']}")
    callback = distillation(model, bundle, t_bundle, order, alpha, temperature, cached, device)
    result = train(cfg, verbose=verbose, bundle=bundle, callbacks=[callback], model_defaults=False)
    atomic_write_json(Path(result["run_dir"], "distill.json"), settings)
    return {**result, "distill": settings}
