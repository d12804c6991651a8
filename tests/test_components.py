"""``sam2_jax.processing.components``: NumPy union-find connected components against ``scipy.ndimage.label`` (8- and
4-connectivity), and hole filling / sprinkle removal against a SciPy reference written from the official
semantics and against the official code itself.

The official semantics (``sam2/utils/transforms.py`` ``SAM2Transforms.postprocess_masks``, and
``fill_holes_in_mask_scores`` in ``sam2/utils/misc.py``): components come from the CUDA kernel
``get_connected_componnets`` (``sam2/csrc/connected_components.cu``), which is 8-connected (its 2x2-block merge
joins the top-left, top, top-right and left blocks, diagonals included) and treats components touching the
border like any other. Holes are background components (logits <= threshold) of area <= max_hole_area, set to
threshold + 10; sprinkles are foreground components (> threshold) of area <= max_sprinkle_area, set to
threshold - 10. Both are labelled on the input logits: the official sprinkle pass reuses the mask flattened
before the holes were filled. The video predictor's ``fill_holes_in_mask_scores`` is the hole pass alone, at
threshold 0, writing 0.1 (tested exactly against the official function with a CPU kernel patched in).
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from sam2.utils import amg as ref_amg
from scipy import ndimage

from sam2_jax import Sam2Processor
from sam2_jax.processing.components import (
    connected_components,
    fill_holes_and_remove_sprinkles,
    fill_holes_in_mask_scores,
    remove_small_regions,
)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # SAM2Transforms

STRUCTURES = {8: np.ones((3, 3), int), 4: ndimage.generate_binary_structure(2, 1)}


def _scipy_components(mask, connectivity):
    """(labels, areas) per 2-D plane of a (..., H, W) boolean stack, via scipy."""
    labels = np.zeros(mask.shape, np.int64)
    areas = np.zeros(mask.shape, np.int64)
    counts = []
    for idx in np.ndindex(mask.shape[:-2]):
        lab, n = ndimage.label(mask[idx], structure=STRUCTURES[connectivity])
        size = np.bincount(lab.ravel(), minlength=n + 1)
        size[0] = 0
        labels[idx], areas[idx] = lab, size[lab]
        counts.append(n)
    return labels, areas, counts


def _check_components(mask, connectivity):
    mask = np.asarray(mask, bool)
    labels, areas = connected_components(mask, connectivity=connectivity)
    ref_labels, ref_areas, counts = _scipy_components(mask, connectivity)
    assert labels.shape == areas.shape == mask.shape
    np.testing.assert_array_equal(areas, ref_areas)
    np.testing.assert_array_equal(labels == 0, ~mask)
    for idx, n in zip(np.ndindex(mask.shape[:-2]), counts, strict=True):
        ours, ref = labels[idx][mask[idx]], ref_labels[idx][mask[idx]]
        # the same partition: labels 1..n per image, one-to-one with scipy's
        pairs = np.unique(np.stack([ours, ref]), axis=1)
        assert pairs.shape[1] == n and len(np.unique(pairs[0])) == n and len(np.unique(pairs[1])) == n
        assert n == 0 or (ours.min() == 1 and ours.max() == n)
        # documented order: components numbered by their first pixel in raster order
        first = np.full(n + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, ref, np.flatnonzero(mask[idx]))
        rank = np.empty(n + 1, np.int64)
        rank[np.argsort(first)] = np.arange(n + 1)  # first[0] is the max sentinel: ranks 0..n-1 for components
        np.testing.assert_array_equal(ours, rank[ref] + 1)
    return labels, areas


# ---- connected_components -------------------------------------------------------------------------------------


@pytest.mark.parametrize("connectivity", [8, 4])
@pytest.mark.parametrize("density", [0.2, 0.45, 0.6, 0.9])
@pytest.mark.parametrize("shape", [(3, 64, 80), (2, 2, 37, 91), (1, 1), (1, 50), (50, 1), (5, 256, 256)])
def test_random_masks(shape, density, connectivity):
    rng = np.random.default_rng(hash((shape, density, connectivity)) % 2**32)
    _check_components(rng.random(shape) < density, connectivity)


def _spiral(n):
    """One 8- and 4-connected path winding to the centre: a component with a very long diameter."""
    m = np.zeros((n, n), bool)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        m[top, left : right + 1] = True
        m[top : bottom + 1, right] = True
        if bottom > top:
            m[bottom, left : right + 1] = True
        if right > left:
            m[top + 2 : bottom + 1, left] = True
        if top + 2 <= bottom - 2 and left + 1 <= right - 2:
            m[top + 2, left + 1] = True  # the step inwards to the next ring
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return m


def test_special_patterns():
    n = 65
    checker = (np.indices((n, n)).sum(0) % 2).astype(bool)
    labels8, areas8 = _check_components(checker, 8)
    assert labels8.max() == 1 and areas8.max() == checker.sum()  # diagonal neighbours join everything
    labels4, areas4 = _check_components(checker, 4)
    assert labels4.max() == checker.sum() and areas4.max() == 1  # four-connected: all single pixels
    anti = np.fliplr(np.eye(n, dtype=bool))  # the (1, -1) neighbour direction only
    assert connected_components(anti, 8)[0].max() == 1 and connected_components(anti, 4)[0].max() == n
    spiral = _spiral(255)
    for conn in (8, 4):
        labels, areas = _check_components(spiral, conn)
        assert labels.max() == 1 and areas.max() == spiral.sum()
    snake = np.zeros((101, 120), bool)
    snake[::2] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    assert connected_components(snake, 4)[0].max() == 1
    stack = np.stack([np.zeros((30, 40), bool), np.ones((30, 40), bool), checker[:30, :40]])
    labels, areas = _check_components(stack, 8)
    assert labels[0].max() == 0 and labels[1].max() == 1 and areas[1].max() == 1200  # empty, full: per image


def test_bad_arguments():
    with pytest.raises(ValueError, match="connectivity must be 4 or 8, got 6"):
        connected_components(np.ones((4, 4), bool), connectivity=6)
    with pytest.raises(ValueError, match=r"masks must be \(\.\.\., H, W\), got shape \(5,\)"):
        connected_components(np.ones(5, bool))


# ---- holes and sprinkles ----------------------------------------------------------------------------------------


def _reference_fill(logits, max_hole_area, max_sprinkle_area, threshold):
    """Written from the official semantics (module docstring), with scipy's 8-connected labelling per plane."""
    out = np.array(logits, np.float32, copy=True)
    for idx in np.ndindex(out.shape[:-2]):
        plane = logits[idx]
        change = np.zeros(plane.shape, np.float32)
        fill = np.zeros(plane.shape, bool)
        for region, max_area, value in (
            (plane <= threshold, max_hole_area, 10.0),
            (plane > threshold, max_sprinkle_area, -10.0),
        ):
            if max_area <= 0:
                continue
            lab, n = ndimage.label(region, structure=STRUCTURES[8])
            small = np.bincount(lab.ravel(), minlength=n + 1) <= max_area
            small[0] = False
            hit = small[lab]
            change[hit] = np.float32(threshold + value)
            fill |= hit
        out[idx] = np.where(fill, change, plane)
    return out


