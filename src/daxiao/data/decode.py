"""The one way a file becomes pixels: every path (the up-front check, folder loaders, decode caches,
predict, serving) opens images here, so a rule about bad files is made once and holds everywhere.

`open_image` raises `BadImage` with a short reason for anything that is not a usable picture; callers
skip and count those, never crash on them. The rules:

- at most `MAX_PIXELS` pixels (width x height), checked from the header before any pixel is decoded;
  set it with the environment variable ``DAXIAO_MAX_IMAGE_PIXELS`` or `set_max_pixels`. Pillow's own
  limit is set to the same number and its decompression-bomb warning is an error here, so an image
  between 1x and 2x the limit is skipped too, not decoded with a warning;
- zero-byte, missing, truncated, not-an-image files and symlink loops each get their own reason;
- converting to the model's input (EXIF rotation, mode, ICC colour, size) failing is a bad image too.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .preprocess import Preprocess, to_mode

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: larger than any photo a classifier is fed, 192 MB as RGB


class BadImage(Exception):
    """A file that cannot be used as an image; `str(e)` is the reason, for the skipped-files report."""


def set_max_pixels(n: int) -> None:
    """The largest image (width x height) daxiao decodes; larger ones are skipped as bad images."""
    global MAX_PIXELS
    if n < 1:
        raise ValueError(f"the pixel limit must be >= 1 (received {n})")
    MAX_PIXELS = int(n)
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own check (in every plugin) agrees with ours


def _env_limit() -> int:
    raw = os.environ.get("DAXIAO_MAX_IMAGE_PIXELS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_PIXELS


MAX_PIXELS = _env_limit()
set_max_pixels(MAX_PIXELS)
# A decompression bomb is a bad image, never a warning on stderr while it is decoded anyway.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def open_image(path: str | Path) -> Image.Image:
    """The fully decoded image at `path` (its pixels loaded: a truncated file fails here, not later)."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("zero-byte file")
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:  # from the header: nothing decoded yet
                raise BadImage(f"too large ({w}x{h} pixels; the limit is {MAX_PIXELS:,}, DAXIAO_MAX_IMAGE_PIXELS)")
            if w < 1 or h < 1:
                raise BadImage(f"empty ({w}x{h} pixels)")
            im.load()
            return im.copy()  # the copy outlives the closed file; EXIF (in .info) comes with it
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("missing file (or a broken link)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"too large (a decompression bomb; the limit is {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image (unreadable: UnidentifiedImageError)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadImage("symlink loop") from None
        if any(m in str(e).lower() for m in ("truncated", "broken data stream", "image file is")):
            raise BadImage("truncated (unreadable: OSError)") from None
        raise BadImage(f"unreadable ({type(e).__name__})") from None
    except Exception as e:  # Pillow raises several types for bad data (SyntaxError, ValueError, struct.error ...)
        raise BadImage(f"unreadable ({type(e).__name__})") from None


def check_file(path: str | Path) -> tuple[str | None, bool]:
    """(problem or None, whether the image is greyscale): a full decode and the mode conversion, as
    training will do, so a file that would fail mid-epoch is found now."""
    try:
        im = open_image(path)
        grey = im.mode in GREY_MODES
        _convert(lambda: to_mode(ImageOps.exif_transpose(im), "L" if grey else "RGB"))
    except BadImage as e:
        return str(e), False
    return None, grey


def decode_file(path: str | Path, pre: Preprocess) -> torch.Tensor:
    """`path` as the model's input: uint8 (channels, size, size), EXIF orientation applied."""
    im = open_image(path)
    return _convert(lambda: pre.pil_to_uint8(im))


def _convert(fn):
    try:
        return fn()
    except BadImage:
        raise
    except Exception as e:  # broken EXIF, an ICC profile lcms refuses, a mode Pillow cannot convert
        raise BadImage(f"cannot convert ({type(e).__name__}: {str(e)[:60]})") from None
