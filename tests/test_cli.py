"""The command line end to end, and every bad input: one line, a non-zero exit, nothing overwritten."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import make_folder

from daxiao.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daxiao", *args], capture_output=True, text=True, timeout=600)


def test_train_evaluate_predict_through_subprocess(tmp_path):
    data = make_folder(tmp_path / "shapes", per_class=10, size=16)
    runs = tmp_path / "runs"
    r = run_cli("train", "--data", str(data), "--image-size", "16", "--epochs", "6", "--lr", "0.003",
                "--batch-size", "8", "--workers", "0", "--project", str(runs), "--name", "cli", "--precision", "fp32")
    assert r.returncode == 0, r.stderr
    assert "best val acc" in r.stderr and (runs / "cli" / "best.safetensors").is_file()

    r = run_cli("evaluate", str(runs / "cli"), "--data", str(data), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 30 and set(report["per_class"]) == {"bar_h", "bar_v", "square"}
    assert (runs / "cli" / "eval-test" / "predictions.csv").is_file()

    r = run_cli("predict", str(runs / "cli"), str(data / "bar_v"), "--json", "--top-k", "2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out) == 10 and all(len(x["top"]) == 2 for x in out)
    assert sum(x["top"][0]["class"] == "bar_v" for x in out) >= 8


def test_models_and_datasets_listings(capsys):
    assert main(["models", "--input-size", "32"]) == 0
    text = capsys.readouterr().out
    assert "seed-cnn" in text and "squeezenet1_1" in text and "small" in text and "big" in text
    assert main(["datasets"]) == 0
    assert "/usr/share/datasets/fashion-mnist" in capsys.readouterr().out


def one_line_error(capsys, argv: list[str], expect: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and expect in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv,expect", [
    (["train", "--data", "/no/such/folder"], "neither a built-in dataset"),
    (["train", "--model", "resnet-18"], "Did you mean: resnet18"),
    (["train", "--epochs", "-1"], "epochs must be >= 1"),
    (["train", "--batch-size", "0"], "batch_size must be >= 1"),
    (["train", "--optimizer", "adma"], "Did you mean: adam"),
    (["train", "--resume", "--name", "nothing-here"], "no run to resume"),
    (["train", "--config", "/no/such.yaml"], "No such config file"),
    (["evaluate", "/no/such/run"], "No such run folder or weights file"),
    (["predict", "/no/such/run", "x.png"], "No such run folder or weights file"),
])
def test_bad_input_is_one_line(capsys, tmp_path, monkeypatch, argv, expect):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, argv, expect)


def test_bad_folders_through_the_cli(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["train", "--data", str(empty)], "has no class sub-folders")
    one = make_folder(tmp_path / "one", classes=("only",), per_class=3)
    one_line_error(capsys, ["train", "--data", str(one)], "only one class")


def test_weights_that_are_not_ours(capsys, tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00garbage" * 10)
    one_line_error(capsys, ["predict", str(tmp_path / "corrupt.safetensors"), str(tmp_path)], "corrupt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    one_line_error(capsys, ["evaluate", str(tmp_path / "foreign.safetensors")], "not daxiao weights")
    torch.save({"w": torch.zeros(2)}, tmp_path / "model.pth")
    one_line_error(capsys, ["evaluate", str(tmp_path / "model.pth")], "not a .safetensors file")


def test_existing_run_is_not_overwritten(capsys, tmp_path):
    runs = tmp_path / "runs"
    assert main(["train", "--epochs", "1", "--project", str(runs), "--name", "x", "--precision", "fp32"]) == 0
    before = (runs / "x" / "best.safetensors").read_bytes()
    capsys.readouterr()
    one_line_error(capsys, ["train", "--epochs", "1", "--project", str(runs), "--name", "x"], "--exist-ok")
    assert (runs / "x" / "best.safetensors").read_bytes() == before


def test_augment_preview_and_lr_find_write_pngs(capsys, tmp_path):
    assert main(["augment-preview", "--augment", "seed", "--out", str(tmp_path / "grid.png"), "--per-class", "3"]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 5000
    assert main(["lr-find", "--out", str(tmp_path / "lr.png"), "--steps", "40"]) == 0
    assert "suggested lr" in capsys.readouterr().out and (tmp_path / "lr.png").is_file()
    one_line_error(capsys, ["augment-preview", "--augment", "rotation=5"], "Did you mean: rotation_range")


def test_training_with_augmentation_mixup_and_weights(tmp_path):
    runs = tmp_path / "runs"
    argv = ["train", "--epochs", "2", "--project", str(runs), "--name", "aug", "--precision", "fp32",
            "--augment", "light,mixup=0.2", "--loss", "label-smoothing=0.1", "--class-weight", "balanced",
            "--balanced-sampling", "--schedule", "step"]
    assert main(argv) == 0
    rows = (runs / "aug" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "augment: light,mixup=0.2" in (runs / "aug" / "config.yaml").read_text()