def _blobby_logits(rng, shape):
    """Smooth random fields plus speckle: background and foreground components of every size, many touching the
    border."""
    lead, (h, w) = shape[:-2], shape[-2:]
    coarse = rng.standard_normal((*lead, h // 6 + 2, w // 6 + 2)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(
        torch.from_numpy(coarse).reshape(-1, 1, *coarse.shape[-2:]), (h, w), mode="bilinear"
    ).reshape(shape)
    speckle = (rng.random(shape) < 0.03) * rng.choice([-4.0, 4.0], shape)
    return (smooth.numpy() * 3 + speckle + rng.standard_normal(shape) * 0.3).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("hole, sprinkle", [(0, 0), (1, 0), (0, 1), (4, 4), (25, 10), (8, 100), (3000, 0), (0, 4000)])
@pytest.mark.parametrize("threshold", [0.0, 0.5])
def test_fill_holes_and_remove_sprinkles(seed, hole, sprinkle, threshold):
    rng = np.random.default_rng(seed)
    logits = _blobby_logits(rng, (2, 3, 48, 71))
    ours = fill_holes_and_remove_sprinkles(logits, hole, sprinkle, threshold)
    assert ours.dtype == np.float32 and ours.shape == logits.shape
    np.testing.assert_array_equal(ours, _reference_fill(logits, hole, sprinkle, threshold))
    if hole == sprinkle == 0:
        np.testing.assert_array_equal(ours, logits)  # max areas 0: untouched
    else:
        assert not np.array_equal(ours, logits), "the random masks should have something to clean"
    assert np.array_equal(logits, _reference_fill(logits, 0, 0, threshold))  # the input was not modified


def test_fill_edge_cases():
    empty = np.full((1, 20, 30), -3.0, np.float32)
    full = np.full((1, 20, 30), 3.0, np.float32)
    # the all-background plane is one hole of area 600: filled iff max_hole_area >= 600
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(empty, 599, 0), empty)
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(empty, 600, 0), np.full_like(empty, 10.0))
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(full, 0, 599), full)
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(full, 0, 600), np.full_like(full, -10.0))
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(empty, 1000, 1000), np.full_like(empty, 10.0))

    # background notches touching the border and corners count as holes; a diagonal gap does not split them
    m = np.full((12, 16), 5.0, np.float32)
    m[0, 0] = m[1, 1] = -1.0  # corner notch, 8-connected: area 2
    m[5:7, 15] = -1.0  # right-edge notch: area 2
    m[11, 4:9] = -1.0  # bottom-edge notch: area 5
    out = fill_holes_and_remove_sprinkles(m, 2, 0)
    expected = m.copy()
    expected[0, 0] = expected[1, 1] = expected[5:7, 15] = 10.0
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(m, 5, 0) > 0, np.ones_like(m, bool))

    # the threshold decides: logits equal to it are background
    t = np.array([[0.5, 0.5, 2.0], [2.0, 2.0, 2.0]], np.float32)
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(t, 2, 0, mask_threshold=0.5)[0, :2], [10.5, 10.5])


