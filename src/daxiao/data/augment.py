"""Data augmentation with Keras `ImageDataGenerator` semantics, applied to whole batches of tensors.

Keras draws one set of parameters per image and resamples it with `scipy.ndimage.affine_transform`. We
draw the same parameters for a whole batch with one `torch.Generator`, build the same 3x3 matrix
(rotation @ shift @ shear @ zoom about the image centre, mapping OUTPUT pixels to INPUT pixels), fold the
flips into it, and resample the whole batch with one grid (what `affine_grid` builds) and one `grid_sample`:
bilinear, as Keras' `interpolation_order=1`, with scipy's fill modes (`tests/test_augment.py` checks the
pipeline against scipy.ndimage). About 1.3 ms for 256 28x28 images on one CPU thread. A config without
rotation, shift, shear or zoom never resamples: flips copy the drawn images mirrored (airbench's
`batch_flip_lr` idea), so `horizontal_flip=True` alone costs a fraction of that.

Where we differ from Keras (each on purpose):
- `width_shift_range` moves images sideways and `height_shift_range` up and down, as Keras documents;
  Keras' own code swaps them since keras-preprocessing PR #318 (keras-team/keras#17398, still open in
  tf-keras#310). `tx`/`ty` keep the meaning of Keras' `apply_affine_transform`: x = columns, y = rows.
- The centre of rotation and zoom is ((W-1)/2, (H-1)/2); Keras swaps the two for non-square images.
- "wrap" tiles with period W (abcd|abcd|abcd, scipy's "grid-wrap"); the "wrap" Keras hands to scipy
  overlaps the first and last pixel (period W-1), which scipy itself calls ill-defined.
- Brightness multiplies and clips to [0, 255]; Keras goes through PIL and rescales each image to 0-255.

RandAugment, TrivialAugmentWide and RandomErasing are torchvision's v2 ops. Given a batch they apply one
random op to all of it, so they run per image in a Python loop: about 0.35 ms per image for the policies
(90 ms per 256-image batch of 28x28), which is why only the "strong" preset turns one on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config.augment import FILL_MODES, AugmentConfig, parse_augment
from ..errors import DaxiaoError, check_choice

__all__ = ["AugmentConfig", "BatchAugment", "build_augment", "parse_augment", "preview_grid"]


# ------------------------------------------------------------------------------------ Keras transform

@dataclass
class AffineParams:
    """Per-image parameters, each a (B,) tensor, in the units of Keras' `apply_transform`.

    theta: rotation in degrees, counter-clockwise as displayed. tx, ty: shift in pixels along x (columns) and
    y (rows); output pixel (r, c) samples input (r + ty, c + tx), so a positive tx moves content left. shear:
    degrees. zx, zy: zoom factors (< 1 zooms in). flip_h, flip_v: bool, applied after the affine part as in
    Keras. brightness: factor or None.
    """

    theta: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    shear: torch.Tensor
    zx: torch.Tensor
    zy: torch.Tensor
    flip_h: torch.Tensor
    flip_v: torch.Tensor
    brightness: torch.Tensor | None = None

    @classmethod
    def fixed(cls, n: int, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, flip_h=False, flip_v=False,
              brightness=None) -> AffineParams:
        """The same given values (scalars or length-n sequences) for n images: for tests and previews."""
        def t(v, dtype=torch.float64):
            return torch.as_tensor(v, dtype=dtype).expand(n).clone()
        return cls(t(theta), t(tx), t(ty), t(shear), t(zx), t(zy), t(flip_h, torch.bool), t(flip_v, torch.bool),
                   None if brightness is None else t(brightness))

    @property
    def is_affine_identity(self) -> bool:
        return bool((self.theta == 0).all() and (self.tx == 0).all() and (self.ty == 0).all()
                    and (self.shear == 0).all() and (self.zx == 1).all() and (self.zy == 1).all())


def sample_params(cfg: AugmentConfig, n: int, height: int, width: int, generator: torch.Generator) -> AffineParams:
    """Draw Keras' `get_random_transform` parameters for n images of height x width.

    Args:
        cfg: the augmentation settings.
        n, height, width: batch size and image size (shift fractions are of the size).
        generator: the only source of randomness, so the same seed gives the same batch.

    Returns:
        AffineParams for `apply_params`.
    """
    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    def coin(on: bool) -> torch.Tensor:
        return torch.rand(n, generator=generator) < 0.5 if on else torch.zeros(n, dtype=torch.bool)

    zero, one = torch.zeros(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    r, s, (zlo, zhi) = cfg.rotation_range, cfg.shear_range, cfg.zoom_bounds
    zoom = (zlo, zhi) != (1, 1)
    return AffineParams(
        theta=uniform(-r, r) if r else zero,
        tx=_draw_shift(cfg.width_shift_range, width, n, generator),  # Keras' intent, not its swapped code
        ty=_draw_shift(cfg.height_shift_range, height, n, generator),
        shear=uniform(-s, s) if s else zero,
        zx=uniform(zlo, zhi) if zoom else one,
        zy=uniform(zlo, zhi) if zoom else one,
        flip_h=coin(cfg.horizontal_flip),
        flip_v=coin(cfg.vertical_flip),
        brightness=uniform(*cfg.brightness_range) if cfg.brightness_range else None,
    )


def _draw_shift(spec: float | tuple[float, ...], size: int, n: int, g: torch.Generator) -> torch.Tensor:
    if not spec:
        return torch.zeros(n, dtype=torch.float64)
    if isinstance(spec, tuple) or isinstance(spec, int):  # Keras: np.random.choice(spec) times a random sign
        choices = torch.tensor(spec if isinstance(spec, tuple) else list(range(spec)), dtype=torch.float64)
        sign = torch.randint(0, 2, (n,), generator=g) * 2 - 1
        v = choices[torch.randint(len(choices), (n,), generator=g)] * sign
    else:
        v = (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * spec
    return v * size if max(spec if isinstance(spec, tuple) else (spec,)) < 1 else v


def pixel_matrices(p: AffineParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Keras' output->input matrix per image, about the image centre, in (x=column, y=row) pixel units.

    Returns:
        (L, t): (B, 2, 2) and (B, 2), float64, with input - centre = L @ (output - centre) + t.
    """
    th, sh = torch.deg2rad(p.theta), torch.deg2rad(p.shear)
    c, s = torch.cos(th), torch.sin(th)
    # Keras multiplies rotation @ shift @ shear @ zoom. With R = [[c, -s], [s, c]] and shear [[1, -sin sh],
    # [0, cos sh]], R @ shear = [[c, -sin(th + sh)], [s, cos(th + sh)]]; zoom scales its columns; the shift
    # comes before shear and zoom, so it is only rotated. Closed form: a third of the small ops of matmuls.
    fx = torch.where(p.flip_h, -p.zx, p.zx)  # Keras flips after the affine part: x -> -x before L
    fy = torch.where(p.flip_v, -p.zy, p.zy)
    lin = torch.stack([c * fx, -torch.sin(th + sh) * fy, s * fx, torch.cos(th + sh) * fy], -1).view(-1, 2, 2)
    t = torch.stack([c * p.tx - s * p.ty, s * p.tx + c * p.ty], -1)
    return lin, t


