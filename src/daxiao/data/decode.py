"""The one way a file becomes pixels: every path (the up-front check, folder loaders, decode caches,
predict, serving) opens images here, so a rule about bad files is made once and holds everywhere.

`open_image` raises `BadImage` with a short reason for anything that is not a usable picture; callers
skip and count those, never crash on them. It takes a path or, for uploads, the bytes themselves.
No torch at import: the torch-free runtime (daxiao.deploy) decodes through here too.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .preprocess import Preprocess

if TYPE_CHECKING:
    import torch

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


class BadImage(Exception):
    """A file that cannot be used as an image; `str(e)` is the reason, for the skipped-files report."""


class TooManyPixels(BadImage):
    """An image whose header declares more pixels than allowed (a decompression bomb, or just too big)."""


def open_image(source: str | Path | bytes, max_pixels: int | None = None) -> Image.Image:
    """The fully decoded image at `source`, a path or the file's bytes (its pixels loaded: a truncated file
    fails here, not later). `max_pixels` refuses larger images from their header, before decoding; Pillow's
    own decompression-bomb limit (Image.MAX_IMAGE_PIXELS) applies either way."""
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
            if max_pixels is not None and w * h > max_pixels:
                raise TooManyPixels(f"too many pixels ({w}x{h}; the limit is {max_pixels:,})")
            im.load()
            return im.copy()  # the copy outlives the closed file; EXIF (in .info) comes with it
    except BadImage:
        raise
    except FileNotFoundError:
        raise BadImage("missing file") from None
    except Image.DecompressionBombError:
        raise TooManyPixels(f"too many pixels (over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,})") from None
    except Exception as e:  # Pillow raises several types for bad data (UnidentifiedImageError, OSError, ...)
        raise BadImage(f"unreadable ({type(e).__name__})") from None


def check_file(path: str | Path) -> tuple[str | None, bool]:
    """(problem or None, whether the image is greyscale): a full decode, as training will do."""
    try:
        im = open_image(path)
    except BadImage as e:
        return str(e), False
    return None, im.mode in GREY_MODES


def decode_array(source: str | Path | bytes, pre: Preprocess, max_pixels: int | None = None) -> np.ndarray:
    """`source` (a path or the file's bytes) as the model's input: uint8 (channels, size, size) array."""
    return pre.to_array(open_image(source, max_pixels))


def decode_file(path: str | Path, pre: Preprocess) -> torch.Tensor:
    """`path` as the model's input: uint8 (channels, size, size) tensor, EXIF orientation applied."""
    return pre.pil_to_uint8(open_image(path))


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
        raise BadImage("missing file") from None
    except Exception as e:  # as open_image: any Pillow failure is a reason, never a crash
        raise BadImage(f"unreadable ({type(e).__name__})") from None
