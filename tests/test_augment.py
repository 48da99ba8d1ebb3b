"""Augmentation: Keras' geometry and sign conventions, fill modes, parity with scipy, seeding, parsing."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from daxiao.config.augment import PRESETS
from daxiao.data.augment import (
    AffineParams,
    AugmentConfig,
    BatchAugment,
    apply_params,
    augment_images,
    build_augment,
    parse_augment,
    preview_grid,
    sample_params,
)
from daxiao.errors import DaxiaoError

RAMP = (torch.arange(5.0) * 10).expand(1, 1, 5, 5).clone()  # column c holds 10 * c


def one_hot(h: int, w: int, r: int, c: int) -> torch.Tensor:
    x = torch.zeros(1, 1, h, w)
    x[0, 0, r, c] = 255
    return x


def batch(n: int = 8, c: int = 1, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------- geometry

def test_rotation_by_90_is_counter_clockwise_about_the_centre():
    # right of the centre pixel -> above it, as displayed (odd size: the centre is a pixel)
    out = apply_params(one_hot(5, 5, 2, 4), AffineParams.fixed(1, theta=90))
    assert torch.allclose(out, one_hot(5, 5, 0, 2), atol=1e-3)
    # even size: the centre lies between pixels, and the top-left pixel must land bottom-left exactly
    out = apply_params(one_hot(4, 4, 0, 0), AffineParams.fixed(1, theta=90))
    assert torch.allclose(out, one_hot(4, 4, 3, 0), atol=1e-3)
    x = torch.rand(2, 3, 6, 6) * 255  # numpy/torch rot90 turn counter-clockwise too
    assert torch.allclose(apply_params(x, AffineParams.fixed(2, theta=90)), torch.rot90(x, 1, (-2, -1)), atol=1e-3)


def test_shift_conventions_follow_keras_apply_affine_transform():
    # output (r, c) samples input (r + ty, c + tx): a positive tx moves content left, a positive ty up
    out = apply_params(RAMP, AffineParams.fixed(1, tx=1))
    assert out[0, 0, 0].tolist() == pytest.approx([10, 20, 30, 40, 40], abs=1e-3)
    rows = RAMP.transpose(-1, -2).contiguous()  # row r holds 10 * r
    out = apply_params(rows, AffineParams.fixed(1, ty=1))
    assert out[0, 0, :, 0].tolist() == pytest.approx([10, 20, 30, 40, 40], abs=1e-3)
    out = apply_params(RAMP, AffineParams.fixed(1, ty=1))  # ty leaves columns alone
    assert torch.allclose(out, RAMP, atol=1e-3)


def test_width_shift_range_shifts_columns_and_height_shift_range_rows():
    # Keras documents this; its code swaps them (keras-team/keras#17398), we follow the documentation
    cfg = AugmentConfig(width_shift_range=0.25)
    p = sample_params(cfg, 500, 8, 16, gen(0))
    assert (p.ty == 0).all() and p.tx.abs().max() <= 4 and p.tx.abs().max() > 3  # fraction of the width, 16
    p = sample_params(AugmentConfig(height_shift_range=0.25), 500, 8, 16, gen(0))
    assert (p.tx == 0).all() and p.ty.abs().max() <= 2 and p.ty.abs().max() > 1.5
    p = sample_params(AugmentConfig(width_shift_range=3), 500, 8, 16, gen(0))  # ints: whole pixels in (-3, 3)
    assert set(p.tx.tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    p = sample_params(AugmentConfig(width_shift_range=[0.25]), 100, 8, 16, gen(0))  # lists: a choice, either sign
    assert set(p.tx.tolist()) == {-4.0, 4.0}
    p = sample_params(AugmentConfig(width_shift_range=2.5), 500, 8, 16, gen(0))  # floats >= 1: pixels
    assert 2 < p.tx.abs().max() <= 2.5


@pytest.mark.parametrize("mode,tx,row", [
    ("nearest", 2, [20, 30, 40, 40, 40]),   # aaaa|abcd|dddd
    ("constant", 2, [20, 30, 40, 99, 99]),  # cval
    ("reflect", 2, [20, 30, 40, 40, 30]),   # dcba|abcd|dcba: half-sample symmetric
    ("wrap", 2, [20, 30, 40, 0, 10]),       # abcd|abcd|abcd
    ("nearest", -2, [0, 0, 0, 10, 20]),
    ("constant", -2, [99, 99, 0, 10, 20]),
    ("reflect", -2, [10, 0, 0, 10, 20]),
    ("wrap", -2, [30, 40, 0, 10, 20]),
    ("nearest", 0.5, [5, 15, 25, 35, 40]),  # half a pixel: bilinear, and each mode's idea of the edge
    ("constant", 0.5, [5, 15, 25, 35, 99]),  # scipy's "constant" does not blend cval into the edge
    ("reflect", 0.5, [5, 15, 25, 35, 40]),
    ("wrap", 0.5, [5, 15, 25, 35, 20]),     # across the seam: between the last and the first column
])
def test_fill_modes(mode, tx, row):
    out = apply_params(RAMP, AffineParams.fixed(1, tx=tx), mode, cval=99)
    assert torch.allclose(out[0, 0], torch.tensor(row, dtype=torch.float).expand(5, 5), atol=1e-3)


def test_flips():
    x = torch.rand(3, 2, 5, 7) * 255
    assert torch.equal(apply_params(x, AffineParams.fixed(3, flip_h=True)), x.flip(-1))
    assert torch.equal(apply_params(x, AffineParams.fixed(3, flip_v=True)), x.flip(-2))
    assert torch.equal(apply_params(x, AffineParams.fixed(3, flip_h=[True, False, True]))[1], x[1])
    # with an affine part the flips are folded into the matrix; Keras flips after the transform
    shifted = apply_params(x, AffineParams.fixed(3, tx=1, theta=10))
    flipped = apply_params(x, AffineParams.fixed(3, tx=1, theta=10, flip_h=True, flip_v=True))
    assert torch.allclose(flipped, shifted.flip(-1).flip(-2), atol=1e-3)
    out = augment_images(batch(64), AugmentConfig(horizontal_flip=True), gen(0))
    same = (out == batch(64)).flatten(1).all(1)
    assert same.any() and (~same).any() and torch.equal(out[~same], batch(64)[~same].flip(-1))


def keras_reference(img, theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0, mode="nearest", cval=0.0):
    """Keras' apply_affine_transform (keras/src/legacy/preprocessing/image.py) rebuilt with numpy for one 2-D image."""
    t, s = np.deg2rad(theta), np.deg2rad(shear)
    m = (np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
         @ np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
         @ np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]])
         @ np.diag([zx, zy, 1.0]))
    h, w = img.shape
    centre = np.array([[1, 0, h / 2 - 0.5], [0, 1, w / 2 - 0.5], [0, 0, 1]])
    m = centre @ m @ np.linalg.inv(centre)
    m = m[[1, 0, 2]][:, [1, 0, 2]]  # Keras writes the matrix for (x, y) and swaps it for (row, col) arrays
    return ndimage.affine_transform(img, m[:2, :2], m[:2, 2], order=1, mode=mode, cval=cval)


