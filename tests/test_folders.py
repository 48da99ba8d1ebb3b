"""Image folders as users have them: layouts, sizes from the data, decode-once caches, progress off a
terminal, names in any script or with markup in them, EXIF-rotated photos."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import draw, make_folder
from PIL import Image

import daxiao
from daxiao.cli import main
from daxiao.config import DataConfig, RunConfig
from daxiao.data import FileSplit, TensorSplit, load_data
from daxiao.data.decode import image_info
from daxiao.data.sizes import choose_size
from daxiao.errors import DaxiaoError

SRC = str(Path(__file__).resolve().parent.parent / "src")


def split_root(tmp: Path, *splits: str, per_class: int = 10, size: int = 20, classes=("bar_h", "bar_v", "square")):
    root = tmp / "ds"
    for s in splits:
        make_folder(root / s, classes=classes, per_class=per_class if s == "train" else 4, size=size)
    return root


# ---- layouts -----------------------------------------------------------------------------------------------
def test_train_and_test_only_draws_val_from_train_and_keeps_test(tmp_path, capsys):
    root = split_root(tmp_path, "train", "test")
    d = load_data(DataConfig(data=str(root), val_split=0.2), seed=0)
    assert d.classes == ["bar_h", "bar_v", "square"]  # not "test" and "train"
    assert (len(d.train), len(d.val), len(d.test)) == (24, 6, 12)
    assert d.class_counts("val") == {"bar_h": 2, "bar_v": 2, "square": 2}  # stratified
    assert all("/train/" in n for n in d.val.names()) and all("/test/" in n for n in d.test.names())
    assert "layout: train/ + test/ -> val = 20 % of train, stratified; test = test/" in capsys.readouterr().err
    again = load_data(DataConfig(data=str(root), val_split=0.2), seed=0)
    assert again.val.names() == d.val.names()  # the seed fixes the split
    other = load_data(DataConfig(data=str(root), val_split=0.2), seed=1)
    assert other.val.names() != d.val.names()


@pytest.mark.parametrize("splits,expect", [
    (("train", "val", "test"), (30, 12, 12)),
    (("train", "validation"), (30, 12, None)),
    (("train",), (27, 3, None)),
])
def test_split_layouts(tmp_path, splits, expect):
    d = load_data(DataConfig(data=str(split_root(tmp_path, *splits))), seed=0)
    assert (len(d.train), len(d.val), len(d.test) if d.test is not None else None) == expect


def test_flat_class_folders_and_csv(tmp_path, capsys):
    make_folder(tmp_path / "flat", per_class=6, size=16)
    d = load_data(DataConfig(data=str(tmp_path / "flat"), val_split=0.5), seed=0)
    assert (len(d.train), len(d.val), d.test) == (9, 9, None)
    assert "layout: class folders -> val = 50 % of the images, stratified" in capsys.readouterr().err
    rows = [f"flat/{p.parent.parent.name}/nested/{p.name},{p.parent.parent.name}"
            for p in sorted((tmp_path / "flat").rglob("*")) if p.is_file()]
    (tmp_path / "list.csv").write_text("path,label\n" + "\n".join(rows))
    d = load_data(DataConfig(data=str(tmp_path / "list.csv"), val_split=0.5), seed=0)
    assert len(d.train) + len(d.val) == 18 and isinstance(d.train, TensorSplit)
    assert "layout: CSV list list.csv" in capsys.readouterr().err


def test_ambiguous_root_is_refused_naming_both_readings(tmp_path):
    root = tmp_path / "mixed"
    make_folder(root / "train", per_class=3)
    make_folder(root, classes=("cats", "dogs"), per_class=3)
    with pytest.raises(DaxiaoError, match=r"mixes split folders \(train/\) with other folders \(cats/, dogs/\): "
                                          r"read as splits, .* ignored; read as classes, train/ would be classes"):
        load_data(DataConfig(data=str(root)), seed=0)
    lonely = tmp_path / "lonely"
    make_folder(lonely / "test", per_class=3)
    with pytest.raises(DaxiaoError, match="no train/ folder"):
        load_data(DataConfig(data=str(lonely)), seed=0)


def test_inspect_prints_what_daxiao_sees(tmp_path, capsys):
    root = split_root(tmp_path, "train", "test")
    (root / "train" / "bar_h" / "broken.png").write_bytes(b"not a png")
    assert main(["datasets", "--inspect", str(root)]) == 0
    text = capsys.readouterr().out
    assert "layout: train/ + test/" in text and "sizes (train): all 30 are 20x20" in text
    assert "unreadable: " in text and "broken.png" in text and "3x20x20" in text
    assert main(["datasets", "--inspect", str(root), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["splits"]["train"]["counts"] == {"bar_h": 10, "bar_v": 10, "square": 10}
    assert r["splits"]["test"]["images"] == 12 and r["splits"]["train"]["unreadable"] == 1


# ---- sizes from the data ---------------------------------------------------------------------------------
def test_size_rule(tmp_path):
    root = split_root(tmp_path, "train", "test", size=20)
    d = load_data(DataConfig(data=str(root)), seed=0)
    assert d.preprocess.image_size == 20 and d.size_rule.startswith("all images are 20x20 -> 20 px")
    assert load_data(DataConfig(data=str(root), image_size=12), seed=0).preprocess.image_size == 12
    assert choose_size([(32, 32)] * 95 + [(500, 375)] * 5)[0] == 32  # nearly all one size
    side, rule = choose_size([(40, 30), (64, 48), (100, 80), (640, 480), (1024, 768)])
    assert side == 100 and "median longer side" in rule
    side, rule = choose_size([(640, 480)] * 3 + [(800, 600)] * 3)
    assert side == 224 and "capped at 224" in rule


def test_pretrained_takes_the_weights_size(tmp_path):
    root = split_root(tmp_path, "train", per_class=4, size=20)
    cfg = RunConfig.from_dict({"data": str(root), "model": "efficientnet-lite0", "pretrained": True})
    from daxiao.training.runs import build

    _, bundle = build(cfg)
    assert bundle.preprocess.image_size == 224 and "pretrained weights take 224 px" in bundle.size_rule


# ---- decode once -----------------------------------------------------------------------------------------
def _train(root: Path, runs: Path, name: str, **kw) -> dict:
    cfg = {"data": str(root), "model": "seed-cnn", "epochs": 2, "batch_size": 8, "lr": 3e-3, "precision": "fp32",
           "project": str(runs), "name": name, "workers": 0, "augment": "seed", **kw}
    return daxiao.train(RunConfig.from_dict(cfg), verbose=False)


def test_cached_and_uncached_training_give_identical_weights(tmp_path, runs):
    root = split_root(tmp_path, "train", "test", per_class=8, size=16)
    results = {mode: _train(root, runs, mode, data_cache=mode, cache_dir=str(tmp_path / "cache"))
               for mode in ("memory", "disk", "off")}
    states = {m: r["model"].state_dict() for m, r in results.items()}
    assert all(torch.equal(states["memory"][k], states[m][k]) for m in ("disk", "off") for k in states["memory"])
    assert results["memory"]["history"] == [{**h, "images_per_s": results["memory"]["history"][i]["images_per_s"],
                                             "epoch_seconds": results["memory"]["history"][i]["epoch_seconds"]}
                                            for i, h in enumerate(results["off"]["history"])]


def test_disk_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, capsys):
    root = split_root(tmp_path, "train", per_class=6, size=16)
    cache = tmp_path / "cache"
    cfg = DataConfig(data=str(root), data_cache="disk")
    first = load_data(cfg, seed=0, cache_dir=cache)
    assert isinstance(first.train, TensorSplit) and len(list(cache.glob("*.u8"))) == 1
    assert "decoded 18 images" in capsys.readouterr().err
    again = load_data(cfg, seed=0, cache_dir=cache)
    assert "reused the disk cache for 18 images" in capsys.readouterr().err
    assert torch.equal(again.train.images, first.train.images) and len(list(cache.glob("*.u8"))) == 1
    changed = Path(first.train.names()[0])
    Image.new("RGB", (16, 16), (255, 255, 255)).save(changed)  # a different picture, a new mtime
    os.utime(changed, ns=(os.stat(changed).st_atime_ns, os.stat(changed).st_mtime_ns + 10**9))
    third = load_data(cfg, seed=0, cache_dir=cache)
    assert "decoded 18 images" in capsys.readouterr().err and len(list(cache.glob("*.u8"))) == 2
    assert third.train.names()[0] == str(changed) and third.train.images[0].min() == 255
    assert not list(cache.glob(".*.tmp"))  # nothing half-written left behind
    auto = load_data(DataConfig(data=str(root)), seed=0, cache_dir=cache)  # auto finds the valid cache
    assert "data cache: disk" in capsys.readouterr().err and torch.equal(auto.train.images, third.train.images)


def test_off_checks_every_file_and_falls_back_to_the_dataloader(image_folder):
    d = load_data(DataConfig(data=str(image_folder), data_cache="off"), seed=0)
    assert isinstance(d.train, FileSplit) and len(d.skipped) == 3 and len(d.train) + len(d.val) == 36
    m = load_data(DataConfig(data=str(image_folder)), seed=0)
    assert isinstance(m.train, TensorSplit) and m.preprocess == d.preprocess  # the same exact statistics
    assert m.train.names() == d.train.names()
    seen = load_data(DataConfig(data=str(image_folder)), seed=0, preprocess=m.preprocess)  # as evaluate loads it
    assert seen.val.names() == m.val.names() and torch.equal(seen.val.images, m.val.images)


# ---- progress off a terminal, and --quiet ----------------------------------------------------------------
def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    root = split_root(tmp_path, "train", per_class=12, size=16)
    args = ["train", "--data", str(root), "--epochs", "1", "--batch-size", "2", "--precision", "fp32",
            "--project", str(tmp_path / "runs"), "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": SRC, "DAXIAO_PROGRESS_INTERVAL": "0"}  # every update: no race
    code = "import sys; from daxiao.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert any(line.startswith("scan train: ") and "/s" in line for line in lines), p.stderr
    assert any(line.startswith("decode train (into memory): ") for line in lines), p.stderr
    assert any(line.startswith("epoch 1/1: ") and "batches" in line and "ETA" in line for line in lines), p.stderr
    quiet = subprocess.run([sys.executable, "-c", code, *args, "--quiet"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


# ---- names in any script, names with markup --------------------------------------------------------------
def test_cjk_class_names_render_without_glyph_warnings(tmp_path):
    from daxiao.data.augment import parse_augment, preview_grid
    from daxiao.plots import cjk_font, save_confusion_matrix

    if cjk_font() is None:
        pytest.skip("no CJK font (apt-get install fonts-noto-cjk)")
    classes = ["猫", "狗", "ねこ", "고양이"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_confusion_matrix([0, 1, 2, 3], [0, 1, 3, 3], classes, tmp_path / "cm.png", title="测试 集")
        images = torch.stack([torch.from_numpy(np.array(draw(k % 3, 16))).permute(2, 0, 1) for k in range(4)])
        preview_grid(images, torch.arange(4), classes, parse_augment("seed"), tmp_path / "p.png", per_class=2)
    assert (tmp_path / "cm.png").stat().st_size > 1000 and (tmp_path / "p.png").stat().st_size > 1000


def test_without_a_cjk_font_one_note_and_no_warnings(tmp_path, monkeypatch, capsys):
    from daxiao import plots

    monkeypatch.setattr(plots, "cjk_font", lambda: None)
    monkeypatch.setattr(plots, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.save_confusion_matrix([0, 1], [0, 1], ["猫", "狗"], tmp_path / "cm.png")
        plots.save_confusion_matrix([0, 1], [0, 1], ["猫", "狗"], tmp_path / "cm2.png")
    assert capsys.readouterr().err.count("no CJK font is installed") == 1


def test_a_class_called_red_in_brackets_trains_predicts_and_prints_literally(tmp_path, capsys):
    root = make_folder(tmp_path / "marks", classes=("[red]", "bar_v", "[bold]x"), per_class=8, size=16)
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(root), "--epochs", "2", "--lr", "3e-3", "--precision", "fp32",
                 "--project", str(runs), "--name", "m", "--workers", "0"]) == 0
    err = capsys.readouterr().err
    assert "[red]=" in err and "[bold]x=" in err
    image = next((root / "[red]").rglob("*.png"))
    assert main(["predict", str(runs / "m"), str(image)]) == 0
    said = capsys.readouterr().out
    assert f"{image}: " in said and "[red] " in said
    assert main(["evaluate", str(runs / "m")]) == 0
    assert "[red]" in capsys.readouterr().out
    rows = list(csv.DictReader(open(runs / "m" / "eval-test" / "predictions.csv")))
    assert {r["true"] for r in rows} <= {"[red]", "bar_v", "[bold]x"} and all(Path(r["item"]).is_file() for r in rows)


# ---- EXIF orientation, evaluate on train/ + test/ --------------------------------------------------------
def test_exif_rotated_photo_is_seen_upright(tmp_path):
    a = np.zeros((20, 40), np.uint8)
    a[:, 20:] = 255  # stored: left half black, right half white, 40 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": the left (black) half ends up on top
    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(a, "L").convert("RGB").save(root / c / f"{i}.jpg", exif=exif.tobytes(), quality=95)
    assert image_info(root / "a" / "0.jpg")[:2] == (20, 40)  # the upright size, from the header
    d = load_data(DataConfig(data=str(root), val_split=0.34), seed=0)
    assert d.preprocess.image_size == 40
    img = d.train.images[0, 0].int()
    assert img[5, 20] < 60 and img[35, 20] > 200  # top dark, bottom bright: upright
    from daxiao.data.decode import decode_file

    assert decode_file(root / "a" / "0.jpg", d.preprocess)[0, 5, 20] < 60  # the per-file path agrees


def test_evaluate_scores_the_test_folder_by_default_and_lists_unreadable_files(tmp_path, runs):
    root = split_root(tmp_path, "train", "test", per_class=8, size=16)
    (root / "test" / "square" / "bad.png").write_bytes(b"")
    _train(root, runs, "tt", augment="none")
    r = daxiao.evaluate(runs / "tt", out_dir=tmp_path / "ev")
    assert r["split"] == "test" and r["n"] == 12 and r["unscored"] == 1
    rows = list(csv.DictReader(open(tmp_path / "ev" / "predictions.csv")))
    assert len(rows) == 13 and rows[-1]["predicted"] == "(unreadable: zero-byte file)"
    assert all("/test/" in row["item"] for row in rows)
