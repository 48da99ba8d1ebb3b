"""--deterministic: SIGKILL at any moment (mid-epoch, between two checkpoint files), then --resume, ends
with weights bit-identical to an uninterrupted run. Real processes, real SIGKILLs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from daxiao.models.saved import read_description

# dropout draws from the RNG every step: the resumed run must restore the generator exactly, too
TRAIN = ["train", "--model", "seed-tiny-cnn", "--epochs", "5", "--batch-size", "32", "--deterministic",
         "--precision", "fp32", "--threads", "1", "--drop-rate", "0.2"]


def args(project: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "daxiao", *TRAIN, "--project", str(project), "--name", name, *extra]


def start(cmd: list[str], **env: str) -> subprocess.Popen:
    log = open(Path(cmd[cmd.index("--project") + 1]) / f"{cmd[cmd.index('--name') + 1]}.log", "w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, text=True, env={**os.environ, **env},
                            start_new_session=True)
    proc.log = log
    return proc


def wait_for(cond, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            proc.log.seek(0)
            pytest.fail(f"training ended before the kill point: {proc.log.read()[-2000:]}")
        if time.time() > deadline:
            pytest.fail("kill point never reached")
        time.sleep(0.02)


def saved_epoch(run: Path) -> int:
    try:
        return read_description(run / "last.state.safetensors")["epoch"]
    except Exception:
        return 0


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.log.close()


def same(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("kill")
    r = subprocess.run(args(project, "straight"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return project


@pytest.mark.parametrize("point", ["mid-epoch", "between weights and state", "between state and best"])
def test_sigkill_then_resume_is_bit_identical(reference, point):
    project, name = reference, f"cut-{point.replace(' ', '-')}"
    run = project / name
    if point == "mid-epoch":  # a random moment after the first epoch was saved
        proc = start(args(project, name))
        wait_for(lambda: saved_epoch(run) >= 1, proc)
        # at most a fraction of the 4 epochs still to run (~0.1 s each here): a longer sleep could let the
        # run finish first, and the test would then fail for want of anything to kill
        time.sleep(random.Random(os.getpid()).uniform(0.0, 0.15))
    else:
        flag = project / f"{name}.paused"
        where = "state" if "weights" in point else "best"
        proc = start(args(project, name), DAXIAO_TEST_PAUSE_IN_WRITE=where, DAXIAO_TEST_PAUSE_EPOCH="3",
                     DAXIAO_TEST_PAUSE_FLAG=str(flag))
        wait_for(flag.exists, proc)
        if where == "state":  # the kill lands with epoch 3's weights written and epoch 2's state
            assert read_description(run / "last.safetensors")["epoch"] == 3 and saved_epoch(run) == 2
    kill(proc)
    assert (run / ".lock").exists()  # left behind by the killed process: stale, to be taken over
    r = subprocess.run([sys.executable, "-m", "daxiao", "train", "--resume", "--name", name, "--project",
                        str(project)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "took over the lock" in r.stderr
    for f in ("last.safetensors", "best.safetensors"):
        assert same(project / "straight" / f, run / f), f"{f} differs after a kill {point}"
    assert (project / "straight" / "metrics.csv").read_text().count("\n") == (run / "metrics.csv").read_text().count(
        "\n")


def test_a_second_process_on_the_same_run_gets_one_line(reference, tmp_path):
    flag = tmp_path / "paused"
    proc = start(args(tmp_path, "busy"), DAXIAO_TEST_PAUSE_IN_WRITE="state", DAXIAO_TEST_PAUSE_EPOCH="1",
                 DAXIAO_TEST_PAUSE_FLAG=str(flag))
    try:
        wait_for(flag.exists, proc)
        r = subprocess.run(args(tmp_path, "busy", "--exist-ok"), capture_output=True, text=True, timeout=600)
        assert r.returncode == 2
        lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
        assert len(lines) == 1 and "is in use by process" in lines[0] and str(proc.pid) in lines[0]
    finally:
        kill(proc)
