"""Losses, class weights, balanced sampling, schedules and the lr range test (the article's 实战技巧 2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from daxiao.config import DataConfig, OptimConfig, RunConfig
from daxiao.data import TensorLoader, TensorSplit, load_data
from daxiao.data.preprocess import Preprocess
from daxiao.errors import DaxiaoError
from daxiao.training.losses import build_criterion, class_weights
from daxiao.training.optim import build_optimizer, build_scheduler


def logits_and_labels():
    torch.manual_seed(0)
    return torch.randn(16, 5), torch.randint(0, 5, (16,))


def test_cross_entropy_takes_integer_and_one_hot_targets():
    x, y = logits_and_labels()
    ce = build_criterion("categorical_crossentropy")  # Keras' name for one-hot targets
    assert torch.allclose(ce(x, y), F.cross_entropy(x, y))
    assert torch.allclose(ce(x, F.one_hot(y, 5).float()), F.cross_entropy(x, y))


def test_label_smoothing_matches_torch():
    x, y = logits_and_labels()
    assert torch.allclose(build_criterion("label-smoothing=0.2")(x, y), F.cross_entropy(x, y, label_smoothing=0.2))


def test_focal_with_gamma_zero_is_cross_entropy_and_discounts_easy_examples():
    x, y = logits_and_labels()
    assert torch.allclose(build_criterion("focal=0")(x, y), F.cross_entropy(x, y))
    easy = torch.tensor([[10.0, 0, 0, 0, 0]])
    assert build_criterion("focal")(easy, torch.tensor([0])) < 1e-3 * F.cross_entropy(easy, torch.tensor([0]))


def test_mse_is_on_softmax_probabilities():
    x, y = logits_and_labels()
    expected = ((x.softmax(1) - F.one_hot(y, 5)) ** 2).mean()
    assert torch.allclose(build_criterion("mse")(x, y), expected)


def test_balanced_class_weights_follow_sklearn():
    w = class_weights("balanced", [90, 10])
    assert torch.allclose(w, torch.tensor([100 / 180, 100 / 20]))
    x, y = logits_and_labels()
    wt = torch.rand(5)
    assert torch.allclose(build_criterion("cross-entropy", wt)(x, y), F.cross_entropy(x, y, weight=wt))
    assert torch.allclose(build_criterion("cross-entropy", wt)(x, F.one_hot(y, 5).float()),
                          F.cross_entropy(x, y, weight=wt))
    with pytest.raises(DaxiaoError, match="needs 2 non-negative numbers"):
        class_weights("1,2,3", [5, 5])


@pytest.mark.parametrize("spec,message", [("hinge", "loss must be one of"), ("focal=-1", "gamma must be >= 0"),
                                          ("label-smoothing=1.5", r"must be in \[0, 1\)")])
def test_bad_loss(spec, message):
    with pytest.raises(DaxiaoError, match=message):
        RunConfig.from_dict({"loss": spec}).validate()


def test_balanced_sampling_draws_classes_evenly():
    labels = torch.tensor([0] * 900 + [1] * 100)
    split = TensorSplit(torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), labels)
    loader = TensorLoader(split, 1000, Preprocess(2, 1), shuffle=True, balanced=True)
    drawn = next(iter(loader)).targets
    assert 0.4 < drawn.float().mean().item() < 0.6  # class 1 is 10 % of the data, ~50 % of the draws


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "onecycle"])
def test_schedules_with_warmup(schedule):
    model = torch.nn.Linear(4, 2)
    o = OptimConfig(optimizer="sgd", lr=0.1, schedule=schedule, warmup_epochs=1)
    opt = build_optimizer(model, o)
    sched = build_scheduler(opt, o, steps_per_epoch=10, epochs=6)
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < 0.05 and max(lrs) == pytest.approx(0.1, rel=1e-6)  # warmup from below up to the peak
    if schedule != "constant":
        assert lrs[-1] < 0.05  # decayed by the end
    if schedule == "step":
        assert sorted(set(round(v, 8) for v in lrs[10:]), reverse=True)[:2] == [0.1, 0.01]


def test_weight_decay_skips_norms_and_biases():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(model, OptimConfig(optimizer="adamw", weight_decay=0.05))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight)}


def test_lr_find_suggests_a_sensible_rate(tmp_path):
    from daxiao.training.lr_find import lr_find
    from daxiao.training.runs import build

    cfg = RunConfig.from_dict({"batch_size": 64}).validate()
    model, bundle = build(cfg)
    r = lr_find(model, bundle, cfg, steps=80, out=tmp_path / "lr.png")
    assert 1e-4 <= r["suggested_lr"] <= 0.3 and (tmp_path / "lr.png").stat().st_size > 1000


def test_digits_split_is_stratified_for_class_counts():
    d = load_data(DataConfig(data="digits"), seed=0)
    counts = d.class_counts()
    assert len(counts) == 10 and min(counts.values()) >= 120
