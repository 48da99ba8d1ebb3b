"""How a picture becomes the model's input: mode -> channels -> size -> normalization. Recorded with every
model so prediction sees images exactly as training did.

This module imports no torch: the PIL/numpy steps (`Preprocess.to_array`, `Preprocess.normalize_array`)
are the one implementation that training, torch predict and the torch-free ONNX runtime (daxiao.deploy)
all call. The torch methods are thin wrappers that import torch when first called.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from ..errors import check_choice

if TYPE_CHECKING:
    import torch

RESIZE_MODES = ("squash", "crop", "pad")


@dataclass
class Preprocess:
    image_size: int
    channels: int
    resize: str = "squash"  # squash: whole image, aspect ignored (Keras flow_from_directory's behaviour)
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        check_choice("resize", self.resize, RESIZE_MODES)
        self.mean, self.std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_array(self, img: Image.Image) -> np.ndarray:
        """A PIL image of any mode and size -> (channels, size, size) uint8 array, EXIF orientation applied."""
        img = ImageOps.exif_transpose(img)
        img = to_mode(img, "L" if self.channels == 1 else "RGB")
        s = self.image_size
        if img.size != (s, s):
            if self.resize == "squash":
                img = img.resize((s, s), Image.BILINEAR)
            elif self.resize == "crop":  # shorter side to s, centre crop: fills the frame, may cut edges
                img = ImageOps.fit(img, (s, s), Image.BILINEAR)
            else:  # longer side to s, black borders: keeps everything and the aspect ratio
                img = ImageOps.pad(img, (s, s), Image.BILINEAR, color=0)
        arr = np.asarray(img, dtype=np.uint8)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return np.array(arr.transpose(2, 0, 1), order="C")  # a writable copy, not a view of PIL's buffer

    def pil_to_uint8(self, img: Image.Image) -> torch.Tensor:
        """`to_array` as a (channels, size, size) uint8 tensor."""
        import torch

        return torch.from_numpy(self.to_array(img))

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift), float32 per channel: normalized = uint8 * scale + shift = (x/255 - mean) / std."""
        scale = np.array([1 / (255 * s) for s in self.std], dtype=np.float32)
        shift = np.array([-m / s for m, s in zip(self.mean, self.std, strict=True)], dtype=np.float32)
        return scale, shift

    def normalize_array(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (B, C, H, W) -> float32 model input, with the coefficients `normalize` uses."""
        scale, shift = (c.reshape(1, -1, 1, 1) for c in self.coefficients())
        out = batch.astype(np.float32)
        out *= scale
        out += shift
        return out

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) tensor -> float32, (x/255 - mean) / std, as one fused multiply-add."""
        import torch

        scale, shift = (torch.from_numpy(c).view(1, -1, 1, 1).to(batch.device) for c in self.coefficients())
        return torch.addcmul(shift, batch.float(), scale)


def to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL mode to 'L' or 'RGB'; transparency is composited on black; 16-bit and 32-bit values
    are scaled by their bit depth (the same raw value is always the same grey, so two scans of different
    brightness stay different); CMYK with an embedded ICC profile goes through it to sRGB."""
    if img.mode == mode:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "F":  # floats: [0, 1] as most tools write them, else already on the 0-255 scale
            scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        else:  # 16-bit as PNG and TIFF store it ("I" is how Pillow opens some 16-bit files); 32-bit beyond that
            scale = 255.0 / 65535.0 if not arr.size or float(arr.max()) <= 65535 else 255.0 / 4294967295.0
        img = Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L")
    elif img.mode == "CMYK" and img.info.get("icc_profile"):
        img = _cmyk_through_icc(img)
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert(mode)


def _cmyk_through_icc(img: Image.Image) -> Image.Image:
    """CMYK -> sRGB through the file's own profile (Pillow's ImageCms, littleCMS); the naive conversion
    if the profile cannot be used."""
    import io

    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # no littleCMS in this Pillow, or a damaged profile: plain arithmetic conversion
        return img.convert("RGB")


def channel_convert(images: torch.Tensor, channels: int, view: bool = False) -> torch.Tensor:
    """uint8 (N, C, H, W) with C in {1, 3} -> `channels` channels (grey repeated, or ITU-R 601 luma).
    With `view`, grey is repeated as a stride-0 view: no copy until a batch is indexed from it."""
    import torch  # here, not at the top: the module stays importable without torch (see the docstring)

    c = images.shape[1]
    if c == channels:
        return images
    if channels == 3:
        rgb = images.expand(-1, 3, -1, -1)
        return rgb if view else rgb.contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Resize a whole in-memory uint8 set at once (bilinear; antialiased when shrinking)."""
    import torch

    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty(*images.shape[:2], size, size, dtype=torch.uint8)
    for i in range(0, len(images), chunk):  # a chunk at a time: the float copy of a whole set may not fit
        x = torch.nn.functional.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear",
                                            align_corners=False, antialias=size < images.shape[-1])
        out[i:i + chunk] = x.round().clamp(0, 255).to(torch.uint8)
    return out
