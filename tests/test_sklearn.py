"""`daxiao.sklearn.ImageClassifier`: the article's GridSearchCV code as written, and a well-behaved estimator."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score, cross_validate
from torch import nn

from daxiao.errors import DaxiaoError
from daxiao.sklearn import ImageClassifier

ROOT = Path(__file__).resolve().parents[1]
digits = load_digits()
X, y = digits.images[..., None], digits.target  # (N, 8, 8, 1): Keras' layout


def create_model(optimizer="adam", activation="relu"):  # the article's function, in PyTorch
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    return nn.Sequential(nn.Conv2d(1, 32, (3, 3)), act(), nn.Flatten(), nn.Linear(32 * 6 * 6, 10))


def test_the_articles_grid_search_runs_as_written():
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "seed_grid_search.py"), "--quick"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    best = r.stdout.splitlines()[0]
    assert best.startswith("Best: 0.9") and "'optimizer':" in best and "'activation':" in best, r.stdout
    assert float(r.stdout.splitlines()[1].split()[-1]) > 0.9  # the refit model on held-out digits


def test_grid_search_in_process_with_a_builder_and_its_own_keywords():
    def builder(activation="relu", width=32):
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        return nn.Sequential(nn.Conv2d(1, width, 3), act(), nn.Flatten(), nn.Linear(width * 36, 10))

    est = ImageClassifier(build_fn=builder, epochs=2, batch_size=64, width=8)
    grid = GridSearchCV(est, {"activation": ["relu", "tanh"], "width": [8, 16]}, cv=2).fit(X[:600], y[:600])
    assert len(grid.cv_results_["params"]) == 4 and grid.best_score_ > 0.6
    assert grid.best_estimator_.model_[0].out_channels == grid.best_params_["width"]


def test_random_search_and_cross_val_score():
    est = ImageClassifier(model="seed-tiny-cnn", epochs=2, batch_size=64)
    rs = RandomizedSearchCV(est, {"lr": [1e-3, 3e-3, 1e-2], "optimizer": ["adam", "sgd"]}, n_iter=3, cv=2,
                            random_state=0).fit(X[:600], y[:600])
    assert len(rs.cv_results_["params"]) == 3
    scores = cross_val_score(ImageClassifier(model="seed-tiny-cnn", epochs=3, batch_size=32), X[:900], y[:900], cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.85


def test_parallel_workers_are_single_threaded_on_this_machine():
    # joblib's loky workers give torch cores // n_jobs threads: 2 workers on 2 cores -> 1 thread each.
    est = ImageClassifier(model="seed-tiny-cnn", epochs=1, batch_size=64)
    out = cross_validate(est, X[:400], y[:400], cv=2, n_jobs=2, return_estimator=True)
    import os

    cores = len(os.sched_getaffinity(0))
    assert all(e.threads_used_ == max(1, cores // 2) for e in out["estimator"])


def test_fit_learns_and_round_trips_through_pickle_and_clone():
    est = ImageClassifier(model="seed-tiny-cnn", epochs=5, batch_size=32, seed=3, activation="tanh")
    est.fit(X[:1400], y[:1400])
    assert est.score(X[1400:], y[1400:]) > 0.9
    assert list(est.classes_) == list(range(10)) and len(est.history_) == 5
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict_proba(X[1400:]), est.predict_proba(X[1400:]))
    c = clone(est)
    assert c.get_params() == est.get_params() and not hasattr(c, "model_")


def test_every_image_layout_and_string_labels_give_the_same_model():
    names = np.array(["zero", "one", "two"])[y[:300] % 3]
    layouts = [digits.data[:300], digits.images[:300], digits.images[:300, ..., None], digits.images[:300, None]]
    probs = [ImageClassifier(model="seed-tiny-cnn", epochs=1, batch_size=50).fit(x, names).predict_proba(x)
             for x in layouts]
    for p in probs[1:]:
        np.testing.assert_allclose(p, probs[0], atol=1e-6)
    est = ImageClassifier(model="seed-tiny-cnn", epochs=1).fit(layouts[0], names)
    assert set(est.predict(layouts[0])) <= {"zero", "one", "two"}


def test_keyword_unknown_to_the_estimator_reaches_the_model_and_survives_clone():
    est = ImageClassifier(model="mobilenet-v1", alpha=0.25, epochs=1)
    assert clone(est).get_params()["alpha"] == 0.25
    est.set_params(alpha=0.5)
    assert est.alpha == 0.5


@pytest.mark.parametrize("kwargs,xy,expect", [
    ({}, (X[:20], np.eye(10)[y[:20]]), "one class label per image"),
    ({}, (np.zeros((20, 8, 6)), y[:20]), "square images"),
    ({}, (np.zeros((20, 7)), y[:20]), "not a square number"),
    ({}, (X[:20], np.zeros(20)), "single class"),
    ({"build_fn": lambda: nn.Linear(3, 3)}, (X[:20], y[:20] % 2), "network fails on"),
    ({"build_fn": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 3))}, (X[:20], y[:20] % 2), "outputs shape"),
    ({"optimizer": "adma"}, (X[:20], y[:20]), "Did you mean: adam"),
])
def test_bad_input_is_one_clear_error(kwargs, xy, expect):
    with pytest.raises(DaxiaoError, match=expect):
        ImageClassifier(**{"epochs": 1, **kwargs}).fit(*xy)
