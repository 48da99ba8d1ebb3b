"""Augmentation settings: Keras `ImageDataGenerator` names, presets and their checks (no torch needed).

The ops that apply them to batches live in `daxiao.data.augment`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import yaml

from ..errors import DaxiaoError, check_choice, did_you_mean
from .parsing import split_top_level

FILL_MODES = ("nearest", "constant", "reflect", "wrap")


@dataclass
class AugmentConfig:
    """Keras `ImageDataGenerator` arguments (same names, units and meaning), plus a few torchvision ops."""

    rotation_range: float = 0.0      # degrees; angle ~ U(-r, r), positive = counter-clockwise as displayed
    width_shift_range: float | tuple[float, ...] = 0.0   # <1: fraction of width, >=1: pixels, int/list: choices
    height_shift_range: float | tuple[float, ...] = 0.0  # the same, for rows
    shear_range: float = 0.0         # degrees (not radians: Keras' 0.2 is a fifth of a degree)
    zoom_range: float | tuple[float, float] = 0.0  # z -> factors U(1-z, 1+z) for x and y apart; <1 zooms in
    horizontal_flip: bool = False    # each image with p=0.5
    vertical_flip: bool = False
    fill_mode: str = "nearest"       # nearest | constant | reflect | wrap: what shows beyond the edges
    cval: float = 0.0                # fill_mode="constant" value, in pixel units (0-255)
    brightness_range: tuple[float, float] | None = None  # pixel values times U(lo, hi) per image
    randaugment: bool = False        # torchvision v2.RandAugment per image (slow: a Python loop)
    trivialaugment: bool = False     # torchvision v2.TrivialAugmentWide per image (slow: a Python loop)
    random_erasing: float = 0.0      # probability per image of v2.RandomErasing (a zeroed rectangle)
    mixup: float = 0.0               # Beta(alpha, alpha) for MixUp; 0 = off; gives soft targets
    cutmix: float = 0.0              # the same for CutMix; with both set, one of them per batch (as timm)

    def __post_init__(self) -> None:
        for name in ("width_shift_range", "height_shift_range", "zoom_range", "brightness_range"):
            if isinstance(getattr(self, name), list):  # YAML gives lists; tuples compare and print alike
                setattr(self, name, tuple(getattr(self, name)))
        _validate(self)

    @property
    def zoom_bounds(self) -> tuple[float, float]:
        z = self.zoom_range
        return (1 - z, 1 + z) if _is_number(z) else (z[0], z[1])

    @property
    def has_affine(self) -> bool:
        """Whether any image can be rotated, shifted, sheared or zoomed (i.e. resampled)."""
        return bool(self.rotation_range or self.width_shift_range or self.height_shift_range or self.shear_range
                    or self.zoom_bounds != (1, 1))

    @property
    def soft_targets(self) -> bool:
        """Whether labels come back as (B, num_classes) probabilities instead of class indices."""
        return self.mixup > 0 or self.cutmix > 0

    @property
    def is_identity(self) -> bool:
        """Whether augmentation changes nothing, so the loader can skip it."""
        return not (self.has_affine or self.horizontal_flip or self.vertical_flip or self.brightness_range
                    or self.randaugment or self.trivialaugment or self.random_erasing or self.soft_targets)

    def to_dict(self) -> dict:
        """Plain values (tuples as lists) for the run's YAML."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# Presets are short diffs on the defaults (all off), one reason per line.
PRESETS: dict[str, dict] = {
    "none": {},
    "seed": {  # exactly the article's ImageDataGenerator(...)
        "rotation_range": 20, "width_shift_range": 0.2, "height_shift_range": 0.2,
        "shear_range": 0.2,  # degrees in Keras, so nearly a no-op; kept for parity with the article
        "zoom_range": 0.2, "horizontal_flip": True, "fill_mode": "nearest",
    },
    "light": {  # safe for any data, digits and text included
        "rotation_range": 10,  # small tilts, as in hand-held photos or scans
        "width_shift_range": 0.1, "height_shift_range": 0.1,  # objects are rarely centred exactly
        "zoom_range": 0.1,  # and vary a little in size
        # no flips: a mirrored 2, 3 or letter is not the same class (and 6/9 turn into each other)
    },
    "strong": {  # the article's settings plus the policies that win on bigger, longer runs
        "rotation_range": 20, "width_shift_range": 0.2, "height_shift_range": 0.2, "shear_range": 0.2,
        "zoom_range": 0.2, "horizontal_flip": True, "fill_mode": "nearest",
        "randaugment": True,  # 2 random ops per image at magnitude 9 (torchvision's defaults)
        "random_erasing": 0.25,  # a zeroed patch a quarter of the time: robustness to occlusion (timm's reprob)
    },
}
FIELDS = tuple(f.name for f in fields(AugmentConfig))


# ---------------------------------------------------------------------------------------------- parsing

