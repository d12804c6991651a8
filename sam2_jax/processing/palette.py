"""The DAVIS / YouTube-VOS label palette: object k drawn in the k-th colour of the PASCAL VOC colour map.

``davis_palette() -> (256, 3) uint8``: colour k takes bit j of k's three lowest bit triples into bits 7 - j of
red, green and blue (0 black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), ...), the palette of DAVIS 2017's
and YouTube-VOS's ``Annotations/<video>/<frame>.png``. ``palette_image(label) -> PIL.Image`` in mode "P" with
it: the pixel values stay the object ids (0..255), so tools that read indices (``np.asarray(Image.open(f))``,
the official ``PalettisedPNGSegmentLoader``) read the same labels as from a grey-level PNG.
"""

from __future__ import annotations

import numpy as np


def davis_palette() -> np.ndarray:
    k = np.arange(256)
    rgb = np.zeros((256, 3), np.int64)
    for j in range(8):  # bit triple j of k goes to bit 7 - j of each channel
        for c in range(3):
            rgb[:, c] |= ((k >> (3 * j + c)) & 1) << (7 - j)
    return rgb.astype(np.uint8)


def palette_image(label: np.ndarray):
    """An (H, W) label image of ids 0..255 as a palette PNG image (mode "P", ``davis_palette``)."""
    from PIL import Image

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"a label image must be (H, W), got shape {label.shape}")
    if label.size and int(label.max()) > 255:
        raise ValueError(f"a palette PNG holds object ids up to 255, this label image has {int(label.max())}")
    image = Image.fromarray(label.astype(np.uint8), mode="L").convert("P")
    image.putpalette(davis_palette().reshape(-1).tolist())
    return image


__all__ = ["davis_palette", "palette_image"]
