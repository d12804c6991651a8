"""Connected components in pure NumPy, and SAM 2's hole filling / sprinkle removal built on them.

``small_regions(mask (..., H, W) bool, max_area)`` -> (small (..., H, W) bool, labels, areas) is the one core
of both clean-ups: ``fill_holes_and_remove_sprinkles(logits (..., H, W), max_hole_area, max_sprinkle_area,
threshold)`` -> (..., H, W) float32 logits (the official image predictor's, on low-res logits),
``fill_holes_in_mask_scores(logits (N, 1, H, W) or (..., H, W), max_area)`` -> float32 logits of the same shape
(the official video predictor's ``fill_hole_area``: holes only, filled with 0.1) and
``remove_small_regions(mask (..., H, W), area, "holes" | "islands")`` -> (mask, changed) (the official
generator's, on finished masks).

``connected_components(masks (..., H, W) bool, connectivity=8)`` -> ``(labels, areas)``, both (..., H, W) int:
labels are 1-based per image (0 on background), areas give every foreground pixel the size of its component
(0 on background), like the official package's CUDA ``get_connected_components`` (8-connectivity).

It is a vectorised union-find: every edge between neighbouring foreground pixels hooks the larger root onto
the smaller one (``np.minimum.at``), then pointer jumping compresses the trees; rounds repeat until no root
changes (a few rounds, logarithmic in the component diameter in practice).
"""

from __future__ import annotations

import numpy as np

_OFFSETS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}