def test_sprinkles_found_before_holes_are_filled():
    """A 3x3 ring (8 pixels) around a one-pixel hole: the official code labels sprinkles on the input, so with
    max_sprinkle_area = 8 the ring goes (area 8, not 9 with its filled hole) while the hole is filled."""
    m = np.full((9, 9), -2.0, np.float32)
    m[3:6, 3:6] = 2.0
    m[4, 4] = -2.0
    out = fill_holes_and_remove_sprinkles(m, max_hole_area=1, max_sprinkle_area=8)
    expected = np.full((9, 9), -2.0, np.float32)
    expected[3:6, 3:6] = -10.0
    expected[4, 4] = 10.0
    np.testing.assert_array_equal(out, expected)
    # max_sprinkle_area = 7: the ring (8) stays, the hole is filled, the block is whole
    out = fill_holes_and_remove_sprinkles(m, max_hole_area=1, max_sprinkle_area=7)
    expected[3:6, 3:6] = 2.0
    expected[4, 4] = 10.0
    np.testing.assert_array_equal(out, expected)


# ---- against the official code ----------------------------------------------------------------------------------


@pytest.fixture
def scipy_kernel(monkeypatch):
    """The official ``get_connected_components`` (CUDA only) replaced by an 8-connected scipy version with the
    kernel's contract: (N, 1, H, W) mask -> int32 labels and per-pixel areas, 0 on background."""
    import sam2.utils.misc as misc

    def get_connected_components(mask):
        m = mask.cpu().numpy().astype(bool)
        assert m.ndim == 4 and m.shape[1] == 1
        labels, areas, _ = _scipy_components(m, 8)
        return torch.from_numpy(labels.astype(np.int32)), torch.from_numpy(areas.astype(np.int32))

    monkeypatch.setattr(misc, "get_connected_components", get_connected_components)
    return get_connected_components


