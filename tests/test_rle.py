"""``sam2_jax.processing.rle`` against the official ``mask_to_rle_pytorch`` / ``rle_to_mask`` and COCO's
compressed strings (reference vectors from cocoapi's C code; pycocotools when installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.utils import amg as ref

from sam2_jax.processing import rle

SIZES = [(1, 1), (1, 7), (5, 1), (37, 23), (64, 64), (120, 200), (333, 211)]


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


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
    ours = rle.mask_to_rle(masks)
    theirs = ref.mask_to_rle_pytorch(_t(masks))
    assert ours == theirs
    assert rle.mask_to_rle(masks.transpose(0, 2, 1), transposed=True) == theirs
    for r, mask in zip(ours, masks, strict=True):
        back = rle.rle_to_mask(r)
        np.testing.assert_array_equal(back, ref.rle_to_mask(r))
        np.testing.assert_array_equal(back, mask)
        assert rle.area_from_rle(r) == ref.area_from_rle(r) == int(mask.sum())


def test_mask_to_rle_edge_cases():
    assert rle.mask_to_rle(np.zeros((0, 4, 5), bool)) == []
    with pytest.raises(ValueError):
        rle.mask_to_rle(np.zeros((4, 5), bool))
    with pytest.raises(ValueError):
        rle.rle_to_mask({"size": [4, 5], "counts": [3, 2]})


# Reference strings from cocodataset/cocoapi's common/maskApi.c (``rleToString``, the code behind
# ``pycocotools.mask.frPyObjects``), compiled and run on these counts (pycocotools itself is checked below).
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
    r = {"size": [h, w], "counts": counts}
    assert rle.coco_encode_rle(r) == {"size": [h, w], "counts": expected}
    assert rle.coco_decode_rle({"size": [h, w], "counts": expected}) == r
    assert rle.coco_decode_rle({"size": [h, w], "counts": expected.encode()}) == r
    assert rle.area_from_rle({"size": [h, w], "counts": expected}) == sum(counts[1::2])


@pytest.mark.parametrize("h, w", SIZES)
def test_coco_rle_round_trip(h, w):
    masks = _random_masks(np.random.default_rng(h * w), 5, h, w)
    for r, mask in zip(rle.mask_to_rle(masks), masks, strict=True):
        coco = rle.coco_encode_rle(r)
        assert isinstance(coco["counts"], str) and coco["size"] == [h, w]
        assert rle.coco_decode_rle(coco) == r
        np.testing.assert_array_equal(rle.rle_to_mask(coco), mask)


def test_coco_rle_matches_pycocotools():
    import pycocotools.mask as mask_utils  # a dev (and train) dependency

    masks = _random_masks(np.random.default_rng(5), 6, 61, 43)
    for r, mask in zip(rle.mask_to_rle(masks), masks, strict=True):
        ours = rle.coco_encode_rle(r)
        theirs = mask_utils.frPyObjects(r, 61, 43)
        assert ours["counts"] == theirs["counts"].decode()
        np.testing.assert_array_equal(mask_utils.decode({"size": [61, 43], "counts": ours["counts"]}), mask)


def test_rle_round_trip_is_coco_column_major():
    rng = np.random.default_rng(0)
    for mask in [rng.uniform(size=(7, 5)) > 0.5, np.ones((3, 4), bool), np.zeros((2, 9), bool)]:
        assert np.array_equal(rle.rle_to_mask(rle.mask_to_rle(mask[None])[0]), mask)
    # column-major, starting with a (possibly empty) run of zeros; row-major would give [1, 1, 1, 1] and [0, 1, 1, 2]
    assert rle.mask_to_rle(np.array([[[0, 1], [0, 1]]], bool))[0] == {"size": [2, 2], "counts": [2, 2]}
    assert rle.mask_to_rle(np.array([[[1, 0], [1, 1]]], bool))[0]["counts"] == [0, 2, 1, 1]
