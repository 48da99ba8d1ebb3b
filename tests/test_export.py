"""Export: ONNX and TorchScript bundles predict what PyTorch predicts, int8 stays close, a failed parity
check writes nothing, and every bad input is one clear line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import seeded_run
from PIL import Image

import daxiao.deploy.export as export_mod
from daxiao.cli import main
from daxiao.data.decode import decode_array, decode_file
from daxiao.data.preprocess import Preprocess
from daxiao.deploy.bundle import read_bundle
from daxiao.deploy.export import export_run
from daxiao.deploy.runtime import open_engine, predict_files
from daxiao.errors import DaxiaoError
from daxiao.inference.predict import predict as torch_predict

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # torch.onnx's exporter


def digit_files(folder, n: int = 24, size: int = 8, rgb: bool = False):
    """Real samples: scikit-learn's digit images (the held-out end of the set) as PNG files."""
    from sklearn.datasets import load_digits

    d = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(d.images) - n, len(d.images)):
        img = Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8), "L")
        img = img.resize((size, size), Image.NEAREST) if size != 8 else img
        paths.append(folder / f"{d.target[i]}_{i}.png")
        (img.convert("RGB") if rgb else img).save(paths[-1])
    return paths


MODELS = [("seed-cnn", {"channels": 1, "image_size": 8}), ("mobilenet-v1", {"alpha": 0.25}),
          ("squeezenet1_1", {}), ("timm:resnet10t", {})]


@pytest.mark.parametrize("model,kw", MODELS, ids=[m for m, _ in MODELS])
def test_onnx_and_torchscript_round_trips_give_pytorch_top1(tmp_path, model, kw):
    run = seeded_run(tmp_path / "runs", "r", model, **kw)
    files = digit_files(tmp_path / "imgs", size=12, rgb=kw.get("channels", 3) == 3)
    expected = [r["top"][0]["class"] for r in torch_predict(run, files, top_k=1)]
    for fmt in ("onnx", "torchscript"):
        summary = export_run(run, fmt, tmp_path / fmt)
        p = summary["parity"]["fp32"]
        assert p["passed"] and p["top1_agreement"] == 100.0 and p["max_abs_logit_diff"] <= p["tolerance"]
        assert summary["parity"]["images"] == 144  # digits' validation split, 10 % of 1437
        got = [r["top"][0]["class"] for r in predict_files(open_engine(tmp_path / fmt), files, k=1)]
        assert got == expected, fmt


def test_bundle_describes_itself_and_int8_stays_close(digits_bundle, tmp_path):
    run, _ = digits_bundle
    summary = export_run(run, "onnx", tmp_path / "b8", int8=True, calib=128)
    b = read_bundle(tmp_path / "b8")
    meta = b.meta
    assert set(meta["files"]) == {"fp32", "int8"} and meta["format"] == "daxiao-bundle/1"
    assert meta["classes"] == [str(i) for i in range(10)] and meta["preprocess"]["image_size"] == 8
    assert meta["config"]["model"]["name"] == "seed-cnn" and len(meta["metrics"]) == 4  # the run's metrics.csv
    assert {"fp32", "int8"} <= set(meta["latency"])  # both measured, never assumed
    rows = meta["int8"]["candidates"]
    assert len(rows) == 4 and sum(bool(r.get("chosen")) for r in rows) == 1
    i8 = meta["parity"]["int8"]
    # the tolerance benchmarks/deploy.py measured for these small models: <= 1 point lost, >= 95 % agreement
    assert i8["acc_drop"] <= 1.0 and i8["top1_agreement"] >= 95.0
    faster = meta["latency"]["int8"]["median_ms"] < meta["latency"]["fp32"]["median_ms"]
    assert meta["default"] == ("int8" if faster else "fp32")
    assert any("int8" in n for n in summary["notes"])
    # both variants run and mostly agree on real images
    files = digit_files(tmp_path / "imgs")
    a = predict_files(open_engine(tmp_path / "b8", "fp32"), files, k=1)
    q = predict_files(open_engine(tmp_path / "b8", "int8"), files, k=1)
    assert sum(x["top"][0]["class"] == y["top"][0]["class"] for x, y in zip(a, q, strict=True)) >= 20


def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    run = seeded_run(tmp_path / "runs", "r", "seed-cnn", image_size=8, channels=1)
    real = export_mod.export_onnx

    def export_another_model(model, example, path, opset=export_mod.OPSET):
        return real(_perturbed(model), example, path, opset)  # an exporter that got the weights wrong

    monkeypatch.setattr(export_mod, "export_onnx", export_another_model)
    before = sorted(p.name for p in (tmp_path / "runs" / "r").iterdir())
    with pytest.raises(DaxiaoError, match="Parity check failed.*no bundle written"):
        export_run(run, "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "runs" / "r").iterdir()) == before  # no default bundle either
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    wrong = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in wrong.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    return wrong


def test_preprocessing_is_one_implementation(tmp_path):
    """The torch path and the numpy path are the same functions: identical pixels, same normalization."""
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8), "RGB")
    img.save(tmp_path / "x.png")
    for resize in ("squash", "crop", "pad"):
        pre = Preprocess(16, 3, resize, (0.2, 0.4, 0.6), (0.3, 0.2, 0.1))
        a = decode_array(tmp_path / "x.png", pre)
        assert a.dtype == np.uint8 and a.shape == (3, 16, 16)
        t = decode_file(tmp_path / "x.png", pre)
        assert np.array_equal(t.numpy(), a)
        assert np.array_equal(decode_array((tmp_path / "x.png").read_bytes(), pre), a)  # bytes, as uploads
        ref = pre.normalize(t[None]).numpy()
        np.testing.assert_allclose(pre.normalize_array(a[None]), ref, rtol=0, atol=1e-6)


