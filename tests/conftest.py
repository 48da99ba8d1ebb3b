"""Shared fixtures: small image folders built on the spot, including broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


def draw(kind: int, size: int = 24, seed: int = 0, rgb: bool = True) -> Image.Image:
    """Class 0: a bright horizontal bar; class 1: a vertical bar; class 2: a centred square. Plus noise."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 40, (size, size), dtype=np.uint8)
    pos = rng.integers(size // 4, 3 * size // 4)
    if kind == 0:
        a[pos - 2:pos + 2, 2:-2] = 230
    elif kind == 1:
        a[2:-2, pos - 2:pos + 2] = 230
    else:
        a[size // 3:2 * size // 3, size // 3:2 * size // 3] = 230
    img = Image.fromarray(a, "L")
    return img.convert("RGB") if rgb else img


def make_folder(root: Path, classes=("bar_h", "bar_v", "square"), per_class: int = 12, size: int = 24,
                broken: bool = False, ext: str = ".png") -> Path:
    for k, c in enumerate(classes):
        d = root / c / "nested"  # recursive search
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(k, size, seed=100 * k + i).save(d / f"img{i}{ext if i % 3 else ext.upper()}")
    if broken:
        (root / classes[0] / "empty.png").write_bytes(b"")
        good = (root / classes[1] / "nested" / "img1.png").read_bytes()
        (root / classes[1] / "truncated.png").write_bytes(good[: len(good) // 2])
        (root / classes[2] / "notes.jpg").write_text("this is not an image")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "shapes", broken=True)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def train_run(root: Path, name: str, model: str, epochs: int = 1, **overrides) -> Path:
    """A real run folder on the embedded digits set (config, metrics, best weights), trained briefly."""
    import daxiao
    from daxiao.config import RunConfig

    cfg = RunConfig.from_dict({"project": str(root), "name": name, "model": model, "epochs": epochs,
                               "precision": "fp32", "batch_size": 64, "lr": 3e-3, **overrides}).validate()
    daxiao.train(cfg, verbose=False)
    return root / name


def seeded_run(root: Path, name: str, model: str, image_size: int = 16, channels: int = 3, **model_args) -> Path:
    """A run folder whose best.safetensors is a seeded, untrained `model` for digits at `image_size`:
    enough to test that an export computes what PyTorch computes, without minutes of training."""
    from daxiao.config import RunConfig
    from daxiao.data.preprocess import Preprocess
    from daxiao.models import create_model
    from daxiao.models.saved import model_meta, save_weights

    torch.manual_seed(0)
    m = create_model(model, num_classes=10, in_chans=channels, input_size=image_size, **model_args).eval()
    cfg = RunConfig.from_dict({"model": model, "image_size": image_size, "channels": channels, "name": name,
                               "project": str(root)}).validate()
    pre = Preprocess(image_size, channels, "squash", (0.3,) * channels, (0.4,) * channels)
    meta = model_meta(m, [str(i) for i in range(10)], pre, epoch=0, val_acc=None, config=cfg.to_dict())
    save_weights(m, root / name / "best.safetensors", meta)
    return root / name


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, ONNX bundle) of a seed-cnn trained 4 epochs on digits: shared by the deploy tests."""
    from daxiao.deploy.export import export_run

    root = tmp_path_factory.mktemp("deploy")
    run = train_run(root / "runs", "seed", "seed-cnn", epochs=4)
    export_run(run, "onnx", root / "bundle")
    return run, root / "bundle"