def apply_params(x: torch.Tensor, p: AffineParams, fill_mode: str = "nearest", cval: float = 0.0) -> torch.Tensor:
    """Keras' `apply_transform` for a batch: affine (bilinear) -> flips -> brightness.

    Args:
        x: (B, C, H, W) uint8, or float in pixel units (0-255).
        p: per-image parameters (`sample_params` or `AffineParams.fixed`).
        fill_mode: "nearest" (aaaa|abcd|dddd), "constant" (cval beyond the edges), "reflect" (dcba|abcd|dcba)
            or "wrap" (abcd|abcd|abcd), as in scipy.ndimage.
        cval: the "constant" fill, in pixel units.

    Returns:
        A tensor of x's dtype and shape (uint8 results are rounded).
    """
    check_choice("fill_mode", fill_mode, FILL_MODES)
    if p.is_affine_identity:  # no resampling: flips are exact copies
        out = _flip_some(_flip_some(x, p.flip_h, -1), p.flip_v, -2)
        if p.brightness is None:
            return out
        y = out.float()
    else:
        y = _resample(x.float(), p, fill_mode, cval)
    if p.brightness is not None:
        y = (y * p.brightness.float().to(y.device).view(-1, 1, 1, 1)).clamp_(0, 255)
    return y.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y.to(x.dtype)


@functools.lru_cache(maxsize=8)
def _base_grid(h: int, w: int) -> torch.Tensor:
    """(3, h*w): output pixel centres in grid_sample's [-1, 1] units (align_corners=False), then ones."""
    xs, ys = (torch.arange(w) * 2 + 1) / w - 1, (torch.arange(h) * 2 + 1) / h - 1
    return torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w)]).view(3, h * w)


