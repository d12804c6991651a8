"""Held-out evaluation of a fine-tuning run: the mIoU from one click per object (``Trainer.evaluate``).

  center_clicks(masks (..., H, W) bool) -> (..., 2) float32 (x, y): the click per mask
  evaluate(trainer, params=None, data=None, batch_size=None, mask_size=256, max_objects=4) -> float mIoU

One positive click per object at its centre (``center_clicks``: the mask pixel farthest from the mask's border,
ties to the one nearest the centroid), the trainer's jitted ``eval`` (3 masks decoded, the one with the highest
predicted IoU kept, empty when the object score is <= 0), IoU with the target at the masks' resolution, averaged
over the objects with a non-empty target. ``data``: batches (an iterable of loader-style dicts: pixel_values
(B, S, S, 3), masks (B, P, m, m), valid (B, P) optional) or a ``SegmentationDataset`` (read through a
``DataLoader`` in order, ``mask_size``, ``max_objects`` per image). A batch is padded to a multiple of the device
count. Multi-host: every process reads the same batches in full and sends its devices' rows; the IoUs are gathered,
so every process returns the same mIoU.
"""

from __future__ import annotations

import numpy as np

from . import multihost

__all__ = ["center_clicks", "evaluate"]


def center_clicks(masks) -> np.ndarray:
    """(..., H, W) bool -> (..., 2) float32 (x, y): the pixel farthest from the mask's border (repeated 4-neighbour
    erosion, the image edge counting as border), the one nearest the centroid of those; (0, 0) for an empty mask."""
    masks = np.asarray(masks, bool)
    h, w = masks.shape[-2:]
    cur, last = masks.copy(), masks.copy()
    while cur.any():
        last = np.where(cur.any(axis=(-2, -1), keepdims=True), cur, last)
        pad = np.pad(cur, [(0, 0)] * (cur.ndim - 2) + [(1, 1), (1, 1)])
        cur = cur & pad[..., :-2, 1:-1] & pad[..., 2:, 1:-1] & pad[..., 1:-1, :-2] & pad[..., 1:-1, 2:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    n = np.maximum(last.sum(axis=(-2, -1)), 1)[..., None, None]
    cx, cy = (last * xs).sum(axis=(-2, -1), keepdims=True) / n, (last * ys).sum(axis=(-2, -1), keepdims=True) / n
    dist = np.where(last, (xs - cx) ** 2 + (ys - cy) ** 2, np.inf).reshape(*masks.shape[:-2], h * w)
    best = np.argmin(dist, axis=-1)
    return np.stack([best % w, best // w], axis=-1).astype(np.float32)


def evaluate(
    trainer, params=None, data=None, *, batch_size: int | None = None, mask_size: int = 256, max_objects: int = 4
) -> float:
    """See the module docstring; ``params`` default to the trainer's current ones."""
    params = trainer.params if params is None else trainer.replicate(params)
    loader = None
    if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple)):
        from .loader import DataLoader

        size = trainer.config.prompt_encoder_config.image_size
        loader = data = DataLoader(
            data,
            batch_size or trainer.batch_size,
            image_size=size,
            mask_size=mask_size,
            max_objects=max_objects,
            shuffle=False,
            drop_last=False,
            epochs=1,
        )
    n, ious, sharding = len(trainer.devices), [], trainer._data
    try:
        for batch in data:
            masks = np.asarray(batch["masks"], bool)
            valid = np.asarray(batch.get("valid", np.ones(masks.shape[:2], bool)), bool) & masks.any((-2, -1))
            pixels = np.asarray(batch["pixel_values"], np.float32)
            points = (center_clicks(masks) * (pixels.shape[-2] / masks.shape[-1]))[:, :, None]
            pad = -len(masks) % n
            if pad:
                pixels, points, masks = (
                    np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in (pixels, points, masks)
                )
            inputs = (multihost.host_put(a, sharding) for a in (pixels, points, masks))
            iou = multihost.gather(trainer._eval(params, *inputs))[: len(valid)]
            ious.extend(iou[valid].tolist())
    finally:
        if loader is not None and hasattr(loader, "close"):
            loader.close()
    return float(np.mean(ious)) if ious else float("nan")
