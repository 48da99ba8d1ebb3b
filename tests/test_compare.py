"""compare: every output file from a tiny run, a correct Pareto flag, --resume, and bad input before training."""

from __future__ import annotations

import csv
import json

import pytest

import daxiao.compare.runner as compare_mod
from daxiao.cli import main
from daxiao.compare.runner import compare, pareto_flags
from daxiao.config import DataConfig, RunConfig
from daxiao.config.parsing import split_top_level as split_models
from daxiao.data import load_data, make_loader, subset
from daxiao.errors import DaxiaoError
from daxiao.models.saved import load_run
from daxiao.training.loop import evaluate

TINY = (200, 60, 60)  # stratified train / val / test images of digits: seconds, not minutes


def recipe(runs, **kw) -> RunConfig:
    return RunConfig.from_dict({"project": str(runs), "name": "cmp", "precision": "fp32", **kw})


def test_pareto_flags_on_a_constructed_example():
    #            acc   latency
    points = [(0.90, 1.0),   # fastest: optimal
              (0.95, 5.0),   # more accurate for more time: optimal
              (0.93, 6.0),   # slower and less accurate than the 0.95 one: dominated
              (0.99, 20.0),  # most accurate: optimal
              (0.95, 7.0),   # ties the 0.95 one on accuracy but slower: dominated
              (0.89, 1.0)]   # as fast as the first, less accurate: dominated
    acc, lat = zip(*points, strict=True)
    assert pareto_flags(list(acc), list(lat)) == [True, True, False, True, False, False]
    assert pareto_flags([0.9, 0.9], [1.0, 1.0]) == [True, True]  # exact ties dominate nobody


