"""`evaluate`'s numbers are scikit-learn's, and predictions.csv lists exactly what the model predicts."""

from __future__ import annotations

import csv

import pytest
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

import daxiao
from daxiao.config import RunConfig
from daxiao.data import load_data, make_loader
from daxiao.inference.report import csv_safe


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    daxiao.train(RunConfig.from_dict({"project": str(runs), "name": "ev", "epochs": 2, "precision": "fp32",
                                      "model": "seed-tiny-cnn"}), verbose=False)
    return runs / "ev"


def test_per_class_metrics_and_predictions_csv_match_an_independent_pass(run, tmp_path):
    report = daxiao.evaluate(run, split="test", out_dir=tmp_path)
    loaded = daxiao.load_run(run)
    test = load_data(loaded.config.data, loaded.config.train.seed, preprocess=loaded.preprocess).test
    with torch.no_grad():
        preds = torch.cat([loaded.model(b.inputs).argmax(1) for b in make_loader(test, 97, loaded.preprocess)])
    y, p = test.labels.numpy(), preds.numpy()
    assert report["n"] == len(y) and report["acc"] == pytest.approx(accuracy_score(y, p))
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=list(range(10)), zero_division=0)
    for i, c in enumerate(loaded.classes):
        got = report["per_class"][c]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx(
            (prec[i], rec[i], f1[i], sup[i]))
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv", newline="")))
    assert len(rows) == len(y)
    for i, row in enumerate(rows):
        assert row["item"] == str(i) and row["true"] == str(y[i]) and row["predicted"] == str(p[i])
        assert row["correct"] == str(int(y[i] == p[i]))


def test_csv_cells_cannot_become_spreadsheet_formulas():
    assert [csv_safe(x) for x in ("=cmd()", "+1", "-2", "@sum", "cat", "猫")] == [
        "'=cmd()", "'+1", "'-2", "'@sum", "cat", "猫"]