@pytest.mark.parametrize("mode", ["nearest", "constant", "reflect", "wrap"])
def test_whole_transform_matches_keras_and_scipy(mode):
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (13, 13))
    cases = [dict(theta=30, tx=2.3, ty=-1.7, shear=15, zx=0.8, zy=1.25),
             dict(theta=-75, tx=-4.5, ty=3.2, shear=-30, zx=1.3, zy=0.7),
             dict(theta=170, zx=0.5, zy=0.5)]
    for case in cases:
        # scipy's own "wrap" overlaps the first and last pixel (period size - 1); we tile, as its "grid-wrap"
        want = keras_reference(img, **case, mode="grid-wrap" if mode == "wrap" else mode, cval=77.0)
        for flip_h, flip_v in [(False, False), (True, True)]:
            got = apply_params(torch.tensor(img)[None, None].float(),
                               AffineParams.fixed(1, **case, flip_h=flip_h, flip_v=flip_v), mode, cval=77.0)
            ref = want[:, ::-1] if flip_h else want
            ref = ref[::-1] if flip_v else ref
            assert np.abs(got[0, 0].numpy() - ref).max() < 0.05, (case, mode, flip_h)


def test_uint8_results_are_rounded_and_dtypes_kept():
    x = batch(4)
    out = apply_params(x, AffineParams.fixed(4, tx=0.5))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    want = apply_params(x.float(), AffineParams.fixed(4, tx=0.5)).round()
    assert torch.equal(out, want.to(torch.uint8))
    out = augment_images(x.float(), parse_augment("strong"), gen(0))
    assert out.dtype == torch.float32 and out.shape == x.shape and 0 <= out.min() and out.max() <= 255


def test_brightness_multiplies_and_clips():
    x = torch.full((2, 1, 3, 3), 200, dtype=torch.uint8)
    out = apply_params(x, AffineParams.fixed(2, brightness=[0.5, 1.5]))
    assert out[0].unique().tolist() == [100] and out[1].unique().tolist() == [255]


# ------------------------------------------------------------------------------- pipeline and seeding

def test_none_is_the_exact_identity():
    x = batch(8)
    assert build_augment("none") is None and build_augment(None) is None
    for cfg in (parse_augment("none"), AugmentConfig(rotation_range=0, zoom_range=[1, 1], width_shift_range=0)):
        assert cfg.is_identity and torch.equal(augment_images(x, cfg, gen(0)), x)
        assert torch.equal(apply_params(x, sample_params(cfg, 8, 12, 12, gen(0))), x)
    assert not parse_augment("seed").is_identity


@pytest.mark.parametrize("spec", ["seed", "trivialaugment=true", "random_erasing=0.5", "mixup=0.5",
                                  "mixup=0.2,cutmix=1.0"])
