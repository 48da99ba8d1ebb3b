"""Never trust a file, never lose work: crafted weights metadata, ordered checkpoints, locks, non-finite
loss, signals and resume choices, each through the code paths the CLI uses."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file, save_file

import daxiao
import daxiao.models.factory as factory
from daxiao.cli import main
from daxiao.config import RunConfig, load_yaml
from daxiao.errors import DaxiaoError
from daxiao.files import FolderLock
from daxiao.interrupt import resume_command
from daxiao.models.saved import load_run, read_description, read_meta
from daxiao.training.callbacks import LambdaCallback


def cfg_for(runs: Path, name: str, **kw) -> RunConfig:
    return RunConfig.from_dict({"project": str(runs), "name": name, "precision": "fp32", "model": "seed-tiny-cnn",
                                "epochs": 2, **kw}).validate()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    daxiao.train(cfg_for(runs, "good"), verbose=False)
    return runs / "good"


# ---- weights metadata is data ---------------------------------------------------------------------------
def craft(tmp_path: Path, trained: Path, change, name: str = "crafted.safetensors") -> Path:
    """best.safetensors of a real run with its description edited by `change(meta)`."""
    src = trained / "best.safetensors"
    meta = read_description(src)
    change(meta)
    path = tmp_path / name
    save_file(load_file(str(src)), str(path), metadata={"daxiao": json.dumps(meta)})
    return path


def timm_kwargs(m):
    m.update(model="resnet18", model_args={**m["model_args"], "pretrained_cfg_overlay": {"url": "http://x/w.pth"}})


@pytest.mark.parametrize("change,expect", [
    (timm_kwargs, "takes no option 'pretrained_cfg_overlay'"),
    (lambda m: m["model_args"].update(checkpoint_path="/etc/passwd"), "takes no option 'checkpoint_path'"),
    (lambda m: m["model_args"].update(pretrained=True), "takes no option 'pretrained'"),
    (lambda m: m["preprocess"].update(image_size=60000), "preprocess.image_size is 60000"),
    (lambda m: m["model_args"].update(input_size=100000), "model_args.input_size is 100000"),
    (lambda m: m["model_args"].update(filters=10**9), "model_args.filters is 1000000000"),
    (lambda m: m["model_args"].update(num_classes="10"), "model option num_classes must be int"),
    (lambda m: m.update(classes="0123456789"), "classes must be a list"),
    (lambda m: m.update(model="no-such-net"), "'no-such-net' is not in the zoo"),
    (lambda m: m.update(model="timm:hf-hub:evil/repo"), "is not a model name"),
    (lambda m: m.update(model="timm:not_a_timm_model"), "names no timm model"),
    (lambda m: m.update(hooks="os.system"), "'hooks' is not a key daxiao writes"),
    (lambda m: m["preprocess"].update(std=[0.0]), "preprocess.std must be positive"),
    (lambda m: m["model_args"].update(filters=4096), "does not match the tensors it holds"),
])
def test_crafted_metadata_is_refused_with_nothing_built_or_fetched(tmp_path, trained, monkeypatch, capsys,
                                                                   change, expect):
    built, fetched = [], []
    real = factory.create_model

    def recording(*a, **k):  # where each model would be built: "meta" allocates nothing
        built.append(torch.empty(0).device.type)
        return real(*a, **k)

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: fetched.append((a, k)))  # timm_zoo imports it late
    monkeypatch.setattr("daxiao.models.saved.create_model", recording)
    path = craft(tmp_path, trained, change)
    with pytest.raises(DaxiaoError) as e:
        load_run(path)
    assert expect in str(e.value) and str(path) in str(e.value)
    assert not fetched  # timm.create_model never reached
    assert set(built) <= {"meta"}  # at most the shape check's build on the meta device: nothing real
    assert main(["predict", str(path), str(tmp_path)]) == 2  # the CLI: one line, exit 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and expect in " ".join(err)


def test_undeclared_model_options_are_refused_by_create_model():
    with pytest.raises(DaxiaoError, match="takes no option 'pretrained_cfg_overlay'"):
        daxiao.create_model("timm:resnet10t", pretrained_cfg_overlay={"file": "/etc/passwd"})
    with pytest.raises(DaxiaoError, match="takes no option 'alpha'"):
        daxiao.create_model("seed-cnn", alpha=0.5)


def test_real_weights_still_load(trained):
    run = load_run(trained)
    assert run.name == "seed-tiny-cnn" and read_meta(trained / "last.safetensors")["epoch"] == 2


# ---- ordered, verified checkpoints ------------------------------------------------------------------------
def test_state_names_its_epoch_and_holds_its_weights(trained):
    state = read_description(trained / "last.state.safetensors")
    assert state["epoch"] == 2 == read_meta(trained / "last.safetensors")["epoch"]
    tensors = load_file(str(trained / "last.state.safetensors"))
    last = load_file(str(trained / "last.safetensors"))
    assert all(torch.equal(tensors[f"model/{k}"], v) for k, v in last.items())
    assert read_description(trained / "last.state.prev.safetensors")["epoch"] == 1  # one generation back


def test_empty_config_is_never_read_as_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("")
    with pytest.raises(DaxiaoError, match="is empty"):
        load_yaml(tmp_path / "c.yaml")


def test_resume_with_an_empty_config_uses_the_state_not_the_defaults(tmp_path, capsys):
    daxiao.train(cfg_for(tmp_path, "r", epochs=1), verbose=False)
    (tmp_path / "r" / "config.yaml").write_text("")  # what a kill during a non-atomic write used to leave
    r = daxiao.train(cfg_for(tmp_path, "r", epochs=2, resume=True, model="seed-cnn"), verbose=False)
    assert r["model"].daxiao_name == "seed-tiny-cnn" and len(r["history"]) == 2
    assert "Using the config saved with the training state" in capsys.readouterr().err


def test_resume_refuses_a_config_changed_under_it(tmp_path):
    daxiao.train(cfg_for(tmp_path, "r", epochs=1), verbose=False)
    path = tmp_path / "r" / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    assert saved["optim"]["lr"] != 0.5
    saved["optim"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(saved))
    with pytest.raises(DaxiaoError, match=r"trained with other settings \(optim.lr"):
        daxiao.train(cfg_for(tmp_path, "r", epochs=2, resume=True), verbose=False)


def test_an_unreadable_state_falls_back_one_generation(tmp_path, capsys):
    daxiao.train(cfg_for(tmp_path, "g", epochs=2), verbose=False)
    (tmp_path / "g" / "last.state.safetensors").write_bytes(b"\0" * 100)
    r = daxiao.train(cfg_for(tmp_path, "g", epochs=3, resume=True), verbose=False)
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3]
    err = capsys.readouterr().err
    assert "resuming from the generation before it (epoch 1)" in err and "rewritten from the saved state" in err


def test_exist_ok_removes_the_old_runs_weights_before_writing_its_config(tmp_path):
    daxiao.train(cfg_for(tmp_path, "x", epochs=1), verbose=False)
    seen = {}

    def look(logs=None):
        seen["files"] = sorted(p.name for p in (tmp_path / "x").iterdir())

    daxiao.train(cfg_for(tmp_path, "x", epochs=1, exist_ok=True, model="seed-cnn"), verbose=False,
                 callbacks=[LambdaCallback(on_train_begin=look)])
    assert "best.safetensors" not in seen["files"] and "config.yaml" in seen["files"]
    assert read_meta(tmp_path / "x" / "best.safetensors")["model"] == "seed-cnn"


def test_resume_without_name_picks_the_latest_unfinished_run_and_says_which(tmp_path, capsys):
    base = {"project": str(tmp_path), "precision": "fp32", "model": "seed-tiny-cnn"}
    daxiao.train(RunConfig.from_dict({**base, "epochs": 1}), verbose=False)       # seed-tiny-cnn-digits: done
    with pytest.raises(KeyboardInterrupt):  # seed-tiny-cnn-digits-2: cut after epoch 1 of 3
        daxiao.train(RunConfig.from_dict({**base, "epochs": 3}), verbose=False, callbacks=[
            LambdaCallback(on_epoch_begin=lambda e, logs=None: (_ for _ in ()).throw(KeyboardInterrupt) if e else 0)])
    capsys.readouterr()
    assert main(["train", "--resume", "--project", str(tmp_path), "--model", "seed-tiny-cnn"]) == 0
    err = capsys.readouterr().err
    assert f"resuming {tmp_path / 'seed-tiny-cnn-digits-2'}" in err and "1 of 3 epochs done" in err
    assert read_meta(tmp_path / "seed-tiny-cnn-digits-2" / "last.safetensors")["epoch"] == 3


def test_corrupt_feature_cache_is_recomputed_with_a_warning(tmp_path, capsys):
    from daxiao.config import DataConfig
    from daxiao.data import load_data
    from daxiao.training.features import cached_features, clear_memory_cache

    model = daxiao.create_model("seed-tiny-cnn", num_classes=10, in_chans=1, input_size=8, head="linear")
    bundle = load_data(DataConfig(), 0)
    first = cached_features(model, bundle.val, bundle.preprocess, "disk", tmp_path, verbose=False)
    (cache,) = tmp_path.glob("*.safetensors")
    cache.write_bytes(cache.read_bytes()[:50])
    clear_memory_cache()
    again = cached_features(model, bundle.val, bundle.preprocess, "disk", tmp_path, verbose=False)
    assert torch.equal(first, again) and "is damaged" in capsys.readouterr().err
    assert len(load_file(str(cache))["features"]) == len(bundle.val)  # replaced by a good file


# ---- locks -------------------------------------------------------------------------------------------------
def test_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    with FolderLock(tmp_path / "run"):
        with pytest.raises(DaxiaoError, match=f"in use by process {os.getpid()}"):
            FolderLock(tmp_path / "run").acquire()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    with FolderLock(tmp_path / "run") as lock:
        assert lock.took_over["pid"] == int(dead.stdout)
    (tmp_path / "run" / ".lock").write_text(json.dumps({"pid": 1, "host": "another-machine"}))
    with pytest.raises(DaxiaoError, match="locked by process 1 on another-machine.*delete"):
        FolderLock(tmp_path / "run").acquire()


# ---- non-finite loss ---------------------------------------------------------------------------------------
def poison(epoch_at: int, step_at: int) -> LambdaCallback:
    cb = LambdaCallback()
    cb.epoch = -1

    def begin(epoch, logs=None):
        cb.epoch = epoch

    def loss(batch, logits, value):
        return value * float("nan") if (cb.epoch, poison.step) == (epoch_at, step_at) else value

    def step(s, logs=None):
        poison.step = s

    cb.on_epoch_begin, cb.on_train_loss, cb.on_train_batch_begin = begin, loss, step
    return cb


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_weights(tmp_path):
    with pytest.raises(DaxiaoError, match=r"NaN or inf at epoch 2, step 4 of \d+ .*lower learning rate"):
        daxiao.train(cfg_for(tmp_path, "nan", epochs=3), verbose=False, callbacks=[poison(1, 3)])
    assert read_meta(tmp_path / "nan" / "last.safetensors")["epoch"] == 1
    assert read_description(tmp_path / "nan" / "last.state.safetensors")["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / "nan" / "last.safetensors")).values())


def test_a_diverging_tune_trial_is_failed_with_the_reason(tmp_path):
    from daxiao.tune import TuneSettings, tune

    cfg = cfg_for(tmp_path, None, epochs=1, optimizer="sgd", schedule="constant")
    cfg.name = None
    r = tune(cfg, TuneSettings(space={"lr": "0.01,1000000"}, sampler="grid", cv=0), verbose=False)
    assert r["trials"] == {"complete": 1, "pruned": 0, "fail": 1}
    rows = (tmp_path / "tune-digits" / "trials.csv").read_text()
    assert "NonFiniteLoss: the training loss became NaN or inf at epoch 1" in rows


# ---- signals -----------------------------------------------------------------------------------------------
def test_resume_command_points_at_the_real_folder():
    cmd = resume_command(["train", "--epochs", "5", "--name=x", "--exist-ok", "--project", "p"], Path("p/x-2"))
    assert cmd == "daxiao train --epochs 5 --resume --name x-2 --project p"


def cli(*a: str) -> list[str]:
    return [sys.executable, "-m", "daxiao", *a]


def paused(cmd: list[str], flag: Path, where: str, epoch: int) -> subprocess.Popen:
    env = {**os.environ, "DAXIAO_TEST_PAUSE_IN_WRITE": where, "DAXIAO_TEST_PAUSE_EPOCH": str(epoch),
           "DAXIAO_TEST_PAUSE_FLAG": str(flag)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while not flag.exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    return proc


def test_sigterm_saves_and_prints_the_command_that_resumes_this_run(tmp_path):
    train = ["train", "--model", "seed-tiny-cnn", "--epochs", "3", "--precision", "fp32", "--project", str(tmp_path)]
    daxiao.train(RunConfig.from_dict({"project": str(tmp_path), "model": "seed-tiny-cnn", "epochs": 1}),
                 verbose=False)  # so the next unnamed run is seed-tiny-cnn-digits-2
    proc = paused(cli(*train), tmp_path / "flag", "best", 2)  # epoch 2's state is committed
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = next(x for x in err.splitlines() if "Continue with:" in x)
    assert "terminated (SIGTERM); epoch 2 is saved" in line
    command = line.split("Continue with: ")[1]
    assert "--resume --name seed-tiny-cnn-digits-2" in command
    r = subprocess.run(cli(*shlex.split(command)[1:]), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert read_meta(tmp_path / "seed-tiny-cnn-digits-2" / "last.safetensors")["epoch"] == 3


def test_interrupted_before_any_epoch_says_nothing_was_saved(tmp_path):
    train = ["train", "--model", "seed-tiny-cnn", "--epochs", "3", "--project", str(tmp_path), "--name", "n"]
    proc = paused(cli(*train), tmp_path / "flag", "state", 1)  # inside epoch 1's checkpoint, before the commit
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "nothing was saved yet" in err and "--exist-ok --name n" in err


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    script = ("import time\nfrom daxiao.interrupt import handle_signals\nwith handle_signals():\n"
              "    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n"
              "        print('cleaning up', flush=True)\n        time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "cleaning up"
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    assert proc.returncode == 130 and time.time() - t0 < 5


def test_tune_interrupted_writes_its_tables_and_the_resume_command(tmp_path):
    args = cli("tune", "--model", "seed-tiny-cnn", "--project", str(tmp_path), "--name", "study", "--space",
               "lr=0.001,0.002,0.003", "--epochs", "30", "--sampler", "grid", "--cv", "0", "--pruner", "none",
               "--precision", "fp32", "--threads", "1")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import optuna

    from daxiao.tune.study import open_storage

    deadline, journal = time.time() + 300, tmp_path / "study" / "study.journal"

    def completed() -> bool:
        try:
            trials = optuna.load_study(study_name="study", storage=open_storage(None, journal.parent)).trials
        except KeyError:  # the journal exists, the study is not created in it yet
            return False
        return any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    while time.time() < deadline and not (journal.exists() and completed()):
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert (tmp_path / "study" / "trials.csv").is_file() and (tmp_path / "study" / "best.yaml").is_file()
    assert "finished trial(s) is saved" in err and "--resume --name study" in err