def _edges(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (a, b) of neighbouring foreground pixel pairs in a (N, H, W) stack."""
    n, h, w = mask.shape
    idx = np.arange(n * h * w).reshape(n, h, w)
    src, dst = [], []
    for dy, dx in _OFFSETS[connectivity]:
        ys = slice(0, h - dy)
        yd = slice(dy, h)
        xs = slice(max(0, -dx), w - max(0, dx))
        xd = slice(max(0, dx), w - max(0, -dx))
        both = mask[:, ys, xs] & mask[:, yd, xd]
        src.append(idx[:, ys, xs][both])
        dst.append(idx[:, yd, xd][both])
    return np.concatenate(src), np.concatenate(dst)


def connected_components(masks: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Labels and per-pixel component areas of boolean masks (..., H, W); see the module docstring."""
    if connectivity not in _OFFSETS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    masks = np.asarray(masks, bool)
    shape = masks.shape
    if masks.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {shape}")
    stack = masks.reshape(-1, *shape[-2:])
    flat = stack.reshape(-1)
    node_of = np.cumsum(flat) - 1  # foreground pixel -> node id (only foreground pixels are nodes)
    n_nodes = int(flat.sum())
    parent = np.arange(n_nodes, dtype=np.int64)
    a, b = _edges(stack, connectivity)
    a, b = node_of[a], node_of[b]
    while len(a):
        ra, rb = parent[a], parent[b]
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        changed = lo != hi
        if not changed.any():
            break
        np.minimum.at(parent, hi[changed], lo[changed])
        while True:  # pointer jumping until every node points at a root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        a, b = a[changed], b[changed]
    counts = np.bincount(parent, minlength=n_nodes)
    areas = np.zeros(flat.size, np.int64)
    areas[flat] = counts[parent]
    # 1-based labels numbered per image, in raster order of the component roots
    is_root = parent == np.arange(n_nodes)
    image_of = np.flatnonzero(flat) // (stack.shape[1] * stack.shape[2])
    roots_before = np.cumsum(np.bincount(image_of[is_root], minlength=len(stack))) - np.bincount(
        image_of[is_root], minlength=len(stack)
    )
    labels = np.zeros(flat.size, np.int64)
    labels[flat] = np.cumsum(is_root)[parent] - roots_before[image_of]
    return labels.reshape(shape), areas.reshape(shape)


def small_regions(mask, max_area: float, inclusive: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one core of hole filling and island removal: the pixels of 8-connected components of a boolean mask
    (..., H, W) whose area is <= ``max_area`` (``< max_area`` when not ``inclusive``), with the components'
    labels and per-pixel areas (``connected_components``)."""
    labels, areas = connected_components(mask, connectivity=8)
    small = (labels > 0) & ((areas <= max_area) if inclusive else (areas < max_area))
    return small, labels, areas


def fill_holes_and_remove_sprinkles(
    mask_logits: np.ndarray, max_hole_area: float, max_sprinkle_area: float, mask_threshold: float = 0.0
) -> np.ndarray:
    """The official ``SAM2Transforms.postprocess_masks`` clean-up, on (..., H, W) logits, on every platform.

    Background components (logits <= threshold, 8-connected) of area <= ``max_hole_area`` become threshold + 10;
    foreground components (> threshold) of area <= ``max_sprinkle_area`` become threshold - 10. Both sets are
    found on the input logits, as the official code does (its sprinkle pass labels the mask from before the holes
    were filled), so a filled hole never merges with the foreground around it to save it from removal, and the
    two sets are disjoint. Components touching the border count like any other, as in the official kernel. An
    area <= 0 turns its pass off.
    """
    out = np.array(mask_logits, dtype=np.float32, copy=True)
    t = float(mask_threshold)
    holes = small_regions(out <= t, max_hole_area)[0] if max_hole_area > 0 else None
    sprinkles = small_regions(out > t, max_sprinkle_area)[0] if max_sprinkle_area > 0 else None
    if holes is not None:
        out[holes] = np.float32(t + 10.0)
    if sprinkles is not None:
        out[sprinkles] = np.float32(t - 10.0)
    return out


def fill_holes_in_mask_scores(mask_logits: np.ndarray, max_area: float) -> np.ndarray:
    """The official ``sam2.utils.misc.fill_holes_in_mask_scores`` (``SAM2VideoPredictor(fill_hole_area=...)``,
    CUDA only there) on every platform: (N, 1, H, W) logits, or any (..., H, W) stack, -> float32, same shape.

    Background components (logits <= 0, 8-connected per plane, those touching the border included) of area
    <= ``max_area`` are set to float32 0.1; nothing else changes (the official function removes no sprinkles).
    ``max_area <= 0`` returns an unchanged copy (the official asserts ``max_area > 0``; its predictor skips the
    call when ``fill_hole_area`` is 0). The input is not modified.
    """
    out = np.array(mask_logits, dtype=np.float32, copy=True)
    if out.ndim < 2:
        raise ValueError(f"mask_logits must be (N, 1, H, W) or (..., H, W), got shape {out.shape}")
    if max_area > 0:
        out[small_regions(out <= 0, max_area)[0]] = np.float32(0.1)
    return out


def remove_small_regions(mask, area_thresh: float, mode: str) -> tuple[np.ndarray, bool | np.ndarray]:
    """The official ``remove_small_regions`` on finished masks: fill holes (``mode="holes"``) or drop islands
    (``"islands"``) of area < ``area_thresh`` in an (H, W) mask, 8-connected; returns the mask and whether any
    region was small. When every island is small, the largest (the first in raster order among equals) is kept.
    A stack (..., H, W) is done at once; ``changed`` is then a (...) bool array."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, bool)
    holes = mode == "holes"
    working = mask ^ holes
    small, labels, areas = small_regions(working, area_thresh, inclusive=False)
    changed = small.any(axis=(-2, -1))
    if not changed.any():
        return mask, (changed if mask.ndim > 2 else False)
    if holes:
        out = mask | small
    else:
        out = working & ~small
        none_left = changed & ~out.any(axis=(-2, -1))  # every island small: keep the largest
        if none_left.any():
            largest = areas.max(axis=(-2, -1), keepdims=True)
            first = np.where(working & (areas == largest), labels, np.iinfo(labels.dtype).max)
            keep = labels == first.min(axis=(-2, -1), keepdims=True)
            out = np.where(none_left[..., None, None], keep, out)
    return out, (changed if mask.ndim > 2 else True)
