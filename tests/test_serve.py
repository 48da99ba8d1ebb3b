"""The HTTP service: every answer right (also under concurrent load), every bad request a 4xx JSON error,
the web page working in a real browser, and the runtime path free of torch."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from daxiao.cli import main  # noqa: E402
from daxiao.deploy.runtime import open_engine, predict_arrays  # noqa: E402
from daxiao.deploy.serve import bind, create_app  # noqa: E402
from daxiao.errors import DaxiaoError  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def digit_pngs(n: int = 48, offset: int = 1437) -> list[bytes]:
    """Real, different images: scikit-learn digits (the test end of the set) as PNG bytes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for i in range(offset, offset + n):
        buf = io.BytesIO()
        Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8), "L").save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def png_header(w: int, h: int) -> bytes:
    """A small PNG whose header claims w x h pixels: a decompression bomb's calling card."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bundle(digits_bundle) -> Path:
    return digits_bundle[1]


@pytest.fixture(scope="module")
def expected(bundle):
    """The bundle's own answer for each test image, computed without any server."""
    from daxiao.data.decode import decode_array

    engine = open_engine(bundle)
    pngs = digit_pngs()
    return pngs, [predict_arrays(engine, [decode_array(p, engine.preprocess)], 3)[0] for p in pngs]


@pytest.fixture(scope="module")
def client(bundle):
    return TestClient(create_app(bundle, max_bytes=100_000, max_pixels=1_000_000))


