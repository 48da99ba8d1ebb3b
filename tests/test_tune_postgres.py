"""Tuning studies shared through a real PostgreSQL server (a throwaway cluster, tests/pgserver.py): workers
started at once, every grid point once between them, a SIGKILLed worker's trial retried by the other."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pgserver
import pytest
from optuna.trial import TrialState

import daxiao
from daxiao.cli import main
from daxiao.tune.storage import database_url, open_storage

GRID = ["--sampler", "grid", "--cv", "0", "--precision", "fp32", "--schedule", "constant", "--threads", "1"]


@pytest.fixture(scope="module")
def pg():
    reason = pgserver.why_not()
    if reason:
        pytest.skip(reason)
    with pgserver.server() as url:
        yield url


@pytest.fixture
def db(pg, request) -> str:
    return pgserver.create_database(pg, request.node.name.replace("[", "_").replace("]", "").lower())


def worker(url: str, project: Path, log: Path, *argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(daxiao.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "daxiao", "tune", "--model", "seed-tiny-cnn", *GRID, "--storage", url,
           "--study", "shared", "--project", str(project), *argv]
    return subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="shared", storage=database_url(url)).get_trials()


def test_postgresql_urls_name_the_installed_driver():
    assert database_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert database_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"  # as written
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"


def _open(url: str, barrier, results) -> None:
    barrier.wait()  # all at the same moment, on an empty database: Optuna's schema creation races here
    try:
        open_storage(url, Path("/tmp"))
        results.put("ok")
    except Exception as e:
        results.put(f"{type(e).__name__}: {e}")


def test_workers_opening_an_empty_database_at_once_all_get_it(db):
    ctx = multiprocessing.get_context("fork")  # the children only talk to the database
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(db, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4


def test_two_workers_run_each_grid_point_once_and_any_machine_reports(db, tmp_path, capsys):
    space = ["--space", "optimizer=adam,sgd", "lr=0.001,0.002,0.003", "--epochs", "1"]
    procs = [worker(db, tmp_path / f"m{i}", tmp_path / f"w{i}.log", *space) for i in range(2)]  # started at once
    for i, p in enumerate(procs):
        assert p.wait(240) == 0, (tmp_path / f"w{i}.log").read_text()[-3000:]
    ts = trials(db)
    assert len(ts) == 6 and all(t.state == TrialState.COMPLETE for t in ts)
    assert sorted((t.params["optimizer"], t.params["lr"]) for t in ts) == sorted(
        (o, lr) for o in ("adam", "sgd") for lr in (0.001, 0.002, 0.003))  # every point, exactly once
    assert len({t.user_attrs["worker"] for t in ts}) == 2  # both workers trained
    assert all(t.value > 0.3 for t in ts)

    capsys.readouterr()
    assert main(["tune", "--storage", db, "--study", "shared", "--report", "--project", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "shared: 6 complete" in out.err + out.out
    assert len((tmp_path / "r" / "shared" / "trials.csv").read_text().splitlines()) == 7
    assert (tmp_path / "r" / "shared" / "history.png").is_file() and (tmp_path / "r" / "shared" / "best.yaml").is_file()

    # a worker with another recipe is refused, in one line
    assert main(["tune", "--model", "seed-tiny-cnn", *GRID, "--space", "optimizer=adam", "--storage", db,
                 "--study", "shared", "--project", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "was started with other settings" in err and "space" in err and err.count("\n") == 1


def test_a_killed_workers_trial_is_retried_by_the_other(db, tmp_path):
    space = ["--space", "optimizer=adam,sgd", "lr=0.001,0.003", "--epochs", "6", "--heartbeat", "1"]
    victim = worker(db, tmp_path / "v", tmp_path / "v.log", *space)
    survivor = worker(db, tmp_path / "s", tmp_path / "s.log", *space)
    killed, deadline = None, time.time() + 120
    while killed is None and time.time() < deadline:
        time.sleep(0.2)
        try:
            running = [t for t in trials(db) if t.state == TrialState.RUNNING and t.params  # its grid point drawn
                       and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")]
        except KeyError:  # the study is not created yet
            continue
        if running:
            os.kill(victim.pid, signal.SIGKILL)  # mid-trial: no chance to mark anything
            killed = running[0].number
    assert killed is not None, (tmp_path / "v.log").read_text()[-3000:]
    victim.wait(10)
    assert survivor.wait(240) == 0, (tmp_path / "s.log").read_text()[-3000:]
    ts = trials(db)
    by_number = {t.number: t for t in ts}
    assert by_number[killed].state == TrialState.FAIL  # failed by the survivor once its heartbeat went stale
    done = [t for t in ts if t.state == TrialState.COMPLETE]
    assert sorted((t.params["optimizer"], t.params["lr"]) for t in done) == sorted(
        (o, lr) for o in ("adam", "sgd") for lr in (0.001, 0.003))  # the study finished, each point once
    retry = [t for t in done if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].params == by_number[killed].params
    assert retry[0].user_attrs["worker"].endswith(f":{survivor.pid}")
    assert len(ts) == 5  # all trials in the database: four complete and the killed one
