"""``sam2_jax.processing.amg`` building blocks against the official ``sam2.utils.amg`` helpers and torchvision's NMS, on
random data: several seeds and sizes, non-square images, crop layers 0..2. Equality is exact wherever the
reference is exact (everything here: integer or identically ordered float32 arithmetic)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from sam2.utils import amg as ref
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import nms as tv_nms

from sam2_jax.processing import amg

SIZES = [(1, 1), (1, 7), (5, 1), (37, 23), (64, 64), (120, 200), (333, 211)]


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


# ---- grids and crops ----------------------------------------------------------------------------------------


GRIDS = [(1, 0, 1), (4, 2, 2), (32, 1, 1), (16, 2, 2), (7, 2, 2), (9, 1, 3)]


@pytest.mark.parametrize("n_per_side, n_layers, scale", GRIDS)
def test_point_grids(n_per_side, n_layers, scale):
    ours = amg.build_all_layer_point_grids(n_per_side, n_layers, scale)
    theirs = ref.build_all_layer_point_grids(n_per_side, n_layers, scale)
    assert len(ours) == len(theirs) == n_layers + 1
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_point_grid_too_coarse():
    with pytest.raises(ValueError, match="at least 1 point"):
        amg.build_all_layer_point_grids(3, 1, 4)  # int(3 / 4) = 0 points per side in layer 1


@pytest.mark.parametrize("size", [(1200, 1800), (1800, 1200), (1024, 1024), (333, 517), (50, 40)])
@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize("ratio", [512 / 1500, 0.0, 0.5])
def test_crop_boxes(size, n_layers, ratio):
    boxes, layers = amg.generate_crop_boxes(size, n_layers, ratio)
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
    for boxes in (boxes_i, boxes_f):
        ours = amg.uncrop_boxes_xyxy(boxes, crop)
        theirs = ref.uncrop_boxes_xyxy(_t(boxes), crop).numpy()
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    ours = amg.uncrop_points(points, crop)
    theirs = ref.uncrop_points(_t(points), crop).numpy()
    assert ours.dtype == theirs.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    for box in boxes_i[:3]:
        np.testing.assert_array_equal(amg.box_xyxy_to_xywh(box), ref.box_xyxy_to_xywh(_t(box)).numpy())
    xywh = amg.box_xyxy_to_xywh(boxes_i)  # vectorised over boxes
    np.testing.assert_array_equal(xywh, np.stack([ref.box_xyxy_to_xywh(_t(b)).numpy() for b in boxes_i]))


@pytest.mark.parametrize(
    "orig, crop", [((60, 90), [10, 5, 50, 45]), ((60, 90), [0, 0, 90, 60]), ((40, 30), [0, 7, 30, 40])]
)
def test_uncrop_masks(orig, crop):
    rng = np.random.default_rng(0)
    masks = rng.random((3, crop[3] - crop[1], crop[2] - crop[0])) > 0.5
    ours = amg.uncrop_masks(masks, crop, *orig)
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
        ours = amg.is_box_near_crop_edge(b, crop, orig)
        theirs = ref.is_box_near_crop_edge(_t(b), crop, orig).numpy()
        assert ours.any() and not ours.all()
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("threshold, offset", [(0.0, 1.0), (0.5, 0.25), (-1.0, 3.0)])
def test_stability_score(seed, threshold, offset):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((2, 5, 33, 47)) * 3).astype(np.float32)
    logits[0, 0] = -10.0  # empty at the low threshold: NaN, as the official 0 / 0
    ours = amg.calculate_stability_score(logits, threshold, offset)
    theirs = ref.calculate_stability_score(_t(logits), threshold, offset).numpy()
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == (2, 5)
    np.testing.assert_array_equal(ours, theirs)  # NaN where NaN
    assert np.isnan(ours[0, 0])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("hw", [(1, 1), (37, 23), (64, 100)])
def test_batched_mask_to_box(seed, hw):
    rng = np.random.default_rng(seed)
    masks = rng.random((2, 6, *hw)) > rng.uniform(0.9, 1.0, (2, 6, 1, 1))
    masks[0, 0] = False
    masks[1, 1] = True
    ours = amg.batched_mask_to_box(masks)
    theirs = ref.batched_mask_to_box(_t(masks)).numpy()
    assert ours.shape == (2, 6, 4)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(amg.batched_mask_to_box(masks[1, 2]), ref.batched_mask_to_box(_t(masks[1, 2])))


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
    ours = amg.nms(boxes, scores, thresh)
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
    ours = amg.batched_nms(boxes, scores, idxs, 0.5)
    theirs = tv_batched_nms(_t(boxes).float(), _t(scores), _t(idxs), 0.5).numpy()
    np.testing.assert_array_equal(ours, theirs)
    one_class = amg.batched_nms(boxes, scores, None, 0.5)
    assert len(one_class) < len(ours)  # categories really separate


def test_box_iou_matches_torchvision():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 30), _random_boxes(rng, 40)
    a[0] = 0  # empty against empty below: NaN in both
    b[0] = 0
    np.testing.assert_array_equal(amg.box_iou(a, b), tv_box_iou(_t(a), _t(b)).numpy())


# ---- RLE ----------------------------------------------------------------------------------------------------


def _random_masks(rng, n, h, w):
    masks = rng.random((n, h, w)) < rng.uniform(0.0, 1.0, (n, 1, 1))
    # blobs too, so that long runs (and runs crossing columns) occur
    yy, xx = np.mgrid[:h, :w]
    c = rng.uniform(0, 1, (n, 2)) * [h, w]
    blob = (yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2 < (max(h, w) / 3) ** 2
    masks[::2] = blob[::2]
    if n > 2:
        masks[1] = False
        masks[2] = True
    return masks


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("seed", range(2))
def test_mask_to_rle_matches_official(h, w, seed):
    masks = _random_masks(np.random.default_rng(seed), 6, h, w)
    ours = amg.mask_to_rle(masks)
    theirs = ref.mask_to_rle_pytorch(_t(masks))
    assert ours == theirs
    assert amg.mask_to_rle(masks.transpose(0, 2, 1), transposed=True) == theirs
    for rle, mask in zip(ours, masks, strict=True):
        back = amg.rle_to_mask(rle)
        np.testing.assert_array_equal(back, ref.rle_to_mask(rle))
        np.testing.assert_array_equal(back, mask)
        assert amg.area_from_rle(rle) == ref.area_from_rle(rle) == int(mask.sum())


def test_mask_to_rle_edge_cases():
    assert amg.mask_to_rle(np.zeros((0, 4, 5), bool)) == []
    with pytest.raises(ValueError):
        amg.mask_to_rle(np.zeros((4, 5), bool))
    with pytest.raises(ValueError):
        amg.rle_to_mask({"size": [4, 5], "counts": [3, 2]})


# Reference strings from cocodataset/cocoapi's common/maskApi.c (``rleToString``, the code behind
# ``pycocotools.mask.frPyObjects``), compiled and run on these counts; pycocotools is not installed here.
COCO_VECTORS = [
    (4, 5, [0, 3, 2, 15], "032<"),
    (3, 3, [9], "9"),
    (3, 3, [0, 9], "09"),
    (10, 12, [5, 100, 7, 3, 4, 1], "5T37oLMN"),
    (5000, 5000, [1234567, 3, 20000000, 2, 3765428], "WdeU13PX[Rc0Odma`@"),
    (64, 64, [17, 31, 1, 2, 600, 4, 3000, 441], "a0o01SOgb02P[2e="),
]


@pytest.mark.parametrize("h, w, counts, expected", COCO_VECTORS)
def test_coco_rle_reference_strings(h, w, counts, expected):
    rle = {"size": [h, w], "counts": counts}
    assert amg.coco_encode_rle(rle) == {"size": [h, w], "counts": expected}
    assert amg.coco_decode_rle({"size": [h, w], "counts": expected}) == rle
    assert amg.coco_decode_rle({"size": [h, w], "counts": expected.encode()}) == rle
    assert amg.area_from_rle({"size": [h, w], "counts": expected}) == sum(counts[1::2])


@pytest.mark.parametrize("h, w", SIZES)
def test_coco_rle_round_trip(h, w):
    masks = _random_masks(np.random.default_rng(h * w), 5, h, w)
    for rle, mask in zip(amg.mask_to_rle(masks), masks, strict=True):
        coco = amg.coco_encode_rle(rle)
        assert isinstance(coco["counts"], str) and coco["size"] == [h, w]
        assert amg.coco_decode_rle(coco) == rle
        np.testing.assert_array_equal(amg.rle_to_mask(coco), mask)


def test_coco_rle_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    masks = _random_masks(np.random.default_rng(5), 6, 61, 43)
    for rle, mask in zip(amg.mask_to_rle(masks), masks, strict=True):
        ours = amg.coco_encode_rle(rle)
        theirs = mask_utils.frPyObjects(rle, 61, 43)
        assert ours["counts"] == theirs["counts"].decode()
        np.testing.assert_array_equal(mask_utils.decode({"size": [61, 43], "counts": ours["counts"]}), mask)


# ---- small regions ------------------------------------------------------------------------------------------


@pytest.fixture
def scipy_cv2(monkeypatch):
    """A stand-in ``cv2`` (not installed) whose 8-connected components come from SciPy, so that the official
    ``remove_small_regions`` runs; labels in raster order of each component's first pixel."""
    from scipy import ndimage

    def connected_components_with_stats(image, connectivity):
        assert connectivity == 8
        labels, n = ndimage.label(image, structure=np.ones((3, 3), int))
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        stats = np.zeros((n + 1, 5), np.int32)
        stats[:, -1] = areas
        return n + 1, labels.astype(np.int32), stats, np.zeros((n + 1, 2))

    fake = types.ModuleType("cv2")
    fake.connectedComponentsWithStats = connected_components_with_stats
    monkeypatch.setitem(sys.modules, "cv2", fake)
    return fake


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [1, 4, 30, 10_000])
def test_remove_small_regions(scipy_cv2, seed, mode, area):
    rng = np.random.default_rng(seed)
    h, w = 48, 70
    mask = rng.random((h, w)) < [0.1, 0.5, 0.8, 0.95][seed]
    ours, changed = amg.remove_small_regions(mask, area, mode)
    theirs, ref_changed = ref.remove_small_regions(mask, area, mode)
    assert changed == ref_changed
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_batched(scipy_cv2, mode):
    """A stack at once equals the official mask by mask, including masks left unchanged and masks whose
    islands are all small (the largest is kept)."""
    rng = np.random.default_rng(9)
    masks = rng.random((6, 30, 40)) < np.array([0.05, 0.3, 0.5, 0.7, 0.97, 0.0])[:, None, None]
    masks[5, 5:25, 5:35] = True  # one big square: nothing small
    out, changed = amg.remove_small_regions(masks, 12, mode)
    assert changed.shape == (6,) and changed.any() and not changed.all()
    for i in range(6):
        ref_mask, ref_changed = ref.remove_small_regions(masks[i], 12, mode)
        assert changed[i] == ref_changed
        np.testing.assert_array_equal(out[i], ref_mask)


def test_remove_small_regions_unchanged(scipy_cv2):
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    for mode in ("holes", "islands"):
        out, changed = amg.remove_small_regions(mask, 50, mode)
        assert not changed and out is mask
    with pytest.raises(ValueError):
        amg.remove_small_regions(mask, 50, "both")
