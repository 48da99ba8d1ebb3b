from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import daxiao
import daxiao.training.loop as train_mod
import daxiao.training.precision as precision
from daxiao.config import RunConfig
from daxiao.data import load_data
from daxiao.errors import DaxiaoError
from daxiao.models.saved import load_model, read_meta
from daxiao.training.session import prepare


def digits_cfg(runs, name: str, **overrides) -> RunConfig:
    cfg = RunConfig.from_dict({"project": str(runs), "name": name, "precision": "fp32", **overrides})
    return cfg.validate()


def test_seed_cnn_learns_digits(runs):
    r = daxiao.train(digits_cfg(runs, "learn", epochs=6, lr=3e-3), verbose=False)
    assert r["best_val_acc"] >= 0.95
    run = runs / "learn"
    for f in ("config.yaml", "metrics.csv", "best.safetensors", "best.json", "last.safetensors",
              "last.state.safetensors", "confusion_matrix.png"):
        assert (run / f).is_file(), f
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 7
    assert daxiao.evaluate(run)["acc"] >= 0.9  # the fixed digits test split


def test_python_api_keras_style():
    torch.manual_seed(0)
    model = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=16)
    out = daxiao.fit(model, "digits", epochs=2, optimizer="sgd", batch_size=32, verbose=False)
    assert out["history"][-1]["epoch"] == 2 and out["preprocess"].image_size == 16  # digits upscaled to the model
    assert torch.isfinite(torch.tensor(out["history"][-1]["train_loss"]))


def test_save_load_gives_identical_predictions(runs):
    r = daxiao.train(digits_cfg(runs, "rt", epochs=1, model="mobilenet-v1", alpha=0.25, batch_size=256), verbose=False)
    model = r["model"].eval().to(memory_format=torch.contiguous_format)
    loaded, meta = load_model(runs / "rt")
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["classes"] == [str(i) for i in range(10)] and meta["model_args"]["alpha"] == 0.25


def test_resume_after_interruption_matches_an_uninterrupted_run(runs, monkeypatch):
    straight = daxiao.train(digits_cfg(runs, "straight", epochs=4), verbose=False)

    real, calls = train_mod.train_one_epoch, {"n": 0}

    def dies_in_epoch_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "train_one_epoch", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        daxiao.train(digits_cfg(runs, "cut", epochs=4), verbose=False)
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    assert read_meta(runs / "cut" / "last.safetensors")["epoch"] == 2

    resumed = daxiao.train(digits_cfg(runs, "cut", epochs=4, resume=True), verbose=False)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3, 4]
    a, b = load_file(str(runs / "straight" / "last.safetensors")), load_file(str(runs / "cut" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["history"][-1]["val_acc"] == straight["history"][-1]["val_acc"]


def test_early_stopping_stops_at_best_plus_patience_and_keeps_the_best_weights(runs):
    r = daxiao.train(digits_cfg(runs, "es", epochs=30, lr=1e-7, patience=2), verbose=False)
    accs = [h["val_acc"] for h in r["history"]]
    assert len(accs) < 30 and len(accs) == r["best_epoch"] + 2  # exactly patience epochs past the best
    assert accs[r["best_epoch"] - 1] == max(accs) == r["best_val_acc"]
    assert accs.index(max(accs)) == r["best_epoch"] - 1  # the first epoch to reach the best
    assert all(a <= max(accs) for a in accs[r["best_epoch"]:])  # a tie is no improvement (Keras: min_delta 0)
    best = load_file(str(runs / "es" / "best.safetensors"))
    assert read_meta(runs / "es" / "best.safetensors")["epoch"] == r["best_epoch"]
    assert read_meta(runs / "es" / "last.safetensors")["epoch"] == len(accs)
    state = r["model"].state_dict()
    assert all(torch.equal(state[k].cpu(), best[k]) for k in best)  # fit ends holding the best epoch's weights
    last = load_file(str(runs / "es" / "last.safetensors"))
    assert any(not torch.equal(last[k], best[k]) for k in best if last[k].is_floating_point())


def test_run_folder_is_never_overwritten(runs):
    daxiao.train(digits_cfg(runs, "keep", epochs=1), verbose=False)
    before = (runs / "keep" / "best.safetensors").read_bytes()
    with pytest.raises(DaxiaoError, match="exists; choose another --name, or pass --exist-ok"):
        daxiao.train(digits_cfg(runs, "keep", epochs=1), verbose=False)
    assert (runs / "keep" / "best.safetensors").read_bytes() == before
    with pytest.raises(DaxiaoError, match="no run to resume"):
        daxiao.train(digits_cfg(runs, "never-ran", epochs=1, resume=True), verbose=False)


def test_unnamed_runs_get_fresh_folders(runs):
    cfg = RunConfig.from_dict({"project": str(runs), "epochs": 1})
    first = daxiao.train(cfg, verbose=False)["run_dir"]
    second = daxiao.train(cfg, verbose=False)["run_dir"]
    assert first.endswith("seed-cnn-digits") and second.endswith("seed-cnn-digits-2")


def test_image_folder_trains_and_reports_skipped(image_folder, runs, capsys):
    r = daxiao.train(RunConfig.from_dict({"data": str(image_folder), "image_size": 24, "epochs": 8, "lr": 3e-3,
                                          "batch_size": 8, "workers": 0, "project": str(runs), "name": "f",
                                          "val_split": 0.25}))
    assert r["best_val_acc"] >= 0.75  # three easy shapes
    assert "skipped 3 unreadable image file(s)" in capsys.readouterr().err
    held_out = daxiao.evaluate(runs / "f")  # the training folder, split as in training: only its val part
    assert held_out["split"] == "val" and held_out["n"] == 9  # ceil(25 % of the 33 readable images)
    results = daxiao.predict(runs / "f", [image_folder / "square"])
    assert all(x["top"][0]["class"] == "square" for x in results if "error" not in x)
    assert sum("error" in x for x in results) == 1  # notes.jpg, reported rather than fatal


@pytest.mark.parametrize(("fp32_s", "bf16_s", "expected"), [(1.0, 0.80, True), (1.0, 0.90, False), (1.0, 2.0, False)])
def test_precision_auto_keeps_bf16_only_when_it_is_15_percent_faster(monkeypatch, fp32_s, bf16_s, expected):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    monkeypatch.setattr(precision, "median_seconds", lambda work: work())  # the "seconds" are what work returns
    assert precision.choose_bf16("auto", cpu, lambda bf16: bf16_s if bf16 else fp32_s) is expected
    assert precision.choose_bf16("fp32", cpu, lambda bf16: 1 / 0) is False  # a fixed choice times nothing
    assert precision.choose_bf16("bf16", cpu, lambda bf16: 1 / 0) is True
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert precision.choose_bf16("auto", cpu, lambda bf16: 1 / 0) is False


def test_precision_probe_leaves_the_model_and_random_stream_untouched():
    model = daxiao.create_model("seed-cnn", num_classes=10, in_chans=1, input_size=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RunConfig.from_dict({"precision": "auto"}).validate()
    bundle = load_data(cfg.data, 0)
    torch.manual_seed(5)
    prepare(model, bundle, cfg)
    drawn = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(3))  # the probe ran inside a forked RNG
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
