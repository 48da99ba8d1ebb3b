"""Property tests, bounded to seconds: arbitrary bytes never crash the image decoder or the weights
reader; they give a usable image, `BadImage`, or one `DaxiaoError` line."""

from __future__ import annotations

import io
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from daxiao.data.decode import BadImage, check_file, decode_file
from daxiao.data.preprocess import Preprocess
from daxiao.errors import DaxiaoError
from daxiao.models.saved import load_run

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 5), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = png_bytes()
mutated = st.builds(lambda cut, flips: bytes(b ^ flips.get(i, 0) for i, b in enumerate(PNG[:cut])),
                    st.integers(0, len(PNG)), st.dictionaries(st.integers(0, len(PNG) - 1), st.integers(1, 255),
                                                              max_size=8))


@FAST
@given(data=st.one_of(st.binary(max_size=2048), mutated))
def test_decoder_never_crashes(tmp_path, data):
    path = tmp_path / "x.png"
    path.write_bytes(data)
    problem, _ = check_file(path)
    try:
        x = decode_file(path, Preprocess(8, 3))
    except BadImage:
        assert problem is not None  # the up-front check saw it too
        return
    assert x.shape == (3, 8, 8)


def meta_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                        st.text(max_size=20))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                        max_leaves=20)


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory):
    import daxiao
    from daxiao.config import RunConfig

    runs = tmp_path_factory.mktemp("fz")
    daxiao.train(RunConfig.from_dict({"project": str(runs), "name": "w", "model": "seed-tiny-cnn", "epochs": 1,
                                      "precision": "fp32"}), verbose=False)
    return runs / "w" / "best.safetensors"


@FAST
@given(key=st.sampled_from(["model", "model_args", "classes", "preprocess", "format", "epoch", "config", "extra"]),
       sub=st.one_of(st.none(), st.text(max_size=12)), value=meta_values())
def test_weights_reader_never_crashes(tmp_path, real_weights, key, sub, value):
    from safetensors.torch import load_file, save_file

    from daxiao.models.saved import read_description

    meta = read_description(real_weights)
    if sub is not None and isinstance(meta.get(key), dict):
        meta[key][sub] = value
    else:
        meta[key] = value
    path = tmp_path / "w.safetensors"
    save_file(load_file(str(real_weights)), str(path), metadata={"daxiao": json.dumps(meta)})
    try:
        run = load_run(path)
    except DaxiaoError as e:
        assert "\n" not in str(e)
        return
    p = run.preprocess
    x = torch.zeros(1, p.channels, p.image_size, p.image_size, dtype=torch.uint8)
    assert run.model(p.normalize(x)).shape == (1, len(run.classes))
