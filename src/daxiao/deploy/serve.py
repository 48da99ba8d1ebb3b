"""`daxiao serve`: the model behind HTTP. FastAPI app factory `create_app`, run by uvicorn (`serve`).

    POST /predict   one or several images (multipart field `file` or `files`), or the raw bytes of one
                    (Content-Type image/* or application/octet-stream) -> top-k classes with probabilities
    GET  /model     name, classes, input size, params, parity summary, latencies, limits
    GET  /health    liveness
    GET  /docs      OpenAPI docs (FastAPI's own)
    GET  /          a small page: pick or drop an image, see it and its top-k as bars (static/, no CDN)

Bounded: the body is read by `BodyLimit` before anything parses it (default 10 MB -> 413, a slow body ->
408), images over a pixel limit are refused from their header (-> 413), every decode/inference has a
timeout (-> 503), and malformed or non-image uploads get a 4xx JSON error, never a 500. One shared
engine (an onnxruntime session is thread-safe); decoding and inference run in a thread pool sized to the
cores, off the event loop. A bundle whose parity check did not pass is refused at start. Torch-free for
bundles.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from ..data.decode import BadImage, TooManyPixels, decode_array
from ..errors import DaxiaoError
from .runtime import Engine, cpu_count, open_engine, predict_arrays

STATIC = Path(__file__).parent / "static"
MAX_BYTES = 10 * 1024 * 1024
MAX_IMAGES = 32          # images per request
FIELDS = ("file", "files")
RAW_TYPES = ("image/", "application/octet-stream")


class HTTPError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


class BodyLimit:
    """Pure ASGI middleware: reads the whole request body (at most `max_bytes`, within `timeout_s`) before
    the app sees it, so no parser ever holds more than the limit. Over it -> 413; too slow -> 408."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_big = {"detail": f"upload larger than the limit of {self.max_bytes:,} bytes"}
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _send_json(send, 400, {"detail": "invalid Content-Length header"})
            if int(length) > self.max_bytes:
                return await _send_json(send, 413, too_big)
        chunks, size = [], 0

        async def read() -> bool:
            nonlocal size
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return False
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    raise HTTPError(413, too_big["detail"])
                chunks.append(chunk)
                if not msg.get("more_body"):
                    return True

        try:
            if not await asyncio.wait_for(read(), self.timeout_s):
                return None
        except HTTPError as e:
            return await _send_json(send, e.status, {"detail": e.detail})
        except asyncio.TimeoutError:
            return await _send_json(send, 408, {"detail": f"request body not received within {self.timeout_s:g} s"})
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def read_images(request: Request) -> list[tuple[str, bytes]]:
    """(name, bytes) of every uploaded image, or an HTTPError saying what was wrong with the request."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=MAX_IMAGES, max_fields=MAX_IMAGES)
        except Exception as e:  # starlette's MultiPartException and parser errors for malformed bodies
            raise HTTPError(400, f"malformed multipart body ({str(e)[:120] or type(e).__name__})") from None
        items = [(k, v) for k, v in form.multi_items()]
        uploads = [v for k, v in items if k in FIELDS and hasattr(v, "read")]
        if not uploads:
            got = ", ".join(sorted({k for k, _ in items})) or "none"
            raise HTTPError(400, f"no image in the multipart field 'file' (or 'files'); received fields: {got}")
        return [(u.filename or f"image {i + 1}", await u.read()) for i, u in enumerate(uploads)]
    if ctype.startswith(RAW_TYPES) or not ctype:
        body = await request.body()
        if not body:
            raise HTTPError(400, "empty request body: send an image (multipart field 'file', or raw bytes)")
        return [("upload", body)]
    raise HTTPError(415, f"unsupported Content-Type {ctype!r}: send multipart/form-data with field 'file', or "
                         "the image bytes as image/* or application/octet-stream")


def create_app(source: str | Path | Engine, max_bytes: int = MAX_BYTES, max_pixels: int | None = None,
               timeout_s: float = 30.0, top_k: int = 5, threads: int | None = None,
               variant: str | None = None) -> FastAPI:
    """The service for a bundle (or bare engine). Refuses a bundle whose parity check did not pass."""
    engine = source if isinstance(source, Engine) else open_engine(source, variant, threads)
    if engine.bundle is not None and not engine.bundle.parity_passed:
        raise DaxiaoError(f"{engine.bundle.path}: its parity check did not pass (bundle.json), so its predictions "
                          "may differ from the trained model's; refusing to serve it. Export the run again.")
    max_pixels = max_pixels or Image.MAX_IMAGE_PIXELS
    pool = ThreadPoolExecutor(max_workers=cpu_count(), thread_name_prefix="daxiao-infer")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"daxiao: {engine.name}", version="1", lifespan=lifespan,
                  description="Image classification with a daxiao bundle. POST an image to /predict.")
    app.state.engine, app.state.pool = engine, pool
    limits = {"max_bytes": max_bytes, "max_pixels": max_pixels, "max_images": MAX_IMAGES, "timeout_s": timeout_s}

    def work(blobs: list[tuple[str, bytes]], k: int) -> list[dict]:
        arrays = []
        for name, data in blobs:
            try:
                arrays.append(decode_array(data, engine.preprocess, max_pixels))
            except TooManyPixels as e:
                raise HTTPError(413, f"{name}: {e}") from None
            except BadImage as e:
                raise HTTPError(400, f"{name} is not a usable image: {e}") from None
        tops = predict_arrays(engine, arrays, k)
        return [{"file": name, "top": top} for (name, _), top in zip(blobs, tops, strict=True)]

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, e: HTTPError):
        return JSONResponse({"detail": e.detail}, status_code=e.status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):  # a JSON body even for our own bugs
        return JSONResponse({"detail": f"internal error ({type(e).__name__})"}, status_code=500)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": engine.name}

    @app.get("/model")
    async def model() -> dict:
        return {**engine.info(), "limits": limits, "top_k": top_k}

    @app.post("/predict", openapi_extra={"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}, "required": True}})
    async def predict(request: Request, top_k: int = top_k) -> dict:
        """Top-k classes of each uploaded image."""
        if not 1 <= top_k <= len(engine.classes):
            raise HTTPError(422, f"top_k must be between 1 and {len(engine.classes)} (received {top_k})")
        blobs = await read_images(request)
        loop = asyncio.get_running_loop()
        try:
            results = await asyncio.wait_for(loop.run_in_executor(pool, work, blobs, top_k), timeout_s)
        except asyncio.TimeoutError:
            raise HTTPError(503, f"prediction took longer than {timeout_s:g} s; try again or send smaller images") \
                from None
        return {"model": engine.name, "predictions": results}

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, max_bytes=max_bytes, timeout_s=timeout_s)
    return app


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a port in use is one clear line (before uvicorn starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise DaxiaoError(f"Port {port} on {host} is in use; pick another with --port.") from None
        raise DaxiaoError(f"Cannot listen on {host}:{port} ({e.strerror}); check --host and --port.") from None
    sock.set_inheritable(True)
    return sock


def app_from_env() -> FastAPI:
    """uvicorn factory for --workers > 1: each worker process builds its own engine from the environment."""
    cfg = json.loads(os.environ["DAXIAO_SERVE"])
    return create_app(cfg.pop("source"), **cfg)


def serve(source: str | Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          log_level: str = "info", max_connections: int = 1024, **app_kw) -> None:
    """Serve `source` until interrupted. The app is built first, so a bad bundle fails before binding."""
    import uvicorn

    from ..console import console

    app = create_app(source, **app_kw)
    sock = bind(host, port)
    where = f"[{host}]" if ":" in host else host
    console.print(f"serving {source} on http://{where}:{port}/ (page at /, API docs at /docs); Ctrl-C stops")
    if workers == 1:
        config = uvicorn.Config(app, log_level=log_level, timeout_keep_alive=5, limit_concurrency=max_connections)
        uvicorn.Server(config).run(sockets=[sock])
        return
    from uvicorn.supervisors import Multiprocess

    os.environ["DAXIAO_SERVE"] = json.dumps({"source": str(source), **app_kw})
    config = uvicorn.Config("daxiao.deploy.serve:app_from_env", factory=True, workers=workers, log_level=log_level,
                            timeout_keep_alive=5, limit_concurrency=max_connections)
    import inspect

    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.50 took the server's run function
        Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
    else:
        Multiprocess(config, sockets=[sock]).run()
