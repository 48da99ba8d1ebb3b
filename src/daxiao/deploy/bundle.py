"""The bundle: one folder that holds everything needed to predict, and says so in bundle.json.

    BUNDLE/
      bundle.json        format, daxiao version, model files (+ sha256), default variant, preprocessing,
                         classes, input/output names, the source run's config and metrics, parity report,
                         measured latencies, int8 choices
      model.onnx         fp32 (or model.ts for --format torchscript)
      model.int8.onnx    with --int8

Reading checks the format version (a bundle from a newer daxiao is refused with the fix), that every
listed file exists and still has its recorded checksum (a swapped model file would void the parity
report), and exposes the preprocessing as the same `Preprocess` training used. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from ..data.preprocess import Preprocess
from ..errors import DaxiaoError
from ..files import atomic_write_json

__version__ = version("daxiao")  # the installed package's, as pip records it (no import of daxiao itself)
BUNDLE_FORMAT = 1  # bump when a reader of the old format would misread a new bundle
META_FILE = "bundle.json"
RUNTIMES = ("onnx", "torchscript")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Bundle:
    path: Path            # the bundle folder
    meta: dict            # bundle.json
    preprocess: Preprocess
    classes: list[str]

    @property
    def name(self) -> str:
        return self.meta["model"]["name"]

    @property
    def runtime(self) -> str:
        return self.meta["runtime"]

    @property
    def default(self) -> str:
        return self.meta["default"]

    @property
    def variants(self) -> list[str]:
        return list(self.meta["files"])

    def file(self, variant: str | None = None) -> Path:
        """The model file of `variant` ('fp32', 'int8'; default: the bundle's default)."""
        variant = variant or self.default
        if variant not in self.meta["files"]:
            raise DaxiaoError(f"{self.path} has no {variant} model (it has {', '.join(self.variants)}); "
                              f"export with --int8 for an int8 model.")
        return self.path / self.meta["files"][variant]["path"]

    @property
    def parity_passed(self) -> bool:
        return bool(self.meta.get("parity", {}).get("fp32", {}).get("passed"))


def bundle_dir(path: str | Path) -> Path | None:
    """The bundle folder `path` names (the folder, its bundle.json, or a model file inside it), else None."""
    p = Path(path)
    if p.is_dir():
        return p if (p / META_FILE).is_file() else None
    if p.is_file() and (p.name == META_FILE or (p.suffix in (".onnx", ".ts") and (p.parent / META_FILE).is_file())):
        return p.parent
    return None


def read_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Read and check a bundle folder; `verify` also checks every model file's sha256."""
    folder = bundle_dir(path)
    if folder is None:
        raise DaxiaoError(f"{path} is not a daxiao bundle (no {META_FILE}); make one with `daxiao export RUN`.")
    try:
        meta = json.loads((folder / META_FILE).read_text())
        fmt = int(str(meta["format"]).rsplit("/", 1)[-1])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DaxiaoError(f"{folder / META_FILE} is not a valid bundle description ({type(e).__name__}); "
                          "export the run again.") from None
    if fmt > BUNDLE_FORMAT:
        raise DaxiaoError(f"{folder} was written by a newer daxiao ({meta.get('daxiao_version', '?')}, bundle format "
                          f"{fmt}); this daxiao {__version__} reads format {BUNDLE_FORMAT}: upgrade daxiao "
                          "(pip install -U daxiao).")
    missing = [k for k in ("runtime", "files", "default", "preprocess", "classes", "model") if k not in meta]
    if missing or meta.get("runtime") not in RUNTIMES:
        raise DaxiaoError(f"{folder / META_FILE} lacks {', '.join(missing) or 'a known runtime'}; "
                          "export the run again.")
    for variant, f in meta["files"].items():
        p = folder / f["path"]
        if Path(f["path"]).name != f["path"]:  # metadata is data: a bundle may not point outside itself
            raise DaxiaoError(f"{folder / META_FILE} names a model file outside the bundle ({f['path']!r}).")
        if not p.is_file():
            raise DaxiaoError(f"{folder} is missing {f['path']} (its {variant} model); copy the whole bundle folder "
                              "or export again.")
        if verify and sha256(p) != f["sha256"]:
            raise DaxiaoError(f"{p} changed since export (sha256 differs from {META_FILE}); its parity report no "
                              "longer applies: export again.")
    try:
        pre = Preprocess(**meta["preprocess"])
    except (TypeError, ValueError) as e:
        raise DaxiaoError(f"{folder / META_FILE} has an invalid preprocessing spec ({e}).") from None
    return Bundle(folder, meta, pre, list(meta["classes"]))


def write_bundle(out: Path, files: dict[str, Path], meta: dict, exist_ok: bool = False) -> Path:
    """Assemble the bundle in a temporary sibling folder, then rename it to `out`: a failure leaves
    nothing behind, and an existing `out` is replaced only with `exist_ok` (and only once the new one is whole).

    `files` maps variant ('fp32', 'int8') -> a finished model file, moved into the bundle.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not exist_ok:
        raise DaxiaoError(f"{out} exists; choose another --out, or pass --exist-ok to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        meta = {"format": f"daxiao-bundle/{BUNDLE_FORMAT}", "daxiao_version": __version__, **meta, "files": {}}
        for variant, src in files.items():
            dst = stage / src.name
            shutil.move(str(src), dst)
            meta["files"][variant] = {"path": dst.name, "bytes": dst.stat().st_size, "sha256": sha256(dst)}
        atomic_write_json(stage / META_FILE, meta)
        umask = os.umask(0)
        os.umask(umask)  # mkdtemp/mkstemp make private files; a bundle is meant to be copied and served
        for f in (stage, *stage.iterdir()):
            f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out