def parse_augment(spec: str | dict | AugmentConfig | None) -> AugmentConfig:
    """Build an AugmentConfig from a preset name, Keras-style settings, or both.

    Args:
        spec: None or "" (no augmentation); a preset ("seed"); settings ("rotation_range=10,zoom_range=[0.8,1.2]");
            a preset then overrides ("seed,rotation_range=5"); a dict from YAML (an optional "preset" key plus
            settings); or an AugmentConfig. Values are read as YAML (true, 0.2, [0.8, 1.2]).

    Returns:
        A validated AugmentConfig.

    Example:
        >>> parse_augment("seed,horizontal_flip=false").rotation_range
        20
    """
    if isinstance(spec, AugmentConfig):
        return AugmentConfig(**asdict(spec))  # a copy, validated again
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return AugmentConfig()
    if isinstance(spec, dict):
        preset, settings = "none", dict(spec)
    elif isinstance(spec, str):
        preset, settings = "none", {}
        for i, token in enumerate(split_top_level(spec)):
            if "=" in token:
                key, value = (s.strip() for s in token.split("=", 1))
                settings[key] = _yaml_value(value)
            elif token in FIELDS:
                raise DaxiaoError(f"Augment setting {token!r} needs a value, e.g. {token}=...")
            elif i > 0:
                raise DaxiaoError(f"Augment preset {token!r} must come first, as in 'seed,rotation_range=5'.")
            else:
                preset = token
    else:
        raise DaxiaoError(f"--augment takes a preset name, name=value settings or a mapping (received {spec!r}).")
    preset = settings.pop("preset", preset)
    if preset not in PRESETS:
        raise DaxiaoError(f"Unknown augment preset {preset!r}; use one of {', '.join(PRESETS)}, or Keras-style "
                          f"settings such as rotation_range=10.{did_you_mean(str(preset), PRESETS)}")
    for key in settings:
        if key not in FIELDS:
            raise DaxiaoError(f"Unknown augment setting {key!r}. Valid settings: {', '.join(FIELDS)}."
                              f"{did_you_mean(key, FIELDS)}")
    return AugmentConfig(**{**PRESETS[preset], **settings})


def _yaml_value(text: str):
    value = yaml.safe_load(text) if text else None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate(cfg: AugmentConfig) -> None:
    def fail(name: str, rule: str) -> None:
        raise DaxiaoError(f"{name} must be {rule} (received {getattr(cfg, name)!r}).")

    for name in ("rotation_range", "shear_range", "cval", "random_erasing", "mixup", "cutmix"):
        if not _is_number(getattr(cfg, name)):
            fail(name, "a number")
    for name in ("rotation_range", "shear_range", "mixup", "cutmix"):
        if getattr(cfg, name) < 0:
            fail(name, "a number >= 0 (0 = off)")
    if not 0 <= cfg.random_erasing <= 1:
        fail("random_erasing", "a probability in [0, 1]")
    for name in ("horizontal_flip", "vertical_flip", "randaugment", "trivialaugment"):
        if not isinstance(getattr(cfg, name), bool):
            fail(name, "true or false")
    for name in ("width_shift_range", "height_shift_range"):
        s = getattr(cfg, name)
        if isinstance(s, tuple):
            if not s or not all(_is_number(v) for v in s):
                fail(name, "a number or a non-empty list of numbers")
        elif not _is_number(s) or s < 0:
            fail(name, "a number >= 0: a fraction of the size if < 1, else pixels")
        elif isinstance(s, int) and s == 1:  # Keras draws integers from (-s, s): only 0
            fail(name, "2 or more as an int (ints pick whole-pixel shifts in (-s, s), so 1 means none); "
                 "use 1.0 for up to one pixel")
    z = cfg.zoom_range
    if _is_number(z):
        if not 0 <= z < 1:
            fail("zoom_range", "a float in [0, 1) giving factors in [1-z, 1+z], or a pair [lo, hi] with 0 < lo <= hi")
    elif not (isinstance(z, tuple) and len(z) == 2 and all(_is_number(v) for v in z) and 0 < z[0] <= z[1]):
        fail("zoom_range", "a pair [lo, hi] with 0 < lo <= hi (factors < 1 zoom in), or a float in [0, 1)")
    b = cfg.brightness_range
    if b is not None and not (isinstance(b, tuple) and len(b) == 2 and all(_is_number(v) for v in b)
                              and 0 <= b[0] <= b[1]):
        fail("brightness_range", "a pair [lo, hi] with 0 <= lo <= hi (1 = unchanged), or null")
    if not isinstance(cfg.fill_mode, str):
        fail("fill_mode", f"one of {', '.join(FILL_MODES)}")
    check_choice("fill_mode", cfg.fill_mode, FILL_MODES)
    if cfg.randaugment and cfg.trivialaugment:
        raise DaxiaoError("Choose one of randaugment and trivialaugment: both are whole augmentation policies.")
