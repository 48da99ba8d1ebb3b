"""The registry generates these tests: every zoo model gets the same checks (timm's tests/test_models.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import daxiao
from daxiao.errors import DaxiaoError
from daxiao.inference.profile import count_macs, count_params

MODELS = daxiao.list_models()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("chans,size", [(1, 28), (3, 32)])
def test_forward_backward_small_inputs(name, chans, size):
    torch.manual_seed(0)
    model = daxiao.create_model(name, num_classes=7, in_chans=chans, input_size=size)
    out = model(torch.randn(2, chans, size, size))
    assert out.shape == (2, 7)
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:3]}"


@pytest.mark.parametrize("name", MODELS)
def test_native_digits_size_and_feature_interface(name):
    model = daxiao.create_model(name, num_classes=10, in_chans=1, input_size=8).eval()
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 10)
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    width = getattr(model, "head_hidden_size", None) or model.num_features  # timm MobileNetV3: a 1x1 head conv
    assert feats.shape == (2, width)
    model.reset_classifier(4)
    assert model(x).shape == (2, 4) and model.num_classes == 4
    model.reset_classifier(0)
    assert model(x).shape == (2, width)


def test_seed_cnn_is_the_articles_network():
    m = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 32, (3, 3))]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(32 * 13 * 13, 128), (128, 10)]
    # exactly Keras' parameter count for the article's model: 320 + 692,352 + 1,290
    assert count_params(m) == 693_962


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "silu"])
def test_activation_choice_changes_the_network(act):
    torch.manual_seed(0)
    a = daxiao.create_model("seed-cnn", num_classes=3, in_chans=1, input_size=12, activation=act)
    b = daxiao.create_model("mobilenet-v1", num_classes=3, in_chans=1, input_size=12, activation=act, alpha=0.25)
    kind = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}[act]
    assert any(isinstance(x, kind) for x in a.modules()) and any(isinstance(x, kind) for x in b.modules())


def test_seed_cnn_pool_first_is_exact_for_relu():
    torch.manual_seed(0)
    m = daxiao.create_model("seed-cnn", num_classes=3, in_chans=1, input_size=16)
    x = torch.randn(4, 1, 16, 16)
    article_order = m.pool(m.act1(m.conv(x)))
    assert m.pool_first and torch.equal(m.forward_features(x), article_order)


def test_mobilenet_alpha_scales_width_and_is_depthwise_separable():
    small = daxiao.create_model("mobilenet-v1", num_classes=10, alpha=0.25)
    full = daxiao.create_model("mobilenet-v1", num_classes=10, alpha=1.0)
    assert small.num_features == 256 and full.num_features == 1024
    assert count_params(small) < count_params(full) / 10
    depthwise = [c for c in full.modules() if isinstance(c, nn.Conv2d) and c.groups == c.in_channels > 1]
    assert len(depthwise) == 13


def test_squeezenet_has_real_fire_modules():
    from torchvision.models.squeezenet import Fire

    m = daxiao.create_model("squeezenet1_1", num_classes=10)
    assert sum(isinstance(x, Fire) for x in m.modules()) == 8


def test_small_inputs_get_a_stride_one_stem():
    big = daxiao.create_model("resnet18", num_classes=10, input_size=224)
    small = daxiao.create_model("resnet18", num_classes=10, input_size=32)
    assert big.conv1.stride == (2, 2) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert count_macs(small, 32) > 10 * count_macs(big, 32)  # it keeps 16x the spatial detail


def test_macs_of_seed_cnn_counted_by_hand():
    m = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
    conv = 26 * 26 * 32 * 9
    dense = 32 * 13 * 13 * 128 + 128 * 10
    assert count_macs(m, 28, 1) == conv + dense


def test_unknown_model_suggests_the_closest_names():
    with pytest.raises(DaxiaoError, match=r"Unknown model 'mobilenet-v2'.*Did you mean: .*mobilenetv2"):
        daxiao.create_model("mobilenet-v2")
    with pytest.raises(DaxiaoError, match="timm has no model"):
        daxiao.create_model("timm:resnet_nope")


def test_any_timm_model_by_name():
    m = daxiao.create_model("timm:resnet10t", num_classes=5, in_chans=1, input_size=32)
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 5)


def test_bad_option_is_one_clear_error():
    with pytest.raises(DaxiaoError, match="alpha"):
        daxiao.create_model("mobilenet-v1", alpha=-1)
    with pytest.raises(DaxiaoError, match="activation must be one of"):
        daxiao.create_model("seed-cnn", activation="relu7")
