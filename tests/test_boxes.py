"""``sam2_jax.processing.boxes`` (mask boxes, box IoU, NMS) against the official ``sam2.utils.amg`` helpers and
torchvision's NMS, on random data. Equality is exact (integer or identically ordered float32 arithmetic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.utils import amg as ref
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import nms as tv_nms

from sam2_jax.processing import boxes as box_ops


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("hw", [(1, 1), (37, 23), (64, 100)])
def test_batched_mask_to_box(seed, hw):
    rng = np.random.default_rng(seed)
    masks = rng.random((2, 6, *hw)) > rng.uniform(0.9, 1.0, (2, 6, 1, 1))
    masks[0, 0] = False
    masks[1, 1] = True
    ours = box_ops.batched_mask_to_box(masks)
    theirs = ref.batched_mask_to_box(_t(masks)).numpy()
    assert ours.shape == (2, 6, 4)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(box_ops.batched_mask_to_box(masks[1, 2]), ref.batched_mask_to_box(_t(masks[1, 2])))


# ---- NMS ----------------------------------------------------------------------------------------------------


def _random_boxes(rng, n, scale=100.0, integer=False):
    xy = rng.uniform(0, scale, (n, 2))
    wh = rng.uniform(0, scale / 2, (n, 2))
    wh[rng.random(n) < 0.05] = 0.0  # some empty boxes: NaN IoU, never suppressed
    boxes = np.concatenate([xy, xy + wh], axis=1)
    return np.round(boxes) if integer else boxes.astype(np.float32)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n, thresh", [(1, 0.5), (50, 0.3), (400, 0.7), (400, 0.0), (300, 1.0)])
def test_nms_matches_torchvision(seed, n, thresh):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, n)
    scores = rng.random(n).astype(np.float32)
    scores[rng.random(n) < 0.3] = 0.5  # ties: torchvision's sort is stable (index order)
    ours = box_ops.nms(boxes, scores, thresh)
    theirs = tv_nms(_t(boxes), _t(scores), thresh).numpy()
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, theirs)
    if n > 1 and 0 < thresh < 1:
        assert len(ours) < n  # something was suppressed


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n", [200, 1500])  # torchvision: coordinate trick below 1000 boxes, per-class loop above
def test_batched_nms_matches_torchvision(seed, n):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, n, scale=300.0, integer=True)  # integer coordinates survive the offset trick
    scores = rng.permutation(n).astype(np.float32) / n  # distinct: the per-class loop's final sort is unstable
    idxs = rng.integers(0, 5, n)
    ours = box_ops.batched_nms(boxes, scores, idxs, 0.5)
    theirs = tv_batched_nms(_t(boxes).float(), _t(scores), _t(idxs), 0.5).numpy()
    np.testing.assert_array_equal(ours, theirs)
    one_class = box_ops.batched_nms(boxes, scores, None, 0.5)
    assert len(one_class) < len(ours)  # categories really separate


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 30), _random_boxes(rng, 40)
    a[0] = 0  # empty against empty below: NaN in both
    b[0] = 0
    np.testing.assert_array_equal(box_ops.box_iou(a, b), tv_box_iou(_t(a), _t(b)).numpy())
