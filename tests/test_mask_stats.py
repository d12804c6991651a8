"""``sam2_jax.processing.mask_stats``: the grouped taps are torch's bilinear taps, and the stability scores and
boxes counted over them equal thresholding the gathered upsampling (``upsample_bilinear_taps``) exactly, and the
official ``calculate_stability_score`` / ``batched_mask_to_box`` on torch's ``F.interpolate`` up to one-ulp
flips, at sizes above, below and far above the low-res grid (the uint8 path with more than 15 rows a group)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sam2.utils import amg as ref

from sam2_jax.processing.boxes import mask_to_box
from sam2_jax.processing.mask_stats import grouped_taps, stability_and_boxes, upsample_grouped
from sam2_jax.processing.masks import stability_score, upsample_bilinear_taps

SIZES = [(1200, 1800), (333, 517), (37, 300), (100, 90), (3, 5), (4200, 64)]

_stats = jax.jit(stability_and_boxes, static_argnames=("size", "empty_value"))


def _logits(seed: int, n: int = 6, h: int = 64, w: int = 48) -> np.ndarray:
    """Blobs with noise (boxes inside the frame), an empty mask, a one-pixel mask and a full one."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.stack(
        [(12 - np.hypot(yy - rng.uniform(10, h - 10), xx - rng.uniform(10, w - 10))) / 3 for _ in range(n)]
    ) + rng.normal(size=(n, h, w))
    out[0] = -8.0
    out[1] = -8.0
    out[1, h // 2, w // 3] = 8.0
    out[2] = 8.0
    return out.astype(np.float32)


@pytest.mark.parametrize("n_in, n_out", [(256, 1200), (256, 1800), (64, 37), (48, 4200), (5, 3), (7, 7)])
def test_grouped_taps_place_every_output_once_in_order(n_in, n_out):
    taps = grouped_taps(n_in, n_out)
    assert taps.index.shape[0] == n_in + 1
    placed = taps.index[taps.index >= 0]
    np.testing.assert_array_equal(placed, np.arange(n_out))  # each output once, in row-major slot order
    padding = taps.index < 0
    assert np.isnan(taps.w0[padding]).all() and np.isnan(taps.w1[padding]).all()
    assert not np.isnan(taps.w0[~padding]).any()


@pytest.mark.parametrize("size", SIZES[1:5])
def test_upsample_grouped_is_the_gathered_upsampling(size):
    logits = _logits(0)
    grouped = np.asarray(upsample_grouped(logits, size))  # (K, Gh, Sh, Gw, Sw)
    rows, cols = grouped_taps(64, size[0]), grouped_taps(48, size[1])
    dense = np.full((len(logits), *size), np.nan, np.float32)
    r, c = rows.index[:, :, None, None], cols.index[None, None]
    rr, cc = np.broadcast_arrays(r, c)
    valid = (rr >= 0) & (cc >= 0)
    dense[:, rr[valid], cc[valid]] = grouped[:, valid]
    gathered = np.asarray(upsample_bilinear_taps(logits, size))
    np.testing.assert_allclose(dense, gathered, rtol=0, atol=2e-6)  # every pixel written; one ulp at most
    assert np.isnan(grouped[:, ~valid]).all()  # padding passes no threshold
    torch_up = F.interpolate(torch.from_numpy(logits)[:, None], size, mode="bilinear", align_corners=False)
    np.testing.assert_allclose(dense, torch_up[:, 0].numpy(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("threshold, offset", [(0.0, 1.0), (0.5, 0.25)])
def test_stability_and_boxes_equal_thresholding_the_upsampled_logits(size, threshold, offset):
    logits = _logits(sum(size))
    stability, boxes = (np.asarray(v) for v in _stats(logits, size, threshold, offset))
    up = upsample_bilinear_taps(logits, size)
    np.testing.assert_array_equal(stability, np.asarray(stability_score(up, threshold, offset)))
    np.testing.assert_array_equal(boxes, np.asarray(mask_to_box(up > threshold)))
    assert boxes.dtype == np.int32 and boxes.shape == (len(logits), 4)
    assert np.isnan(stability[0]) and (boxes[0] == 0).all()  # empty: NaN and the official empty box
    assert stability[2] == 1.0 and (boxes[2] == [0, 0, size[1] - 1, size[0] - 1]).all()
    # the official numbers on torch's upsampling: equal but for pixels a float32 ulp from a threshold
    theirs = F.interpolate(torch.from_numpy(logits)[:, None], size, mode="bilinear", align_corners=False)[:, 0]
    ref_stability = ref.calculate_stability_score(theirs, threshold, offset).numpy()
    np.testing.assert_allclose(stability, ref_stability, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(boxes, ref.batched_mask_to_box(theirs > threshold).numpy())


def test_empty_value_and_batch_axes():
    logits = _logits(3).reshape(2, 3, 64, 48)
    stability, boxes = _stats(logits, (90, 70), 0.0, 1.0, empty_value=1.0)
    assert stability.shape == (2, 3) and boxes.shape == (2, 3, 4)
    assert float(stability[0, 0]) == 1.0
    flat, flat_boxes = _stats(logits.reshape(6, 64, 48), (90, 70), 0.0, 1.0, empty_value=1.0)
    np.testing.assert_array_equal(np.asarray(stability).ravel(), np.asarray(flat))
    np.testing.assert_array_equal(np.asarray(boxes).reshape(6, 4), np.asarray(flat_boxes))