@pytest.mark.parametrize("hole, sprinkle, threshold", [(5, 0, 0.0), (0, 7, 0.0), (12, 9, 0.0), (30, 30, -0.4)])
def test_post_process_against_official_transforms(scipy_kernel, hole, sprinkle, threshold):
    """Our post_process_masks (clean-up on the low-res logits, then bilinear to the original size) against the
    official ``SAM2Transforms.postprocess_masks``."""
    from sam2.utils.transforms import SAM2Transforms

    rng = np.random.default_rng(hole * 100 + sprinkle)
    logits = _blobby_logits(rng, (3, 3, 256, 256))
    official = SAM2Transforms(1024, threshold, max_hole_area=hole, max_sprinkle_area=sprinkle)
    with torch.no_grad():
        theirs = official.postprocess_masks(torch.from_numpy(logits), (333, 517)).numpy()
    ours = Sam2Processor().post_process_masks(
        logits[None], [(333, 517)], threshold, binarize=False, max_hole_area=hole, max_sprinkle_area=sprinkle
    )[0]
    assert ours.shape == theirs.shape == (3, 3, 333, 517)
    err = np.abs(ours - theirs).max()
    print(f"[official] hole {hole} sprinkle {sprinkle}: max diff {err:.2e}")
    assert err <= 1e-5
    # the clean-up did something (else this compares plain upsampling)
    plain = Sam2Processor().post_process_masks(logits[None], [(333, 517)], threshold, binarize=False)[0]
    assert np.abs(plain - theirs).max() > 1
    # and on the low-res logits it is exactly the official clean-up (upsampling aside)
    official_low = SAM2Transforms(1024, threshold, hole, sprinkle)
    with torch.no_grad():
        low = official_low.postprocess_masks(torch.from_numpy(logits), (256, 256)).numpy()
    np.testing.assert_array_equal(fill_holes_and_remove_sprinkles(logits, hole, sprinkle, threshold), low)


@pytest.mark.parametrize("max_area", [1, 6, 40])
def test_holes_against_official_fill_holes_in_mask_scores(scipy_kernel, max_area):
    """The video predictor's ``fill_holes_in_mask_scores`` fills the same pixels (with 0.1 instead of 10)."""
    from sam2.utils.misc import fill_holes_in_mask_scores

    rng = np.random.default_rng(max_area)
    logits = _blobby_logits(rng, (4, 1, 64, 96))
    theirs = fill_holes_in_mask_scores(torch.from_numpy(logits), max_area).numpy()
    ours = fill_holes_and_remove_sprinkles(logits, max_area, 0)
    filled = theirs != logits
    assert filled.any()
    np.testing.assert_array_equal(ours != logits, filled)
    np.testing.assert_array_equal(ours > 0, theirs > 0)


# ---- small regions of finished masks (the official remove_small_regions) ---------------------------------


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
    ours, changed = remove_small_regions(mask, area, mode)
    theirs, ref_changed = ref_amg.remove_small_regions(mask, area, mode)
    assert changed == ref_changed
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_batched(scipy_cv2, mode):
    """A stack at once equals the official mask by mask, including masks left unchanged and masks whose
    islands are all small (the largest is kept)."""
    rng = np.random.default_rng(9)
    masks = rng.random((6, 30, 40)) < np.array([0.05, 0.3, 0.5, 0.7, 0.97, 0.0])[:, None, None]
    masks[5, 5:25, 5:35] = True  # one big square: nothing small
    out, changed = remove_small_regions(masks, 12, mode)
    assert changed.shape == (6,) and changed.any() and not changed.all()
    for i in range(6):
        ref_mask, ref_changed = ref_amg.remove_small_regions(masks[i], 12, mode)
        assert changed[i] == ref_changed
        np.testing.assert_array_equal(out[i], ref_mask)


def test_remove_small_regions_unchanged(scipy_cv2):
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    for mode in ("holes", "islands"):
        out, changed = remove_small_regions(mask, 50, mode)
        assert not changed and out is mask
    with pytest.raises(ValueError):
        remove_small_regions(mask, 50, "both")


# ---- the video predictor's fill_holes_in_mask_scores ----------------------------------------------------------
# Official (sam2/utils/misc.py): background = logits <= 0, 8-connected components from the CUDA kernel, those of
# area <= max_area set to 0.1; no sprinkle removal; asserts max_area > 0 (the predictor skips it at 0).

FILL = np.float32(0.1)