def _resample(x: torch.Tensor, p: AffineParams, fill_mode: str, cval: float) -> torch.Tensor:
    B, _, H, W = x.shape
    lin, t = pixel_matrices(p)
    # With align_corners=False pixel i <-> (2i + 1) / size - 1 in [-1, 1], exact at pixel centres for even and odd
    # sizes, and "reflection" folds about the outer pixel edges as scipy's "reflect" does. So pixel = D n + centre,
    # D = diag(W/2, H/2); the centre cancels and the normalized matrix is [D^-1 L D | D^-1 t].
    d = torch.tensor([W / 2, H / 2], dtype=torch.float64)
    theta = torch.cat([lin * d / d.view(2, 1), (t / d).unsqueeze(-1)], -1).float().to(x.device)  # drawn on the CPU
    # affine_grid's result, laid out (B, 2, H, W): 3x faster to build on CPU, and each coordinate is contiguous,
    # so the per-axis fixes below are fast scalar ops (broadcasting over a last dim of 2 is slow)
    grid = (theta @ _base_grid(H, W).to(x.device)).view(B, 2, H, W)
    gx, gy = grid[:, 0], grid[:, 1]
    if fill_mode == "wrap":  # fold into one period; a 1-pixel circular pad gives bilinear neighbours across the seam
        for g, size in ((gx, W), (gy, H)):  # (n + 1) size/2 = pixel + 0.5, in [0, size) after the fold
            g.add_(1).mul_(size / 2).remainder_(size).add_(1).mul_(2 / (size + 2)).sub_(1)
        x = F.pad(x, (1, 1, 1, 1), mode="circular")
    pad = "reflection" if fill_mode == "reflect" else "border"
    out = F.grid_sample(x, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode=pad, align_corners=False)
    if fill_mode == "constant":  # scipy: cval outside [0, size-1], no blending with it at the edge
        outside = (gx.abs() > 1 - 1 / W + 1e-4) | (gy.abs() > 1 - 1 / H + 1e-4)  # beyond the outer pixel centres
        out.masked_fill_(outside.unsqueeze(1), cval)
    return out


