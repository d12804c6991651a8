"""``sam2_jax.processing.crops`` (point grids, crop boxes, uncropping) against the official ``sam2.utils.amg``
helpers, on random data: several seeds and sizes, non-square images, crop layers 0..2. Equality is exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.utils import amg as ref

from sam2_jax.processing import boxes, crops


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# ---- grids and crops ----------------------------------------------------------------------------------------


GRIDS = [(1, 0, 1), (4, 2, 2), (32, 1, 1), (16, 2, 2), (7, 2, 2), (9, 1, 3)]


@pytest.mark.parametrize("n_per_side, n_layers, scale", GRIDS)
def test_point_grids(n_per_side, n_layers, scale):
    ours = crops.build_all_layer_point_grids(n_per_side, n_layers, scale)
    theirs = ref.build_all_layer_point_grids(n_per_side, n_layers, scale)
    assert len(ours) == len(theirs) == n_layers + 1
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_point_grid_too_coarse():
    with pytest.raises(ValueError, match="at least 1 point"):
        crops.build_all_layer_point_grids(3, 1, 4)  # int(3 / 4) = 0 points per side in layer 1


@pytest.mark.parametrize("size", [(1200, 1800), (1800, 1200), (1024, 1024), (333, 517), (50, 40)])
@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize("ratio", [512 / 1500, 0.0, 0.5])
def test_crop_boxes(size, n_layers, ratio):
    boxes, layers = crops.generate_crop_boxes(size, n_layers, ratio)
    ref_boxes, ref_layers = ref.generate_crop_boxes(size, n_layers, ratio)
    assert boxes == ref_boxes and layers == ref_layers
    assert len(boxes) == sum(4**i for i in range(n_layers + 1))
    assert all(isinstance(v, int) for b in boxes for v in b)


# ---- boxes, points, masks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_box_conversions_and_uncrop(seed):
    rng = np.random.default_rng(seed)
    crop = [int(v) for v in rng.integers(0, 300, 2)] + [400, 500]
    boxes_i = rng.integers(0, 300, (17, 4))
    boxes_f = rng.uniform(0, 300, (2, 9, 4)).astype(np.float32)  # a channel dimension, as the official allows
    points = rng.uniform(0, 300, (11, 2)).astype(np.float32)
    for bx in (boxes_i, boxes_f):
        ours = crops.uncrop_boxes_xyxy(bx, crop)
        theirs = ref.uncrop_boxes_xyxy(_t(bx), crop).numpy()
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    ours = crops.uncrop_points(points, crop)
    theirs = ref.uncrop_points(_t(points), crop).numpy()
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    for box in boxes_i[:3]:
        np.testing.assert_array_equal(boxes.box_xyxy_to_xywh(box), ref.box_xyxy_to_xywh(_t(box)).numpy())
    xywh = boxes.box_xyxy_to_xywh(boxes_i)  # vectorised over boxes
    np.testing.assert_array_equal(xywh, np.stack([ref.box_xyxy_to_xywh(_t(b)).numpy() for b in boxes_i]))


@pytest.mark.parametrize(
    "orig, crop", [((60, 90), [10, 5, 50, 45]), ((60, 90), [0, 0, 90, 60]), ((40, 30), [0, 7, 30, 40])]
)
def test_uncrop_masks(orig, crop):
    rng = np.random.default_rng(0)
    masks = rng.random((3, crop[3] - crop[1], crop[2] - crop[0])) > 0.5
    ours = crops.uncrop_masks(masks, crop, *orig)
    theirs = ref.uncrop_masks(_t(masks), crop, *orig).numpy()
    assert ours.shape == (3, *orig)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seed", range(4))
def test_is_box_near_crop_edge(seed):
    rng = np.random.default_rng(seed)
    orig = [0, 0, 300, 200]
    crop = [100, 50, 260, 200]
    # boxes in the crop frame, many of them within a few pixels of the 20 px tolerance on either side
    edges = np.array([0, 0, 160, 150])
    boxes = edges + rng.integers(-25, 26, (200, 4))
    boxes[::3] = rng.integers(0, 150, (len(boxes[::3]), 4))
    for b in (boxes, boxes.astype(np.float32) + rng.uniform(-0.5, 0.5, boxes.shape).astype(np.float32)):
        ours = crops.is_box_near_crop_edge(b, crop, orig)
        theirs = ref.is_box_near_crop_edge(_t(b), crop, orig).numpy()
        assert ours.any() and not ours.all()
        np.testing.assert_array_equal(ours, theirs)
