"""Data-parallel training (torchrun, DDP over gloo on CPU), devices and precisions.

The two-process runs are real torchrun jobs (`daxiao train --nproc 2`), on digits with seed-tiny-cnn. CUDA
tests run only where a GPU is present.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import daxiao
from daxiao.cli import main
from daxiao.cli.launch import forwarded, torchrun_command
from daxiao.data import TensorSplit
from daxiao.data.loaders import RankSampler, TensorLoader, shard_order
from daxiao.data.preprocess import Preprocess
from daxiao.errors import DaxiaoError
from daxiao.models.saved import read_description, read_meta
from daxiao.training.precision import resolve_device

COMMON = ["--model", "seed-tiny-cnn", "--precision", "fp32", "--schedule", "constant", "--seed", "3"]


def rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def daxiao_cli(*argv: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(daxiao.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "daxiao", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_two_processes_train_like_one_with_the_same_global_batch_and_write_once(tmp_path):
    assert main(["train", *COMMON, "--epochs", "2", "--batch-size", "64", "--project", str(tmp_path / "one"),
                 "--name", "run"]) == 0
    r = daxiao_cli("train", *COMMON, "--epochs", "2", "--batch-size", "32", "--nproc", "2",
                   "--project", str(tmp_path / "two"), "--name", "run")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "x 2 processes (global batch 64 = 32 per process x 2" in r.stderr
    one, two = rows(tmp_path / "one" / "run" / "metrics.csv"), rows(tmp_path / "two" / "run" / "metrics.csv")
    assert [x["epoch"] for x in two] == ["1", "2"]  # written by rank 0 alone: no duplicated rows
    assert float(two[-1]["val_acc"]) > 0.85
    assert abs(float(two[-1]["val_acc"]) - float(one[-1]["val_acc"])) <= 0.03  # the band of one process
    assert abs(float(two[-1]["train_acc"]) - float(one[-1]["train_acc"])) <= 0.03
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["run"]  # one folder, chosen once
    assert r.stderr.count("best val acc") == 1 and r.stderr.count("epoch   2/2") == 1  # one voice: rank 0's
    assert (tmp_path / "two" / "run" / "confusion_matrix.png").is_file()

    # resume: every rank reads the checkpoint rank 0 wrote, the run goes on to epoch 3
    r = daxiao_cli("train", "--project", str(tmp_path / "two"), "--name", "run", "--resume", "--epochs", "3",
                   "--nproc", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    after = rows(tmp_path / "two" / "run" / "metrics.csv")
    assert [x["epoch"] for x in after] == ["1", "2", "3"] and after[:2] == two
    assert float(after[-1]["train_loss"]) < float(two[-1]["train_loss"])  # it continued, not restarted
    assert read_meta(tmp_path / "two" / "run" / "last.safetensors")["epoch"] == 3


def test_a_run_folder_in_use_stops_every_rank_with_one_line(tmp_path):
    from daxiao.files import FolderLock

    with FolderLock(tmp_path / "run", "Run folder"):  # this test process is "the other job"
        r = daxiao_cli("train", *COMMON, "--epochs", "1", "--nproc", "2", "--project", str(tmp_path), "--name", "run",
                       "--exist-ok", timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]  # refused by the launcher, before torchrun starts any rank
    assert f"is in use by process {os.getpid()}" in r.stderr and "Traceback" not in r.stderr


def test_nproc_is_checked_before_torchrun_starts(tmp_path, capsys):
    assert main(["train", "--model", "seed-tiny-cnn", "--nproc", "999", "--project", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --nproc 999 is more than") and "Traceback" not in err
    assert main(["train", "--model", "seed-tiny-cnn", "--nproc", "2", "--lr", "-1", "--project", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())


def test_forwarded_command_drops_nproc_only():
    argv = ["train", "--nproc", "4", "--model", "seed-cnn", "--nproc=4", "--batch-size", "32"]
    assert forwarded(argv) == ["train", "--model", "seed-cnn", "--batch-size", "32"]
    cmd = torchrun_command(argv, 4)
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m"]
    assert cmd[6:] == ["daxiao", "train", "--model", "seed-cnn", "--batch-size", "32"]


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (11, 3), (2, 4)])
def test_rank_slices_cover_the_epoch_without_overlap(n, world):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shards = [shard_order(order, (r, world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # equal steps on every rank, or DDP waits forever
    assert set(torch.cat(shards).tolist()) == set(range(n))
    if n % world == 0:
        assert sorted(torch.cat(shards).tolist()) == list(range(n))  # no repeats when it divides
    evals = [shard_order(order, (r, world), pad=False) for r in range(world)]
    assert sorted(torch.cat(evals).tolist()) == list(range(n))  # eval: each sample scored exactly once


def test_ranks_draw_one_order_and_their_own_augmentation():
    from daxiao.data.augment import build_augment

    split = TensorSplit(torch.randint(0, 255, (40, 1, 8, 8), dtype=torch.uint8), torch.arange(40) % 4)
    pre = Preprocess(8, 1, "squash", (0.5,), (0.5,))
    aug = build_augment("rotation_range=20", 4)
    loaders = [TensorLoader(split, 5, pre, shuffle=True, seed=1, augment=aug, shard=(r, 2)) for r in range(2)]
    for ld in loaders:
        ld.set_epoch(3)
    a, b = (list(ld) for ld in loaders)
    assert len(a) == len(b) == 4
    seen = torch.cat([x.index for x in a + b])
    assert sorted(seen.tolist()) == list(range(40))
    single = TensorLoader(split, 10, pre, shuffle=True, seed=1)
    single.set_epoch(3)
    first = next(iter(single)).index  # the one-process batch is the two ranks' batches together
    assert sorted(first.tolist()) == sorted(torch.cat([a[0].index, b[0].index]).tolist())
    again = list(TensorLoader(split, 5, pre, shuffle=True, seed=1, augment=aug, shard=(0, 2)).__iter__())
    assert not torch.equal(again[0].inputs, a[0].inputs)  # epoch 0 differs from epoch 3
    sampler = RankSampler(40, (1, 2), True, None, seed=1, pad=True)
    sampler.set_epoch(3)
    assert list(sampler) == torch.cat([x.index for x in b]).tolist()  # folders: the same order as in memory


def test_devices_are_checked():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(DaxiaoError, match="no CUDA GPU"):
            resolve_device("cuda:0")
    with pytest.raises(DaxiaoError, match="device must be"):
        daxiao.RunConfig.from_dict({"device": "tpu"}).validate()


def test_fp16_trains_with_a_grad_scaler_whose_state_is_resumed(tmp_path):
    base = ["train", *COMMON, "--precision", "fp16", "--device", "cpu", "--project", str(tmp_path), "--name", "r"]
    assert main([*base, "--epochs", "2"]) == 0
    meta = read_description(tmp_path / "r" / "last.state.safetensors")  # the state, not a weights file
    assert meta["grad_scaler"]["scale"] > 0 and "_growth_tracker" in meta["grad_scaler"]
    assert float(rows(tmp_path / "r" / "metrics.csv")[-1]["val_acc"]) > 0.6
    assert main([*base, "--epochs", "3", "--resume"]) == 0
    assert len(rows(tmp_path / "r" / "metrics.csv")) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_trains_with_data_on_the_gpu(tmp_path, precision):
    cfg = daxiao.RunConfig.from_dict({"model": "seed-tiny-cnn", "epochs": 3, "device": "cuda", "augment": "light",
                                      "precision": precision, "project": str(tmp_path)})
    r = daxiao.train(cfg, verbose=False)
    assert r["best_val_acc"] > 0.8 and next(r["model"].parameters()).is_cuda


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_with_nccl(tmp_path):
    r = daxiao_cli("train", *COMMON, "--epochs", "2", "--device", "cuda", "--nproc", "2", "--project", str(tmp_path))
    assert r.returncode == 0 and "on cuda:0 x 2 processes" in r.stderr, r.stderr[-3000:]