def _flip_some(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    idx = mask.nonzero().flatten().to(x.device)  # the mask is drawn on the CPU; x may be on a GPU
    if not len(idx):
        return x
    out = x.clone()
    out[idx] = x[idx].flip(dim)  # 2-3x faster than torch.where(mask, x.flip(dim), x) on CPU
    return out


# ---------------------------------------------------------------------------------------- the pipeline

def augment_images(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Everything but MixUp/CutMix: Keras' transforms, then the torchvision policies and random erasing.

    Args:
        x: (B, C, H, W) uint8 (what loaders hold), or float in pixel units (0-255).
        cfg: the settings.
        generator: the source of every random draw (torchvision's ops run under a seed drawn from it).

    Returns:
        The augmented batch, same dtype and shape.
    """
    if x.ndim != 4:
        raise DaxiaoError(f"Augmentation takes (B, C, H, W) batches (received shape {tuple(x.shape)}).")
    if cfg.has_affine or cfg.horizontal_flip or cfg.vertical_flip or cfg.brightness_range:
        x = apply_params(x, sample_params(cfg, len(x), x.shape[-2], x.shape[-1], generator), cfg.fill_mode, cfg.cval)
    if cfg.randaugment or cfg.trivialaugment or cfg.random_erasing:
        x = _per_image_ops(x, cfg, generator)
    return x


def _per_image_ops(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    from torchvision.transforms import v2

    u8 = x.dtype == torch.uint8
    y = x if u8 else (x / 255).clamp(0, 1)  # torchvision's float images are in [0, 1]
    erase = torch.rand(len(x), generator=generator) < cfg.random_erasing  # our draw, so skipped images cost nothing
    with torch.random.fork_rng(devices=[]):  # torchvision draws from the global RNG: seed it from ours, then restore
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        if cfg.randaugment or cfg.trivialaugment:
            policy = v2.RandAugment() if cfg.randaugment else v2.TrivialAugmentWide()
            y = torch.stack([policy(img) for img in y])
        if erase.any():
            y = y.clone() if y is x else y
            eraser = v2.RandomErasing(p=1.0)
            for i in erase.nonzero().flatten().tolist():
                y[i] = eraser(y[i])
    return y if u8 else (y * 255).to(x.dtype)


def mix_batch(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig, num_classes: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix (one, at random, when both are set) with torchvision's v2 ops.

    Returns:
        (images of x's dtype, float (B, num_classes) targets whose rows sum to 1).
    """
    from torchvision.transforms import v2

    ops = [op(alpha=a, num_classes=num_classes) for op, a in ((v2.MixUp, cfg.mixup), (v2.CutMix, cfg.cutmix)) if a]
    op = ops[int(torch.randint(len(ops), (1,), generator=generator))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        xm, ym = op(x.float(), y)  # v2.MixUp cannot blend uint8 in place
    return (xm.round_().clamp_(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else xm.to(x.dtype)), ym


class BatchAugment:
    """The loader's augmentation step: `x, y = aug(x, y, generator)` on the uint8 batch, before normalization.

    Labels pass through unchanged unless MixUp/CutMix is on; then they come back as float (B, num_classes)
    soft targets, which `nn.CrossEntropyLoss` accepts as they are (take argmax for accuracy).

    Example:
        >>> aug = BatchAugment(parse_augment("seed"))
        >>> x, y = aug(torch.zeros(8, 1, 28, 28, dtype=torch.uint8), torch.zeros(8, dtype=torch.long))
    """

    def __init__(self, cfg: AugmentConfig, num_classes: int | None = None, seed: int = 0):
        if cfg.soft_targets and not num_classes:
            raise DaxiaoError("mixup/cutmix need the number of classes to build soft targets.")
        self.cfg, self.num_classes = cfg, num_classes
        self.generator = torch.Generator().manual_seed(seed)  # used when the caller passes none

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        g = generator if generator is not None else self.generator
        x = augment_images(x, self.cfg, g)
        if self.cfg.soft_targets:
            x, y = mix_batch(x, y, self.cfg, self.num_classes, g)
        return x, y

    def __repr__(self) -> str:
        return f"BatchAugment({self.cfg})"


def build_augment(spec: str | dict | AugmentConfig | None, num_classes: int | None = None) -> BatchAugment | None:
    """A BatchAugment for `spec` (see `parse_augment`), or None when it changes nothing.

    Args:
        spec: preset and/or settings.
        num_classes: needed for mixup/cutmix soft targets.
    """
    cfg = parse_augment(spec)
    return None if cfg.is_identity else BatchAugment(cfg, num_classes)


# ------------------------------------------------------------------------------------------ preview

def preview_grid(images: torch.Tensor, labels: torch.Tensor, classes: list[str], cfg: AugmentConfig,
                 path: str | Path, per_class: int = 4, seed: int = 0, max_classes: int = 20) -> Path:
    """Write a PNG with one row per class: an original, then `per_class` augmented versions of it.

    MixUp/CutMix are left out: they blend pairs of images and say nothing about a single one.

    Args:
        images: (N, C, H, W) uint8 (C = 1 or 3); labels: (N,) class indices into `classes`.
        cfg: the settings to show.
        path: the PNG to write.
        per_class: augmented versions per class; seed: fixes them; max_classes: rows at most.

    Returns:
        The written path.
    """
    from ..plots import text_fonts

    with text_fonts(classes):
        return _preview(images, labels, classes, cfg, Path(path), per_class, seed, max_classes)


def _preview(images: torch.Tensor, labels: torch.Tensor, classes: list[str], cfg: AugmentConfig, path: Path,
             per_class: int, seed: int, max_classes: int) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global backend to switch, no windows

    rows = [(c, int(idx[0])) for c in range(len(classes)) if len(idx := (labels == c).nonzero().flatten())]
    rows = rows[:max_classes]
    if not rows:
        raise DaxiaoError("No images to preview.")
    g = torch.Generator().manual_seed(seed)
    fig = Figure(figsize=(1.3 * (per_class + 1), 1.3 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), per_class + 1, squeeze=False)
    for r, (c, i) in enumerate(rows):
        batch = augment_images(images[i:i + 1].expand(per_class, -1, -1, -1).contiguous(), cfg, g)
        for k, img in enumerate([images[i], *batch]):
            ax = axes[r][k]
            arr = img.permute(1, 2, 0).numpy()
            ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("original" if k == 0 else f"augmented {k}", fontsize=8)
        axes[r][0].set_ylabel(classes[c], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path