def test_predict_model_health_docs_page(client, expected):
    pngs, want = expected
    r = client.post("/predict?top_k=3", files={"file": ("a.png", pngs[0], "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"][0]["file"] == "a.png" and body["predictions"][0]["top"] == want[0]
    r = client.post("/predict?top_k=3", files=[("files", (f"{i}.png", pngs[i], "image/png")) for i in range(5)])
    assert [p["top"] for p in r.json()["predictions"]] == want[:5]
    r = client.post("/predict?top_k=3", content=pngs[7], headers={"content-type": "image/png"})  # raw bytes
    assert r.status_code == 200 and r.json()["predictions"][0]["top"] == want[7]
    m = client.get("/model").json()
    assert m["name"] == "seed-cnn" and m["classes"] == [str(i) for i in range(10)] and m["input_size"] == [1, 8, 8]
    assert m["parity"]["fp32"]["passed"] and m["params"] > 0 and m["limits"]["max_bytes"] == 100_000
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/docs").status_code == 200 and "/predict" in client.get("/openapi.json").text
    page = client.get("/")
    assert page.status_code == 200 and '<input id="file"' in page.text
    assert "http" not in page.text.split("<body>")[0].replace("http-equiv", "")  # no CDN in <head>
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("case", ["too_large", "too_large_chunked", "not_an_image", "truncated", "bomb_header",
                                  "too_many_pixels", "empty_raw", "empty_file", "wrong_field", "no_field",
                                  "json_body", "bad_top_k", "malformed_multipart"])
def test_bad_requests_are_4xx_json(client, expected, case):
    png = expected[0][0]
    big = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    f = {"too_large": lambda: client.post("/predict", files={"file": ("big.png", buf.getvalue(), "image/png")}),
         "too_large_chunked": lambda: client.post("/predict", content=iter([b"\0" * 60_000] * 3),
                                                  headers={"content-type": "application/octet-stream"}),
         "not_an_image": lambda: client.post("/predict", files={"file": ("notes.png", b"not a picture", "image/png")}),
         "truncated": lambda: client.post("/predict", files={"file": ("half.png", png[: len(png) // 2], "image/png")}),
         "bomb_header": lambda: client.post("/predict", content=png_header(40_000, 40_000),
                                            headers={"content-type": "image/png"}),
         "too_many_pixels": lambda: client.post("/predict", content=png_header(2_000, 2_000),
                                                headers={"content-type": "image/png"}),
         "empty_raw": lambda: client.post("/predict", content=b"", headers={"content-type": "image/png"}),
         "empty_file": lambda: client.post("/predict", files={"file": ("e.png", b"", "image/png")}),
         "wrong_field": lambda: client.post("/predict", files={"image": ("a.png", png, "image/png")}),
         "no_field": lambda: client.post("/predict", data={"note": "x"}, files={"other": ("a.txt", b"x")}),
         "json_body": lambda: client.post("/predict", json={"image": "base64..."}),
         "bad_top_k": lambda: client.post("/predict?top_k=0", content=png, headers={"content-type": "image/png"}),
         "malformed_multipart": lambda: client.post("/predict", content=b"--xx\r\nnot a part",
                                                    headers={"content-type": "multipart/form-data; boundary=yy"}),
         }[case]
    r = f()
    want = {"too_large": 413, "too_large_chunked": 413, "bomb_header": 413, "too_many_pixels": 413,
            "json_body": 415, "bad_top_k": 422}.get(case, 400)
    assert r.status_code == want, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail
    hints = {"too_large": "larger than the limit", "not_an_image": "not a usable image", "truncated": "unreadable",
             "bomb_header": "too many pixels", "too_many_pixels": "too many pixels", "empty_raw": "empty",
             "empty_file": "empty upload", "wrong_field": "received fields: image", "json_body": "unsupported"}
    assert hints.get(case, "") in detail, detail


def test_refuses_a_bundle_whose_parity_failed(bundle, tmp_path, capsys):
    bad = shutil.copytree(bundle, tmp_path / "bad")
    meta = json.loads((bad / "bundle.json").read_text())
    meta["parity"]["fp32"]["passed"] = False
    (bad / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(DaxiaoError, match="parity check did not pass.*refusing"):
        create_app(bad)
    assert main(["serve", str(bad), "--port", "1"]) == 2 and "refusing to serve" in capsys.readouterr().err


def test_port_in_use_is_one_line(bundle, capsys):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        assert main(["serve", str(bundle), "--port", str(port)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err == f"error: Port {port} on 127.0.0.1 is in use; pick another with --port."
    finally:
        holder.close()


@pytest.fixture(scope="module")
def live(bundle):
    """`daxiao serve`'s app under a real uvicorn on 127.0.0.1 and a free port."""
    import uvicorn

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(bundle), log_level="warning", limit_concurrency=1024))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


def test_concurrent_requests_each_get_their_own_answer(live, expected):
    """Many simultaneous requests with different images: no answer may belong to another image."""
    import httpx

    pngs, want = expected
    order = [i % len(pngs) for i in range(4 * len(pngs))]

    async def go():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=live, limits=limits, timeout=60) as c:
            async def one(i):
                r = await c.post("/predict?top_k=3", files={"file": (f"{i}.png", pngs[i], "image/png")})
                return i, r.status_code, r.json()
            return await asyncio.gather(*(one(i) for i in order))

    results = asyncio.run(go())
    assert len({tuple(t["class"] for t in w) for w in want}) > 5  # the images really differ
    for i, status, body in results:
        assert status == 200, body
        p = body["predictions"][0]
        assert p["file"] == f"{i}.png" and p["top"] == want[i]


def test_web_page_in_a_real_browser(live, expected, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium); the page is untested here")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    pngs, want = expected
    img = tmp_path / "digit.png"
    img.write_bytes(pngs[3])
    (tmp_path / "notes.txt").write_text("not an image")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 760, "height": 820})
            offsite = []
            local = (live, "blob:" + live, "data:")  # blob: is the preview of the picked file
            page.on("request", lambda r: None if r.url.startswith(local) else offsite.append(r.url))
            page.goto(live + "/")
            page.wait_for_function("document.getElementById('model').textContent.includes('seed-cnn')")
            page.set_input_files("#file", str(img))
            page.wait_for_selector("#result:not([hidden])", timeout=20_000)
            assert page.inner_text("#top-class") == want[3][0]["class"]
            bars = page.query_selector_all("#bars li")
            assert len(bars) == 5 and want[3][0]["class"] in bars[0].inner_text()
            fill, track = (bars[0].query_selector(s).bounding_box()["width"] for s in (".fill", ".track"))
            assert abs(fill / track - want[3][0]["probability"]) < 0.02  # the bar really shows the probability
            assert page.is_hidden("#spinner")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            if os.environ.get("DAXIAO_SCREENSHOT"):  # to look at the page: DAXIAO_SCREENSHOT=/tmp/page.png
                shutil.copy(tmp_path / "page.png", os.environ["DAXIAO_SCREENSHOT"])
            page.set_input_files("#file", str(tmp_path / "notes.txt"))
            page.wait_for_function("document.getElementById('status').classList.contains('error')")
            assert "is not an image" in page.inner_text("#message") and page.is_hidden("#result")
            assert not offsite, offsite  # everything the page needs is served locally
        finally:
            browser.close()


BLOCK_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ImportError(f"{name} is blocked: the runtime path must not import it")
sys.meta_path.insert(0, NoTorch())
"""

TORCH_FREE = """
import json, sys
from daxiao.cli import main
bundle, img, folder = sys.argv[1:4]
assert main(["predict", bundle, img, "--json"]) == 0
assert main(["evaluate", bundle, "--data", folder, "--json"]) == 0
from fastapi.testclient import TestClient
from daxiao.deploy.serve import create_app
c = TestClient(create_app(bundle))
r = c.post("/predict", files={"file": ("x.png", open(img, "rb").read(), "image/png")})
assert r.status_code == 200, r.text
print("SERVED", json.dumps(r.json()["predictions"][0]["top"][0]))
assert c.get("/").status_code == 200 and c.get("/model").status_code == 200
bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm")]
assert not bad, bad
"""


def test_runtime_path_imports_no_torch(bundle, expected, tmp_path):
    pngs, want = expected
    folder = tmp_path / "data"
    for i, png in enumerate(pngs[:12]):
        (folder / want[i][0]["class"]).mkdir(parents=True, exist_ok=True)
        (folder / want[i][0]["class"] / f"{i}.png").write_bytes(png)
    img = folder / want[0][0]["class"] / "0.png"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).parents[1] / "src"),
                                                                   os.environ.get("PYTHONPATH", "")] if p)}
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH + TORCH_FREE, str(bundle), str(img), str(folder)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    served = json.loads(r.stdout.split("SERVED", 1)[1].splitlines()[0])
    assert served == want[0][0]
    # the blocker itself works: the torch path fails under it
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH + "import daxiao.models"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode != 0 and "blocked" in r.stderr
