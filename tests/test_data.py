from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw, make_folder
from PIL import Image

from daxiao.config import DataConfig
from daxiao.data import TensorLoader, load_data
from daxiao.data.builtin import DEBIAN_FASHION
from daxiao.data.preprocess import Preprocess
from daxiao.errors import DaxiaoError


def test_digits_in_memory_with_fixed_test_split():
    a = load_data(DataConfig(data="digits"), seed=0)
    b = load_data(DataConfig(data="digits"), seed=1)
    assert a.in_memory and a.train.images.dtype == torch.uint8 and a.train.images.shape[1:] == (1, 8, 8)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.test.labels, b.test.labels)  # the test set does not move with the seed
    assert not torch.equal(a.val.labels, b.val.labels)  # the val split does
    counts = torch.bincount(a.val.labels, minlength=10)
    assert counts.min() >= 12 and counts.max() <= 16  # stratified: every class in proportion


def test_digits_upscaled_and_channels_on_request():
    d = load_data(DataConfig(data="digits", image_size=32, channels=3), seed=0)
    assert d.train.images.shape[1:] == (3, 32, 32)
    assert d.preprocess.image_size == 32 and len(d.preprocess.mean) == 3


def test_tensor_loader_order_is_a_function_of_seed_and_epoch():
    d = load_data(DataConfig(data="digits"), seed=0)

    def first_labels(seed, epoch):
        loader = TensorLoader(d.train, 32, d.preprocess, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return next(iter(loader)).targets

    assert torch.equal(first_labels(0, 1), first_labels(0, 1))
    assert not torch.equal(first_labels(0, 1), first_labels(0, 2))
    x = next(iter(TensorLoader(d.train, 512, d.preprocess))).inputs
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_folder_skips_and_counts_broken_files(image_folder):
    d = load_data(DataConfig(data=str(image_folder), image_size=24), seed=0)
    assert d.classes == ["bar_h", "bar_v", "square"]
    assert len(d.skipped) == 3
    reasons = sorted(r for _, r in d.skipped)
    assert reasons == ["not an image (unreadable: UnidentifiedImageError)", "truncated (unreadable: OSError)",
                       "zero-byte file"]
    assert len(d.train) + len(d.val) == 36
    assert d.preprocess.channels == 3  # RGB files


def test_folder_with_train_val_test_roots(tmp_path):
    make_folder(tmp_path / "ds" / "train", per_class=6)
    make_folder(tmp_path / "ds" / "valid", per_class=3)
    make_folder(tmp_path / "ds" / "test", per_class=2)
    d = load_data(DataConfig(data=str(tmp_path / "ds"), image_size=16), seed=0)
    assert (len(d.train), len(d.val), len(d.test)) == (18, 9, 6)


def test_csv_list(tmp_path):
    make_folder(tmp_path / "imgs", per_class=4)
    rows = ["path,label"] + [f"imgs/{p.parent.parent.name}/nested/{p.name},{p.parent.parent.name}"
                             for p in sorted((tmp_path / "imgs").rglob("*")) if p.is_file()]
    (tmp_path / "list.csv").write_text("\n".join(rows))
    d = load_data(DataConfig(data=str(tmp_path / "list.csv"), image_size=16, val_split=0.25), seed=0)
    assert d.classes == ["bar_h", "bar_v", "square"] and len(d.train) + len(d.val) == 12


def test_grey_folder_is_one_channel(tmp_path):
    root = tmp_path / "grey"
    for k, c in enumerate(["a", "b"]):
        (root / c).mkdir(parents=True)
        for i in range(4):
            draw(k, 16, seed=i, rgb=False).save(root / c / f"{i}.png")
    assert load_data(DataConfig(data=str(root), image_size=16), seed=0).preprocess.channels == 1


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "neither a built-in dataset"),
    (lambda p: p.mkdir(), "has no class sub-folders"),
    (lambda p: (p / "only").mkdir(parents=True) or draw(0).save(p / "only" / "x.png"), "only one class"),
    (lambda p: [(p / c).mkdir(parents=True) for c in "ab"], "has no images"),
])
def test_bad_folders(tmp_path, setup, message):
    p = tmp_path / "data"
    setup(p)
    with pytest.raises(DaxiaoError, match=message):
        load_data(DataConfig(data=str(p)), seed=0)


def test_class_empty_after_skipping_is_left_out_not_fatal(tmp_path, capsys):
    root = make_folder(tmp_path / "d", classes=("a", "b", "c"), per_class=3)
    for f in (root / "b").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    d = load_data(DataConfig(data=str(root)), seed=0)
    assert d.classes == ["a", "c"] and len(d.skipped) == 3 and len(d.train) + len(d.val) == 6
    assert "class folder(s) b have no readable images; left out" in capsys.readouterr().err
    for f in (root / "c").rglob("*"):  # with one class left there is nothing to tell apart: one clear line
        if f.is_file():
            f.write_bytes(b"")
    with pytest.raises(DaxiaoError, match="only one class"):
        load_data(DataConfig(data=str(root)), seed=0)


def test_unknown_builtin_suggests():
    with pytest.raises(DaxiaoError, match="Did you mean: fashion-mnist"):
        load_data(DataConfig(data="fashion_mnist"), seed=0)


def test_mnist_offline_names_the_paths_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("DAXIAO_CACHE", str(tmp_path / "cache"))
    import torchvision

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DaxiaoError, match=r"mnist: no idx files in .*cache/MNIST/raw and the download failed"):
        load_data(DataConfig(data="mnist", data_dir=str(tmp_path / "nowhere")), seed=0)


# ---- preprocessing: where pixels land ------------------------------------------------------------------
def wide_image() -> Image.Image:
    """40x20: left half black, right half white."""
    a = np.zeros((20, 40), np.uint8)
    a[:, 20:] = 255
    return Image.fromarray(a, "L")


def test_resize_modes_put_pixels_where_they_belong():
    img = wide_image()
    squash = Preprocess(20, 1, "squash").pil_to_uint8(img)[0]
    crop = Preprocess(20, 1, "crop").pil_to_uint8(img)[0]
    pad = Preprocess(20, 1, "pad").pil_to_uint8(img)[0]
    assert squash.shape == crop.shape == pad.shape == (20, 20)
    assert squash[10, 2] == 0 and squash[10, 17] == 255  # whole image, squeezed
    assert crop[10, 2] == 0 and crop[10, 17] == 255 and crop[:, 8:12].float().std() > 0  # centre 20x20
    assert pad[:4].max() == 0 and pad[-4:].max() == 0  # black bands above and below
    assert pad[10, 2] == 0 and pad[10, 17] == 255


def test_modes_and_transparency_become_channels():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red -> black
    assert Preprocess(8, 3).pil_to_uint8(rgba).max() == 0
    grey16 = Image.fromarray(np.full((8, 8), 1000, np.uint16))
    assert Preprocess(8, 1).pil_to_uint8(grey16).shape == (1, 8, 8)
    assert Preprocess(8, 3).pil_to_uint8(Image.new("L", (8, 8), 77)).tolist() == [[[77] * 8] * 8] * 3


@pytest.mark.skipif(not Path(DEBIAN_FASHION).is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian_package():
    d = load_data(DataConfig(data="fashion-mnist"), seed=0)
    assert len(d.train) + len(d.val) == 60_000 and len(d.test) == 10_000
    assert d.classes[0] == "T-shirt/top" and d.train.images.shape[1:] == (1, 28, 28)
