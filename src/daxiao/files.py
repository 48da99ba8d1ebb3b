"""Files and folders every command writes: atomic, durable writes and run folders that are never clobbered.

`atomic_write` is the one writer: a temporary file with a unique name in the target's folder, fsync,
rename over the target, fsync of the folder. An interrupted write leaves the old file or the new one,
never half of either, and two processes never rename each other's temporary files into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import DaxiaoError


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    return atomic_write(path, json.dumps(obj, indent=indent, default=str))


def _fsync_dir(folder: Path) -> None:
    try:  # the rename itself is durable only once the folder's entry is on disk (POSIX)
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def next_free(folder: Path, base: str) -> Path:
    """`folder/base`, or `folder/base-2`, `-3` ... : the first that does not exist yet."""
    path, n = folder / base, 1
    while path.exists():
        n += 1
        path = folder / f"{base}-{n}"
    return path


RUN_FIX = "choose another --name, or pass --exist-ok to replace its files, or --resume to continue it"


def check_new_folder(path: Path, exist_ok: bool, what: str = "Run folder", fix: str = RUN_FIX) -> Path:
    """Refuse to write into a non-empty `path` unless `exist_ok`, saying which flags would allow it."""
    if path.exists() and not path.is_dir():
        raise DaxiaoError(f"{what} {path} is a file; choose another --name.")
    if path.exists() and any(path.iterdir()) and not exist_ok:
        raise DaxiaoError(f"{what} {path} exists; {fix}.")
    return path


def csv_safe(text: str) -> str:
    """A cell a spreadsheet shows as text: a leading = + - @ (a formula) gets a quote mark in front."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
