from __future__ import annotations

import argparse

import pytest

from daxiao.config import RunConfig, add_config_flags, config_from_args, load_yaml, save_yaml
from daxiao.errors import DaxiaoError


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    add_config_flags(p)
    return p.parse_args(argv)


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig()
    cfg.model.name, cfg.model.alpha, cfg.train.epochs, cfg.optim.lr = "mobilenet-v1", 0.5, 3, 0.02
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == cfg


def test_defaults_then_yaml_then_flags(tmp_path):
    (tmp_path / "c.yaml").write_text("model: resnet18\nepochs: 7\ntrain:\n  batch_size: 16\noptim: {lr: 0.5}\n")
    cfg = config_from_args(parse(["--config", str(tmp_path / "c.yaml"), "--epochs", "2", "--no-pretrained"]))
    assert (cfg.model.name, cfg.train.epochs, cfg.train.batch_size, cfg.optim.lr) == ("resnet18", 2, 16, 0.5)
    assert cfg.optim.optimizer == "adam"  # untouched default


def test_flag_names_are_the_yaml_keys():
    cfg = config_from_args(parse(["--model", "seed-cnn", "--batch-size", "10", "--activation", "tanh",
                                  "--val-split", "0.2", "--pretrained"]))
    got = (cfg.train.batch_size, cfg.model.activation, cfg.data.val_split, cfg.model.pretrained)
    assert got == (10, "tanh", 0.2, True)


@pytest.mark.parametrize("yaml_text,message", [
    ("epoch: 3\n", r"Unknown config key 'epoch'. Did you mean: epochs"),
    ("train: {epoch: 3}\n", r"Unknown config key train.epoch. Did you mean: epochs\b"),
    ("epochs: three\n", r"epochs must be an integer \(received 'three'\)"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("epochs: [1\n", "not valid YAML"),
])
def test_bad_yaml(tmp_path, yaml_text, message):
    (tmp_path / "c.yaml").write_text(yaml_text)
    with pytest.raises(DaxiaoError, match=message):
        load_yaml(tmp_path / "c.yaml")


@pytest.mark.parametrize("overrides,message", [
    ({"epochs": -1}, r"epochs must be >= 1 \(received -1\)"),
    ({"batch_size": 0}, r"batch_size must be >= 1 \(received 0\)"),
    ({"optimizer": "adma"},
     r"optimizer must be one of adam, adamw, sgd, rmsprop \(received 'adma'\). Did you mean: adam"),
    ({"resize": "stretch"}, "resize must be one of squash, crop, pad"),
    ({"val_split": 1.5}, r"val_split must be in \(0, 1\)"),
    ({"channels": 2}, "channels must be 1 or 3"),
])
def test_out_of_range_values(overrides, message):
    with pytest.raises(DaxiaoError, match=message):
        RunConfig.from_dict(overrides).validate()
