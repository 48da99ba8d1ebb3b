"""Distillation: the loss is Hinton's, alpha 0 is plain training, cached teacher logits equal on-the-fly ones,
and a teacher trained on other classes is refused with both class lists named."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import make_folder
from safetensors.torch import load_file

import daxiao
from daxiao.cli import main
from daxiao.config import RunConfig
from daxiao.data import Batch, load_data
from daxiao.errors import DaxiaoError
from daxiao.training.distill import Distillation, distill, distillation, load_teacher, teacher_data
from daxiao.training.runs import make_model
from daxiao.training.session import prepare


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """seed-cnn on digits upscaled to 12 px: the teacher differs from 8-px students in input size."""
    runs = tmp_path_factory.mktemp("teacher")
    cfg = RunConfig.from_dict({"project": str(runs), "name": "t", "precision": "fp32", "epochs": 2, "image_size": 12})
    daxiao.train(cfg, verbose=False)
    return runs / "t"


def student_cfg(runs, name: str, **kw) -> RunConfig:
    return RunConfig.from_dict({"project": str(runs), "name": name, "precision": "fp32", "epochs": 2,
                                "model": "seed-tiny-cnn", "seed": 3, **kw})


def test_loss_is_hintons_formula():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    order = torch.tensor([4, 0, 2, 5, 1, 3])  # the batch's samples, looked up in the cache by index
    cache = torch.zeros(6, 5).index_copy(0, order, t)
    callback = Distillation(alpha=0.7, temperature=3.0, cache=cache)
    batch = Batch(s, y, order)
    p_t, log_p_s = (t / 3).softmax(1), (s / 3).log_softmax(1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    expected = 0.7 * kl * 9 + 0.3 * F.cross_entropy(s, y)
    assert torch.allclose(callback.on_train_loss(batch, s, F.cross_entropy(s, y)), expected, atol=1e-6)
    plain = F.cross_entropy(s, y)
    assert Distillation(alpha=0.0, temperature=3.0, cache=cache).on_train_loss(batch, s, plain) is plain


def test_alpha_zero_is_plain_training(teacher, runs):
    plain = daxiao.train(student_cfg(runs, "plain"), verbose=False)
    kd = distill(student_cfg(runs, "kd0"), teacher, alpha=0.0, verbose=False)
    a, b = load_file(str(runs / "plain" / "last.safetensors")), load_file(str(runs / "kd0" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("train_loss", "val_loss", "val_acc"):
        assert [h[key] for h in kd["history"]] == [h[key] for h in plain["history"]]


def test_cached_teacher_logits_give_the_same_loss_as_on_the_fly(teacher, runs):
    cfg = student_cfg(runs, "x", image_size=12).validate()  # same preprocessing as the teacher: exact
    bundle = load_data(cfg.data, cfg.train.seed)
    t_model, t_pre, order = load_teacher(teacher, bundle.classes, "digits")
    t_bundle = teacher_data(cfg, t_pre)
    losses = {}
    for cache in (True, False):
        model = make_model(cfg, bundle)
        s = prepare(model, bundle, cfg)
        callback = distillation(t_model, bundle, t_bundle, order, 0.5, 4.0, cache)
        assert (callback.cache is not None) == cache
        per_batch = []
        for i, batch in enumerate(s.train_loader):
            logits = model(batch.inputs)
            per_batch.append(callback.on_train_loss(batch, logits, s.criterion(logits, batch.targets)).item())
            if i == 3:
                break
        losses[cache] = per_batch
    assert losses[True] == pytest.approx(losses[False], rel=1e-5, abs=1e-6)


def test_teacher_of_another_size_and_augmentation_train(teacher, runs):
    """An 8-px student from a 12-px teacher: cached without augmentation, on the fly with it."""
    r = distill(student_cfg(runs, "kd"), teacher, alpha=0.5, temperature=4.0, verbose=False)
    saved = json.loads((runs / "kd" / "distill.json").read_text())
    assert saved["teacher_logits"] == "cached" and saved["teacher_val_acc"] > 0.5
    assert r["preprocess"].image_size == 8 and r["best_val_acc"] > 0.3
    aug = distill(student_cfg(runs, "kd-aug", augment="light,mixup=0.2", epochs=1), teacher, verbose=False)
    assert aug["distill"]["teacher_logits"] == "on the fly"
    assert torch.isfinite(torch.tensor(aug["history"][-1]["train_loss"]))
    # a student whose own defaults augment (mobilenet-v1 from scratch): the teacher follows its pixels
    own = distill(student_cfg(runs, "kd-own", model="mobilenet-v1", epochs=1, alpha=0.25), teacher, verbose=False,
                  limits=(120, 60, None))
    assert own["distill"]["teacher_logits"] == "on the fly"
    assert yaml.safe_load((runs / "kd-own" / "config.yaml").read_text())["data"]["augment"] == "light"


def test_cli_distill_and_bad_input(teacher, runs, tmp_path, capsys):
    argv = ["distill", "--teacher", str(teacher), "--student", "seed-tiny-cnn", "--epochs", "1", "--project",
            str(runs), "--name", "cli", "--precision", "fp32", "--kd-alpha", "0.9", "--temperature", "2"]
    assert main(argv) == 0  # --data defaults to the teacher's (digits)
    assert json.loads((runs / "cli" / "distill.json").read_text())["alpha"] == 0.9
    capsys.readouterr()
    shapes = make_folder(tmp_path / "shapes", per_class=4, size=12)
    assert main(["distill", "--teacher", str(teacher), "--data", str(shapes), "--project", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the data's own log lines (layout, decode)
    assert err.startswith("error:"), err
    assert "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" in err and "[bar_h, bar_v, square]" in err
    with pytest.raises(DaxiaoError, match="alpha must be in"):
        distill(copy.deepcopy(student_cfg(runs, "bad")), teacher, alpha=1.5)
