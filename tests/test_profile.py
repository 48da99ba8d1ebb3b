"""Profile numbers that can be known exactly are exact; the measured ones are sane and reported with spread."""

from __future__ import annotations

import json

import torch
from torch import nn

import daxiao
from daxiao.cli import main
from daxiao.inference.profile import count_macs, count_params, peak_activation_bytes, profile_model, weights_bytes


def test_seed_cnn_params_are_the_articles():
    model = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=28)
    conv = 32 * 1 * 3 * 3 + 32                  # Conv2D(32, 3x3) on 1 channel
    dense = (32 * 13 * 13) * 128 + 128          # 26x26 -> MaxPool(2) -> 13x13x32 flattened -> Dense(128)
    head = 128 * 10 + 10                        # Dense(10)
    assert count_params(model) == conv + dense + head == 693_962


def test_macs_of_one_conv_layer_by_hand():
    conv = nn.Sequential(nn.Conv2d(3, 8, kernel_size=3, padding=1))
    # every output pixel of every output channel: one multiply-accumulate per input channel per kernel tap
    assert count_macs(conv, 16, 3) == 16 * 16 * 8 * (3 * 3 * 3)
    strided = nn.Sequential(nn.Conv2d(1, 4, kernel_size=3, stride=2))  # 15x15 -> 7x7 outputs
    assert count_macs(strided, 15, 1) == 7 * 7 * 4 * 9


def test_size_on_disk_and_int8_estimate():
    lin = nn.Linear(10, 4)
    size = weights_bytes(lin)
    assert 4 * (40 + 4) < size["fp32"] < 4 * (40 + 4) + 256   # raw floats plus the safetensors header
    assert size["int8"] == 40 * 1 + 4 * 4 + 4 * 4             # int8 weights, one fp32 scale per row, fp32 bias


def test_peak_activations_count_live_tensors():
    conv_relu = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())  # relu not in place: two live outputs
    assert peak_activation_bytes(conv_relu, 8, 1) == 2 * (4 * 8 * 8 * 4)
    in_place = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True))
    assert peak_activation_bytes(in_place, 8, 1) == 4 * 8 * 8 * 4


def test_profile_model_reports_medians_with_spread():
    model = daxiao.create_model("mobilenet-v1", num_classes=10, in_chans=1, input_size=16, alpha=0.25)
    r = profile_model(model, 16, 1, repeats=6, throughput_batch=8)
    for key in ("latency_1thread", "latency_all_threads"):
        lat = r[key]
        assert lat["runs"] >= 5 and 0 < lat["min_ms"] <= lat["q1_ms"] <= lat["median_ms"] <= lat["q3_ms"]
    assert r["latency_1thread"]["threads"] == 1
    t = r["throughput"]
    assert t["batch"] == 8 and 0 < t["q1"] <= t["images_per_s"] <= t["q3"]
    assert r["params"] == count_params(model) and r["peak_activation_bytes"] > 0
    assert torch.get_num_threads() == 2  # conftest's setting is restored after timing


def test_profile_cli_json_for_a_name_and_a_run(capsys, tmp_path):
    assert main(["profile", "seed-cnn", "--input-size", "28", "--in-chans", "1", "--num-classes", "10",
                 "--repeats", "5", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"] == 693_962 and r["input"] == [1, 28, 28]
    runs = tmp_path / "runs"
    assert main(["train", "--epochs", "1", "--project", str(runs), "--name", "p", "--precision", "fp32"]) == 0
    capsys.readouterr()
    assert main(["profile", str(runs / "p"), "--repeats", "5"]) == 0
    text = capsys.readouterr().out
    assert "1x8x8" in text and "peak activations" in text and "ONNX" in text
