"""The bad-image corpus, built on the spot (no binaries in git): every kind of odd file a folder of
photos collects, with the exact counts a command must report for it."""

from __future__ import annotations

import io
import itertools
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from conftest import draw
from PIL import Image


def cmyk_icc_profile() -> bytes:
    """A tiny but valid ICC v2 input profile for CMYK (a lut8 A2B0 table to Lab), written by hand:
    Pillow's ImageCms can create sRGB/Lab/XYZ profiles but not a CMYK one, and no CMYK profile is
    installed here. Ink makes the colour darker; K=1 is black; no ink is white."""
    def s15(x: float) -> bytes:
        return struct.pack(">i", round(x * 65536))

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    text = b"daxiao test CMYK\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + struct.pack(">II", 0, 0) + \
        struct.pack(">HB", 0, 0) + b"\0" * 67
    wtpt = b"XYZ " + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249)
    cprt = b"text" + b"\0" * 4 + b"public domain\0"
    clut = bytearray()
    for c, m, y, k in itertools.product((0, 1), repeat=4):  # first input varies slowest
        light = (1 - k) * (1 - 0.25 * (c + m + y))
        a = 128 + 40 * (m - c)          # cyan is -a, magenta +a
        b = 128 + 40 * (y - (c + m) / 2)
        clut += bytes((round(255 * light), round(a), round(b)))
    ramp = bytes(range(256))
    lut = (b"mft1" + b"\0" * 4 + bytes((4, 3, 2, 0)) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
           + ramp * 4 + bytes(clut) + ramp * 3)
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += pad(body)
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"scnrCMYKLab "
              + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249)
              + b"\0" * 48)
    assert len(header) == 128
    return header + table + data


def bomb_png(width: int = 60000, height: int = 60000) -> bytes:
    """A PNG header claiming width x height pixels and one tiny IDAT: a decompression bomb's shape."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@dataclass
class Corpus:
    root: Path
    good: dict[str, int] = field(default_factory=dict)   # class -> readable images
    bad: dict[str, int] = field(default_factory=dict)    # reason kind -> files
    bad_by_class: dict[str, int] = field(default_factory=dict)

    @property
    def n_good(self) -> int:
        return sum(self.good.values())

    @property
    def n_bad(self) -> int:
        return sum(self.bad.values())

    def add_good(self, cls: str) -> None:
        self.good[cls] = self.good.get(cls, 0) + 1

    def add_bad(self, cls: str, kind: str) -> None:
        self.bad[kind] = self.bad.get(kind, 0) + 1
        self.bad_by_class[cls] = self.bad_by_class.get(cls, 0) + 1


H, V, SQ, BROKEN = "bar h", "竖条 ünï", "square", "broken"  # a space, CJK and accents in class names


def build_corpus(root: Path, per_class: int = 6, size: int = 24) -> Corpus:
    c = Corpus(root)
    for k, cls in enumerate((H, V, SQ)):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(per_class):  # plain good images, some with upper-case extensions
            draw(k, size, seed=10 * k + i).save(d / f"img{i}.{'PNG' if i % 2 else 'png'}")
            c.add_good(cls)
    h, v, sq = (root / x for x in (H, V, SQ))
    photo = draw(0, 40, seed=99)

    # ---- odd but good: each must be used ----
    cmyk = Image.merge("CMYK", [Image.fromarray(np.full((size, size), x, np.uint8)) for x in (0, 200, 200, 0)])
    cmyk.save(h / "cmyk.jpg", icc_profile=cmyk_icc_profile())
    c.add_good(H)
    Image.fromarray(np.asarray(draw(0, size, seed=7, rgb=False), np.uint16) * 257).save(h / "grey16.png")
    c.add_good(H)
    pal = draw(1, size, seed=5).convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    pal.save(v / "palette.png", transparency=0)
    c.add_good(V)
    rgba = draw(1, size, seed=6).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(v / "rgba.png")
    c.add_good(V)
    frames = [draw(2, size, seed=s) for s in (1, 2, 3)]
    frames[0].save(sq / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    c.add_good(SQ)
    Image.new("RGB", (1, 1), (200, 200, 200)).save(sq / "one_pixel.png")
    c.add_good(SQ)
    exif = Image.Exif()
    exif[0x010E] = "x" * 60000  # ImageDescription: a 60 kB EXIF block, near the JPEG segment limit
    photo.save(h / "huge_exif.jpg", exif=exif.tobytes())
    c.add_good(H)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # Orientation: rotate 90 degrees to display
    photo.transpose(Image.Transpose.ROTATE_90).save(v / "exif_rotated.JPG", exif=rotated.tobytes())
    c.add_good(V)
    deep = sq.joinpath(*[f"level{i}" for i in range(30)])
    deep.mkdir(parents=True)
    draw(2, size, seed=77).save(deep / "deep.Png")
    c.add_good(SQ)

    # ---- bad: each must be skipped and counted with its reason ----
    jpg = io.BytesIO()
    photo.save(jpg, "JPEG")
    (h / "truncated.jpg").write_bytes(jpg.getvalue()[: len(jpg.getvalue()) // 2])
    c.add_bad(H, "truncated")
    (v / "zero.jpg").write_bytes(b"")
    c.add_bad(V, "zero-byte file")
    (sq / "notes.jpg").write_text("this is a text file, not a picture\n")
    c.add_bad(SQ, "not an image")
    (sq / "bomb.png").write_bytes(bomb_png())
    c.add_bad(SQ, "too large")
    os.symlink("loop_b.jpg", h / "loop_a.jpg")  # a symlink loop
    os.symlink("loop_a.jpg", h / "loop_b.jpg")
    c.add_bad(H, "symlink loop")
    c.add_bad(H, "symlink loop")
    os.symlink("..", sq / "parent_loop")  # a folder link back up: must not be followed forever
    b = root / BROKEN  # a class folder with only bad files
    b.mkdir()
    (b / "a.png").write_bytes(b"")
    c.add_bad(BROKEN, "zero-byte file")
    (b / "b.png").write_text("not a png")
    c.add_bad(BROKEN, "not an image")
    (b / "c.jpg").write_bytes(jpg.getvalue()[:200])
    c.add_bad(BROKEN, "truncated")
    for d in (root, h, sq):  # macOS litter: not an image extension, ignored (neither used nor counted)
        (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 100)
    return c