def test_compare_writes_every_output_and_resume_reuses(runs, monkeypatch):
    r = compare(recipe(runs), "seed-tiny-cnn,seed-cnn[lr=0.003]", epochs=2, limits=TINY, repeats=3, verbose=False)
    folder = runs / "cmp"
    for name in ("compare.csv", "compare.json", "pareto.png", "curves.png", "report.html"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 500, name
    for slug in ("seed-tiny-cnn", "seed-cnn-lr-0.003"):
        assert (folder / slug / "best.safetensors").is_file() and (folder / slug / "done.json").is_file()
    rows = list(csv.DictReader(open(folder / "compare.csv")))
    assert [x["label"] for x in rows] == ["seed-tiny-cnn", "seed-cnn[lr=0.003]"]
    saved = json.loads((folder / "compare.json").read_text())["rows"]
    assert [x["pareto"] for x in saved] == pareto_flags([x["test_acc"] for x in saved],
                                                        [x["latency_ms"] for x in saved])
    assert all(len(x["history"]) == 2 and x["params"] > 0 and x["test_acc"] >= 0.6 for x in saved)
    test = subset(load_data(DataConfig(), 0), *TINY, seed=0).test  # the compare's own test subset
    for x, slug in zip(saved, ("seed-tiny-cnn", "seed-cnn-lr-0.003"), strict=True):
        run = load_run(folder / slug)  # scored again from the saved weights: the table is what they give
        assert evaluate(run.model, make_loader(test, 256, run.preprocess))["acc"] == pytest.approx(x["test_acc"])
    assert r["rows"][1]["test_split"] == "test"
    html = (folder / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "seed-cnn[lr=0.003]" in html

    def no_training(*a, **k):
        raise AssertionError("--resume must reuse finished models")

    monkeypatch.setattr(compare_mod, "train", no_training)
    again = compare(recipe(runs, resume=True), "seed-tiny-cnn,seed-cnn[lr=0.003]", epochs=2, limits=TINY,
                    repeats=3, verbose=False)
    assert [x["test_acc"] for x in again["rows"]] == [x["test_acc"] for x in r["rows"]]
    with pytest.raises(DaxiaoError, match="exists; pass --resume"):
        compare(recipe(runs), "seed-tiny-cnn", epochs=1, limits=TINY, verbose=False)


def test_a_given_run_is_measured_not_trained(runs, monkeypatch):
    assert main(["train", "--epochs", "1", "--project", str(runs), "--name", "given", "--precision", "fp32"]) == 0
    monkeypatch.setattr(compare_mod, "train", lambda *a, **k: pytest.fail("a given run must not be trained"))
    r = compare(recipe(runs, name="g"), [str(runs / "given")], repeats=3, verbose=False)
    assert r["rows"][0]["epochs"] == 1 and r["rows"][0]["test_split"] == "test" and r["rows"][0]["pareto"]


def test_budget_fits_epochs(runs, monkeypatch):
    measured = []
    real = compare_mod.seconds_per_epoch
    monkeypatch.setattr(compare_mod, "seconds_per_epoch", lambda *a: measured.append(real(*a)) or 0.07)
    r = compare(recipe(runs), "seed-tiny-cnn", budget_minutes=0.005, limits=TINY, repeats=3, verbose=False)
    assert measured and measured[0] > 0  # the probe ran; its figure is replaced so the test holds on any load
    assert r["rows"][0]["epochs"] == 4 and r["recipe"]["budget"] == "0.005 min per model"  # floor(0.3 s / 0.07 s)


def test_split_models_respects_brackets():
    assert split_models("a, b[alpha=0.5,drop_rate=0.1] ,c,") == ["a", "b[alpha=0.5,drop_rate=0.1]", "c"]


@pytest.mark.parametrize("argv,expect", [
    (["--models", "resnet-18,seed-cnn,mobilenet_v9,foo"], "unknown models in --models: 'resnet-18' (did you mean "
                                                          "resnet18"),
    (["--models", "resnet-18,seed-cnn,mobilenet_v9,foo"], "'foo'"),
    (["--models", " , "], "--models is empty"),
    (["--models", "seed-cnn[alpha]"], "settings are key=value"),
    (["--models", "seed-cnn[optimizer=adma]"], "Did you mean: adam"),
    (["--models", "seed-cnn,seed-tiny-cnn", "--budget-minutes", "1e-5"], "too small for one epoch of seed-cnn"),
    (["--models", "seed-cnn", "--epochs", "2", "--budget-minutes", "1"], "not both"),
])
def test_bad_input_is_one_line_before_any_training(capsys, runs, monkeypatch, argv, expect):
    monkeypatch.setattr(compare_mod, "train", lambda *a, **k: pytest.fail("nothing may train on bad input"))
    assert main(["compare", *argv, "--project", str(runs), "--train-images", "200", "--val-images", "60",
                 "--precision", "fp32"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and expect in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err


def test_cli_demo_and_compare_end_to_end(tmp_path, capsys):
    """The README's headline commands through the CLI: the table on stdout and report.html on disk."""
    assert main(["demo", "--models", "seed-tiny-cnn,seed-cnn", "--epochs", "2", "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "seed-tiny-cnn" in out and "seed-cnn" in out and "Pareto" in out
    assert (tmp_path / "compare-digits" / "report.html").stat().st_size > 2000
    argv = ["compare", "--models", "seed-tiny-cnn,seed-cnn[lr=0.003]", "--epochs", "1", "--train-images", "200",
            "--val-images", "60", "--test-images", "60", "--repeats", "3", "--project", str(tmp_path), "--name", "c"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "seed-cnn[lr=0.003]" in out and "wrote" in out
    rows = json.loads((tmp_path / "c" / "compare.json").read_text())["rows"]
    assert [r["epochs"] for r in rows] == [1, 1] and all(r["test_split"] == "test" for r in rows)


def test_the_readme_demo_command_with_its_default_models(tmp_path):
    """`daxiao demo` (what `make demo` runs) with its default models and augmentation; one epoch at 16 px
    instead of twenty at 32, which take about 8 minutes on 2 cores: the same code path, a fraction of the time."""
    assert main(["demo", "--epochs", "1", "--image-size", "16", "--project", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "compare-digits" / "compare.json").read_text())
    assert len(result["rows"]) == 2 and (tmp_path / "compare-digits" / "report.html").is_file()
    assert result["recipe"]["augment"] == "light"  # the ImageNet-style models' own from-scratch setting
