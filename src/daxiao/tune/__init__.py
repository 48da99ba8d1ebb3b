"""Hyperparameter search: `tune(base_config, TuneSettings(space=..., sampler="grid", cv=3))` or `daxiao tune`.

    space.py   names and ranges -> checked parameters (study.suggest turns them into Optuna suggestions)
    cv.py      a trial's score: k folds trained in step, the running mean reported each epoch
    study.py   samplers, pruners, storage, workers, resuming
    report.py  leaderboard, trials.csv, best.yaml, plots
"""

from .cv import cross_validate, cv_folds
from .space import parse_space
from .study import PRUNERS, SAMPLERS, TuneSettings, tune

__all__ = ["PRUNERS", "SAMPLERS", "TuneSettings", "cross_validate", "cv_folds", "parse_space", "tune"]
