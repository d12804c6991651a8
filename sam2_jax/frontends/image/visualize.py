"""Drawing masks for people to look at: coloured, outlined masks with the prompts over the photograph.

``overlay(image (H, W, 3) uint8, masks (K, H, W) bool, points=[((x, y), label), ...], box=(x1, y1, x2, y2) or (K, 4))``
returns a new (H, W, 3) uint8 image. Pillow only.
"""

from __future__ import annotations

import numpy as np

PALETTE = np.array(
    [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211], [0, 206, 209], [255, 140, 0]],
    np.uint8,
)


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5, points=None, box=None) -> np.ndarray:
    """Draw boolean masks (K, H, W) in distinct colours over an RGB image (H, W, 3) uint8; returns a new image."""
    masks = np.asarray(masks, bool).reshape(-1, *image.shape[:2])
    out = image.astype(np.float32).copy()
    for k, mask in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * colour
        edge = mask ^ np.pad(mask, 1, mode="edge")[1:-1, 2:] | mask ^ np.pad(mask, 1, mode="edge")[2:, 1:-1]
        out[edge] = colour
    img = out.clip(0, 255).astype(np.uint8)
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    r = max(3, min(img.shape[:2]) // 150)
    for (x, y), lab in points or []:
        fill = (0, 220, 0) if lab == 1 else (220, 0, 0)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(255, 255, 255))
    for b in [] if box is None else np.asarray(box, np.float64).reshape(-1, 4):
        draw.rectangle([float(v) for v in b], outline=(0, 255, 0), width=max(2, r // 2))
    return np.asarray(pil)
