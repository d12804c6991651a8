"""Connected components in pure NumPy, and SAM 2's hole filling / sprinkle removal built on them.

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
    holes = sprinkles = None
    if max_hole_area > 0:
        labels, areas = connected_components(out <= t)
        holes = (labels > 0) & (areas <= max_hole_area)
    if max_sprinkle_area > 0:
        labels, areas = connected_components(out > t)
        sprinkles = (labels > 0) & (areas <= max_sprinkle_area)
    if holes is not None:
        out[holes] = np.float32(t + 10.0)
    if sprinkles is not None:
        out[sprinkles] = np.float32(t - 10.0)
    return out