def test_fill_holes_in_mask_scores_rules():
    m = np.full((1, 1, 14, 16), -2.0, np.float32)
    m[0, 0, 1:13, 1:11] = 3.0
    m[0, 0, 2:4, 2:4] = -1.0  # hole of area 4
    m[0, 0, 6, 2:7] = -0.5  # hole of area 5
    m[0, 0, 9, 2] = 0.0  # logit 0 is background: hole of area 1
    m[0, 0, 9, 5] = m[0, 0, 10, 6] = -1.0  # two pixels touching diagonally: one hole of area 2 (8-connected)
    m[0, 0, 7, 13] = 5.0  # a one-pixel foreground sprinkle in the outer background
    out = fill_holes_in_mask_scores(m, 4)
    expected = m.copy()
    expected[0, 0, 2:4, 2:4] = expected[0, 0, 9, 2] = expected[0, 0, 9, 5] = expected[0, 0, 10, 6] = FILL
    assert out.dtype == np.float32 and out.shape == m.shape
    np.testing.assert_array_equal(out, expected)  # area 5 kept, the sprinkle kept, the outer background kept
    # area rule is <=: the area-5 hole goes at max_area 5; at 1 the diagonal pair (area 2) stays
    assert (fill_holes_in_mask_scores(m, 5)[0, 0, 6, 2:7] == FILL).all()
    once = fill_holes_in_mask_scores(m, 1)
    assert once[0, 0, 9, 2] == FILL and once[0, 0, 9, 5] == -1.0 and once[0, 0, 10, 6] == -1.0
    # the border-touching background (area 14 * 16 - 12 * 10 - 1 = 103) is a component like any other
    np.testing.assert_array_equal(fill_holes_in_mask_scores(m, 103)[m <= 0], FILL)
    assert (fill_holes_in_mask_scores(m, 102)[0, 0, 0] == -2.0).all()


def test_fill_holes_in_mask_scores_batch_and_identity():
    rng = np.random.default_rng(5)
    logits = _blobby_logits(rng, (5, 1, 40, 52)).astype(np.float64)
    before = logits.copy()
    out = fill_holes_in_mask_scores(logits, 20)
    assert out.dtype == np.float32 and out.shape == (5, 1, 40, 52)
    np.testing.assert_array_equal(logits, before)  # input untouched
    for i in range(5):  # every mask on its own: areas never add up across the batch
        np.testing.assert_array_equal(out[i], fill_holes_in_mask_scores(logits[i : i + 1], 20)[0])
        np.testing.assert_array_equal(out[i, 0], fill_holes_in_mask_scores(logits[i, 0], 20))
    changed = out != logits.astype(np.float32)
    assert changed.any() and (out[changed] == FILL).all() and (logits[changed] <= 0).all()
    for area in (0, -3):
        np.testing.assert_array_equal(fill_holes_in_mask_scores(logits, area), logits.astype(np.float32))
    # holes only: the same pixels as the image predictor's hole pass, with 0.1 instead of 10
    np.testing.assert_array_equal(changed, fill_holes_and_remove_sprinkles(logits, 20, 0) != logits.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        fill_holes_in_mask_scores(np.zeros(4, np.float32), 3)


@pytest.fixture(params=["scipy", "ours"])
def cpu_kernel(request, monkeypatch):
    """The official CUDA ``get_connected_components`` replaced by a CPU one with its contract ((N, 1, H, W) ->
    int32 labels and per-pixel areas, 0 on background): scipy's 8-connected labelling, or ours."""
    import sam2.utils.misc as misc

    def get_connected_components(mask):
        m = mask.cpu().numpy().astype(bool)
        assert m.ndim == 4 and m.shape[1] == 1
        if request.param == "scipy":
            labels, areas, _ = _scipy_components(m, 8)
        else:
            labels, areas = connected_components(m, connectivity=8)
        return torch.from_numpy(labels.astype(np.int32)), torch.from_numpy(areas.astype(np.int32))

    monkeypatch.setattr(misc, "get_connected_components", get_connected_components)
    return request.param


@pytest.mark.parametrize("max_area", [1, 8, 40, 3000])
def test_fill_holes_in_mask_scores_against_official(cpu_kernel, max_area):
    from sam2.utils.misc import fill_holes_in_mask_scores as official

    rng = np.random.default_rng(max_area)
    logits = _blobby_logits(rng, (4, 1, 64, 96))
    logits[0, 0, 10:20, 10:20] = 0.0  # exact zeros are background on both sides
    theirs = official(torch.from_numpy(logits), max_area).numpy()
    ours = fill_holes_in_mask_scores(logits, max_area)
    assert theirs.dtype == ours.dtype == np.float32
    assert (theirs != logits).any()
    np.testing.assert_array_equal(ours, theirs)
