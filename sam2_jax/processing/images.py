"""Images in, RGB pixels out: decoding, RGB conversion (alpha over white, as transformers) and resizing.

to_rgb_uint8(image, where)    a PIL image or an (H, W), (H, W, 1|3|4) array (uint8, or float in [0, 1])
                              -> (H, W, 3) uint8; ``where`` names the image in errors
read_image(path, where)       an image file -> (H, W, 3) uint8, turned upright by its EXIF orientation (as
                              transformers' ``load_image``); unreadable files raise ``ValueError``
open_upright(path)            an image file -> a loaded PIL image, EXIF orientation applied: every path the
                              package reads a photo from goes through it
resize_square(rgb, size)      (H, W, 3) uint8 -> (size, size, 3) float32 in 0..255, antialiased bilinear
                              in torchvision's pass order
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # SAM 2's pixel normalisation (image processor and video frames)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb_uint8(image: Any, where: str) -> np.ndarray:
    """A PIL image or an (H, W), (H, W, 1|3|4) array (uint8, or float in [0, 1]) -> (H, W, 3) uint8."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return flatten_alpha(image)
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{where}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{where}: empty image of shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{where}: image values must be finite numbers")
        if np.issubdtype(arr.dtype, np.floating) and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return flatten_alpha(Image.fromarray(arr))


def flatten_alpha(image) -> np.ndarray:
    """RGB as transformers' ``convert_to_rgb`` makes it for PIL images: images with an alpha band or a
    transparency key are composited over white with PIL's ``alpha_composite``. (H, W, 4) arrays take the same
    path, so an image gives the same pixels as a PIL image or as an array; transformers composites arrays in
    float32 and truncates back to uint8, one level below PIL on about a quarter of the pixels."""
    from PIL import Image

    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def read_image(path: str | os.PathLike, where: str) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8; a missing, truncated or foreign file raises ``ValueError``."""
    try:
        return to_rgb_uint8(open_upright(path), where)
    except (OSError, ValueError, SyntaxError) as e:  # PIL raises these for missing, truncated or foreign files
        raise ValueError(f"{where}: cannot read image {path}: {e}") from e


def open_upright(path: str | os.PathLike):
    """A loaded PIL image with its EXIF orientation applied (a phone photo taken sideways comes out as shown).
    PIL's errors (missing, truncated or foreign files) pass through."""
    from PIL import Image, ImageOps

    with Image.open(Path(path)) as im:
        im.load()
        upright = ImageOps.exif_transpose(im)
    return im if upright is None else upright


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) float32, antialiased bilinear (Pillow's).

    Two passes, horizontal first, each rounded to uint8, as torchvision's antialiased uint8 resize does. A single
    Pillow call picks its own pass order (vertical first for some shapes), which puts about a quarter of the
    pixels of a noisy image one level off torchvision's; this way it is well under 1%."""
    from PIL import Image

    wide = Image.fromarray(rgb).resize((size, rgb.shape[0]), Image.BILINEAR)
    return np.asarray(wide.resize((size, size), Image.BILINEAR), np.float32)