def test_bad_input_is_one_line(capsys, tmp_path, digits_bundle):
    run, bundle = digits_bundle

    def one_line(argv, expect):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress lines
        assert err.startswith("error:") and expect in err and "Traceback" not in err, err

    empty = tmp_path / "empty-run"
    empty.mkdir()
    one_line(["export", str(empty)], "holds no best.safetensors")
    one_line(["export", str(run), "--format", "tflite"], "--format must be one of onnx, torchscript")
    one_line(["export", str(run), "--format", "torchscript", "--int8"], "use --format onnx")
    one_line(["export", str(run), "--int8", "--calib", "0"], "needs calibration images")
    one_line(["export", str(run), "--out", str(bundle)], "exists; choose another --out")
    # weights without a recorded config: no data to check parity on or calibrate with
    bare = seeded_run(tmp_path / "runs", "bare", "seed-cnn", image_size=8, channels=1)
    w = json.loads((bare / "best.json").read_text())
    from daxiao.models.saved import load_run, save_weights

    w.pop("config")
    save_weights(load_run(bare).model, bare / "best.safetensors", {k: v for k, v in w.items() if k != "format"})
    one_line(["export", str(bare), "--int8"], "the parity check and int8 calibration need; pass --data")
    # a bare .onnx needs its classes and input size
    one_line(["predict", str(bundle / "model.onnx") + ".copy.onnx", "x.png"], "No such ONNX file")
    (tmp_path / "m.onnx").write_bytes((bundle / "model.onnx").read_bytes())
    img = digit_files(tmp_path / "imgs", n=2)[0]
    one_line(["predict", str(tmp_path / "m.onnx"), str(img)], "pass --classes and --image-size")
    one_line(["predict", str(tmp_path / "m.onnx"), str(img), "--classes", "0,1,2,3,4,5,6,7,8,9"], "--image-size")
    assert main(["predict", str(tmp_path / "m.onnx"), str(img), "--classes", ",".join("0123456789"),
                 "--image-size", "8", "--mean", "0.3", "--std", "0.4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] in "0123456789"


def test_bundle_checks_on_read(tmp_path, digits_bundle, capsys):
    import shutil

    _, bundle = digits_bundle
    img = digit_files(tmp_path / "imgs", n=1)[0]
    newer = shutil.copytree(bundle, tmp_path / "newer")
    meta = json.loads((newer / "bundle.json").read_text())
    (newer / "bundle.json").write_text(json.dumps({**meta, "format": "daxiao-bundle/9", "daxiao_version": "9.0"}))
    with pytest.raises(DaxiaoError, match="newer daxiao.*upgrade daxiao"):
        read_bundle(newer)
    missing = shutil.copytree(bundle, tmp_path / "missing")
    (missing / "model.onnx").unlink()
    with pytest.raises(DaxiaoError, match="missing model.onnx"):
        read_bundle(missing)
    changed = shutil.copytree(bundle, tmp_path / "changed")
    (changed / "model.onnx").write_bytes((changed / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(DaxiaoError, match="changed since export"):
        read_bundle(changed)
    outside = shutil.copytree(bundle, tmp_path / "outside")
    meta["files"]["fp32"]["path"] = "../../etc/passwd"
    (outside / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(DaxiaoError, match="outside the bundle"):
        read_bundle(outside)
    assert main(["predict", str(newer), str(img)]) == 2 and "newer daxiao" in capsys.readouterr().err


def test_cli_export_predict_evaluate_bundle(tmp_path, digits_bundle, capsys):
    run, bundle = digits_bundle
    assert main(["export", str(run), "--out", str(tmp_path / "b"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["default"] == "fp32" and summary["parity"]["fp32"]["passed"]
    files = digit_files(tmp_path / "imgs")
    assert main(["predict", str(tmp_path / "b"), *map(str, files), "--json", "--top-k", "3"]) == 0
    onnx_out = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run), *map(str, files), "--json", "--top-k", "3"]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["class"] for r in onnx_out] == [r["top"][0]["class"] for r in torch_out]
    np.testing.assert_allclose([r["top"][0]["probability"] for r in onnx_out],
                               [r["top"][0]["probability"] for r in torch_out], atol=1e-4)
    # evaluate: the bundle on the training data's test split gives the run's own accuracy
    assert main(["evaluate", str(tmp_path / "b"), "--json"]) == 0
    e_onnx = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run), "--json"]) == 0
    e_torch = json.loads(capsys.readouterr().out)
    assert e_onnx["n"] == e_torch["n"] == 360 and abs(e_onnx["acc"] - e_torch["acc"]) < 1e-9
    assert (tmp_path / "b" / "eval-test" / "predictions.csv").is_file()
    # and on a folder of image files, without torch in the loop
    root = tmp_path / "folder"
    for f in files:
        (root / f.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        f.rename(root / f.name.split("_")[0] / f.name)
    assert main(["evaluate", str(tmp_path / "b"), "--data", str(root), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == len(files) and r["split"] == "all" and r["kind"] == "onnx"
    # exporting again by default never overwrites: a new numbered folder
    assert main(["export", str(run)]) == 0 and main(["export", str(run)]) == 0
    assert (run / "bundle-onnx").is_dir() and (run / "bundle-onnx-2").is_dir()