def test_same_seed_same_batch_and_global_rng_untouched(spec):
    x, y = batch(8, c=3), torch.arange(8) % 4
    aug = build_augment(spec, num_classes=4)
    state = torch.get_rng_state()
    a, b, c = (aug(x, y, gen(s)) for s in (1, 1, 2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    g = gen(1)
    assert not torch.equal(aug(x, y, g)[0], aug(x, y, g)[0])  # every batch gets fresh draws
    assert torch.equal(torch.get_rng_state(), state)  # torchvision's ops ran under a forked, seeded RNG


def test_labels_pass_through_and_mixing_gives_soft_targets():
    x, y = batch(8), torch.arange(8) % 3
    out, labels = BatchAugment(parse_augment("strong"))(x, y, gen(0))
    assert out.dtype == torch.uint8 and out.shape == x.shape and torch.equal(labels, y)
    for spec in ("mixup=0.4", "cutmix=1.0", "mixup=0.4,cutmix=1.0"):
        out, soft = build_augment(spec, num_classes=3)(x, y, gen(0))
        assert out.dtype == torch.uint8 and soft.shape == (8, 3) and soft.dtype == torch.float32
        assert torch.allclose(soft.sum(1), torch.ones(8)) and (soft[torch.arange(8), y] > 0).all()
        assert ((soft > 0).sum(1) <= 2).all()  # each image blends with one other
    with pytest.raises(DaxiaoError, match="number of classes"):
        build_augment("mixup=0.2")


def test_random_erasing_hits_only_the_drawn_fraction():
    x = torch.full((40, 1, 16, 16), 255, dtype=torch.uint8)
    out = augment_images(x, AugmentConfig(random_erasing=0.5), gen(0))
    erased = (out == 0).flatten(1).any(1)
    assert 5 < erased.sum() < 35 and torch.equal(out[~erased], x[~erased])


def test_preview_grid_writes_a_png(tmp_path):
    images, labels = batch(6, c=1, size=8), torch.tensor([0, 0, 1, 1, 2, 2])
    path = preview_grid(images, labels, ["a", "b", "c"], parse_augment("seed"), tmp_path / "sub" / "grid.png",
                        per_class=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- parsing

def test_parse_presets_overrides_and_values():
    assert parse_augment("seed") == AugmentConfig(**PRESETS["seed"])
    assert parse_augment("seed").shear_range == 0.2 and parse_augment("seed").horizontal_flip
    cfg = parse_augment("seed, rotation_range=5")
    assert cfg.rotation_range == 5 and cfg.zoom_range == 0.2
    cfg = parse_augment("rotation_range=10,zoom_range=[0.8, 1.2],horizontal_flip=true,width_shift_range=[-3,0,3]")
    assert cfg.zoom_range == (0.8, 1.2) and cfg.zoom_bounds == (0.8, 1.2) and cfg.horizontal_flip
    assert cfg.width_shift_range == (-3, 0, 3) and cfg.rotation_range == 10
    assert parse_augment("random_erasing=1e-1").random_erasing == 0.1  # YAML 1.1 reads 1e-1 as text
    cfg = parse_augment({"preset": "light", "zoom_range": [0.9, 1.1], "brightness_range": [0.8, 1.2]})
    assert cfg.rotation_range == 10 and cfg.brightness_range == (0.8, 1.2)
    assert parse_augment(cfg) == cfg and parse_augment(cfg) is not cfg
    assert parse_augment(cfg.to_dict()) == cfg
    for name in PRESETS:
        parse_augment(name)


@pytest.mark.parametrize("spec,message", [
    ("rotaton_range=10", r"Unknown augment setting 'rotaton_range'. Valid settings: rotation_range, .*"
                         r"Did you mean: rotation_range"),
    ("sed", r"Unknown augment preset 'sed'; use one of none, seed, light, strong.*Did you mean: seed\?"),
    ("rotation_range=-5", r"rotation_range must be a number >= 0 .*received -5"),
    ("width_shift_range=-0.1", r"width_shift_range must be a number >= 0"),
    ("width_shift_range=1", r"1 means none"),
    ("zoom_range=-1", r"zoom_range must be a float in \[0, 1\)"),
    ("zoom_range=[0, 1.2]", r"zoom_range must be a pair \[lo, hi\] with 0 < lo <= hi"),
    ("zoom_range=[1.2,0.8]", r"zoom_range must be a pair"),
    ("fill_mode=mirror", r"fill_mode must be one of nearest, constant, reflect, wrap \(received 'mirror'\)"),
    ("brightness_range=[1.2,0.8]", r"brightness_range must be a pair"),
    ("random_erasing=1.5", r"random_erasing must be a probability in \[0, 1\]"),
    ("horizontal_flip=maybe", r"horizontal_flip must be true or false"),
    ("horizontal_flip", r"needs a value"),
    ("rotation_range=10,seed", r"must come first"),
    ("randaugment=true,trivialaugment=true", r"Choose one"),
])
def test_parse_errors_say_what_and_how(spec, message):
    with pytest.raises(DaxiaoError, match=message):
        parse_augment(spec)
