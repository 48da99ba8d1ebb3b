"""The one way a file becomes pixels: every path (the up-front check, folder loaders, decode caches,
predict, serving) opens images here, so a rule about bad files is made once and holds everywhere.

`open_image` raises `BadImage` with a short reason for anything that is not a usable picture; callers
skip and count those, never crash on them. It takes a path or, for uploads, the bytes themselves.
No torch at import: the torch-free runtime (daxiao.deploy) decodes through here too. The rules:

- at most `MAX_PIXELS` pixels (width x height), checked from the header before any pixel is decoded;
  set it with the environment variable ``DAXIAO_MAX_IMAGE_PIXELS`` or `set_max_pixels` (a server may ask
  for less per call). Pillow's own limit is set to the same number and its decompression-bomb warning is
  an error here, so an image between 1x and 2x the limit is skipped too, not decoded with a warning;
- zero-byte, missing, truncated, not-an-image files and symlink loops each get their own reason;
- converting to the model's input (EXIF rotation, mode, ICC colour, size) failing is a bad image too.
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .preprocess import Preprocess, to_mode

if TYPE_CHECKING:
    import torch

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000: larger than any photo a classifier is fed, 192 MB as RGB


class BadImage(Exception):
    """A file that cannot be used as an image; `str(e)` is the reason, for the skipped-files report."""


class TooManyPixels(BadImage):
    """An image whose header declares more pixels than allowed (a decompression bomb, or just too big)."""


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


def open_image(source: str | Path | bytes, max_pixels: int | None = None) -> Image.Image:
    """The fully decoded image at `source`, a path or the file's bytes (its pixels loaded: a truncated file
    fails here, not later). `max_pixels` lowers the pixel limit for this call (a server's per-upload bound)."""
    limit = min(max_pixels, MAX_PIXELS) if max_pixels else MAX_PIXELS
    try:
        if isinstance(source, bytes | bytearray | memoryview):
            if len(source) == 0:
                raise BadImage("empty upload (zero bytes)")
            opened = Image.open(io.BytesIO(source))
        else:
            path = Path(source)
            if path.stat().st_size == 0:
                raise BadImage("zero-byte file")
            opened = Image.open(path)
        with opened as im:
            w, h = im.size
            if w * h > limit:  # from the header: nothing decoded yet
                raise TooManyPixels(f"too large (too many pixels: {w}x{h}; the limit is {limit:,}, "
                                    "DAXIAO_MAX_IMAGE_PIXELS)")
            if w < 1 or h < 1:
                raise BadImage(f"empty ({w}x{h} pixels)")
            im.load()
            return im.copy()  # the copy outlives the closed file; EXIF (in .info) comes with it
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("missing file (or a broken link)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixels(f"too large (too many pixels: a decompression bomb; the limit is {limit:,})") from None
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


def decode_array(source: str | Path | bytes, pre: Preprocess, max_pixels: int | None = None) -> np.ndarray:
    """`source` (a path or the file's bytes) as the model's input: uint8 (channels, size, size) array."""
    im = open_image(source, max_pixels)
    return _convert(lambda: pre.to_array(im))


def decode_file(path: str | Path, pre: Preprocess) -> torch.Tensor:
    """`path` as the model's input: uint8 (channels, size, size) tensor, EXIF orientation applied."""
    im = open_image(path)
    return _convert(lambda: pre.pil_to_uint8(im))


def _convert(fn):
    try:
        return fn()
    except BadImage:
        raise
    except Exception as e:  # broken EXIF, an ICC profile lcms refuses, a mode Pillow cannot convert
        raise BadImage(f"cannot convert ({type(e).__name__}: {str(e)[:60]})") from None


def image_info(path: str | Path) -> tuple[int, int, str]:
    """(width, height, mode) from the header alone, as the picture will stand once EXIF orientation is
    applied (a portrait phone photo stored sideways reports its upright size): what the size rule reads."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise BadImage("zero-byte file")
        with Image.open(path) as im:
            w, h = im.size
            # EXIF read only where it is in the header (JPEG, WebP, TIFF, an early PNG chunk): PNG's
            # getexif() decodes the whole image to look after the pixels, which would make this a decode
            has_exif = "exif" in im.info or im.format in ("TIFF", "MPO")
            turned = has_exif and im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # Orientation: 90-degree turns
            return (h, w, im.mode) if turned else (w, h, im.mode)
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("missing file (or a broken link)") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise BadImage("symlink loop") from None
        raise BadImage(f"unreadable ({type(e).__name__})") from None
    except Exception as e:  # as open_image: any Pillow failure is a reason, never a crash
        raise BadImage(f"unreadable ({type(e).__name__})") from None
