"""``sam2_jax.Sam2Processor`` against transformers' ``Sam2Processor`` (default ``Sam2ImageProcessor``, the class
transformers maps ``sam2`` to) on the same inputs: pixel values of photographs and of generated images of odd
sizes and modes, original sizes, every prompt structure of the seed document (ragged lists padded with -10),
``post_process_masks`` on random logits; and the errors bad prompts raise.

Pixels: ours resize with Pillow's antialiased bilinear, transformers with torchvision's; they agree within one
8-bit level. The worst difference and the fraction of pixels off are printed (``-s``) and asserted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import GROCERIES_JPG, TRUCK_JPG
from PIL import Image

from sam2_jax import Sam2Processor

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
# one 8-bit level in normalised units, for the channel with the smallest std (the loosest bound)
ONE_LEVEL = 1 / 255 / STD.min()


@pytest.fixture(scope="module")
def theirs():
    import transformers

    return transformers.Sam2Processor(image_processor=transformers.Sam2ImageProcessor())


@pytest.fixture(scope="module")
def ours():
    return Sam2Processor()


@pytest.fixture(scope="module")
def photos():
    return {"truck": Image.open(TRUCK_JPG), "groceries": Image.open(GROCERIES_JPG)}


def _smooth(rng, h, w, c=3):
    """A photo-like uint8 image: coarse noise upsampled with bicubic, so that resizing has gradients to work on."""
    coarse = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), c), dtype=np.uint8)
    return np.array(Image.fromarray(coarse if c > 1 else coarse[..., 0]).resize((w, h), Image.BICUBIC))


def _levels(ours_pixels, their_pixels):
    """Channels-last ours vs channels-first transformers -> per-pixel differences in 8-bit levels (B, S, S, 3)."""
    their_pixels = their_pixels.permute(0, 2, 3, 1).numpy()
    assert ours_pixels.shape == their_pixels.shape and ours_pixels.dtype == np.float32
    diff = np.abs(ours_pixels.astype(np.float64) - their_pixels)
    assert diff.max() <= ONE_LEVEL + 1e-5, f"max normalised difference {diff.max():.3g} > one level {ONE_LEVEL:.3g}"
    return diff * STD * 255


def _check_pixels(what, a, b, max_fraction_off):
    levels = _levels(a["pixel_values"], b["pixel_values"])
    worst, off = levels.max(), float(np.mean(levels > 0.5))
    print(f"[pixels] {what}: worst {worst:.3f} levels, {100 * off:.3f}% of values off by more than half a level")
    assert worst <= 1.0 + 1e-3, f"{what}: worst pixel {worst:.3f} levels apart"
    assert off <= max_fraction_off, f"{what}: {100 * off:.3f}% of values off by more than half a level"
    np.testing.assert_array_equal(a["original_sizes"], b["original_sizes"].numpy())
    assert a["original_sizes"].dtype == np.int64


def _images():
    rng = np.random.default_rng(0)
    rgba = np.dstack([_smooth(rng, 250, 400), rng.integers(0, 256, (250, 400), dtype=np.uint8)])
    big = _smooth(rng, 1500, 2100)
    return {
        # name: (image, fraction of values allowed off by one level)
        "u8_333x517": (rng.integers(0, 256, (333, 517, 3), dtype=np.uint8), 0.0),
        "u8_517x333": (_smooth(rng, 517, 333), 0.0),
        "u8_37x91": (rng.integers(0, 256, (37, 91, 3), dtype=np.uint8), 0.0),
        "u8_1500x2100": (big, 0.01),  # downsizing: Pillow's and torchvision's fixed-point rounding differ
        "u8_noise_1300x1100": (rng.integers(0, 256, (1300, 1100, 3), dtype=np.uint8), 0.01),
        # floats in [0, 255]: transformers resizes the floats, ours rounds to uint8 first (<= 0.5 level) and then
        # rounds its resize (<= 0.5 level): nearly every value differs, none by a full level
        "f32_255_333x517": (_smooth(rng, 333, 517).astype(np.float32), 1.0),
        "f64_255_1500x2100": (big.astype(np.float64), 1.0),
        "pil_L_300x200": (Image.fromarray(_smooth(rng, 300, 200, 1)), 0.0),
        "pil_LA_123x77": (Image.fromarray(np.dstack([_smooth(rng, 123, 77, 1)] * 2), "LA"), 0.0),
        "pil_RGBA_250x400": (Image.fromarray(rgba, "RGBA"), 0.0),
        "pil_P_transparent": (_palette_with_transparency(rng), 0.0),
        "pil_RGB_colour_key": (_rgb_with_colour_key(rng), 0.0),
        "np_gray_211x157x1": (_smooth(rng, 211, 157, 1)[..., None], 0.0),
        # transformers composites arrays over white in float32 and truncates (PIL images: PIL's alpha_composite,
        # which rounds); ours takes PIL's way for both, so that an array and a PIL image give the same pixels
        "np_rgba_250x400": (rgba, 0.35),
    }


def _palette_with_transparency(rng):
    image = Image.fromarray(_smooth(rng, 90, 140)).convert("P", palette=Image.ADAPTIVE, colors=16)
    image.info["transparency"] = 3
    return image


def _rgb_with_colour_key(rng):
    pixels = rng.integers(0, 4, (70, 50, 3), dtype=np.uint8) * 60  # 64 colours, so the key colour is common
    image = Image.fromarray(pixels)
    image.info["transparency"] = (60, 120, 0)
    return image


IMAGES = _images()


@pytest.mark.parametrize("name", list(IMAGES))
def test_pixels_generated(ours, theirs, name):
    image, max_off = IMAGES[name]
    _check_pixels(name, ours(images=image), theirs(images=image, return_tensors="pt"), max_off)


@pytest.mark.parametrize("name", ["truck", "groceries"])
def test_pixels_photos(ours, theirs, photos, name):
    image = photos[name]
    a, b = ours(images=image), theirs(images=image, return_tensors="pt")
    assert a["original_sizes"].tolist() == [[image.height, image.width]]
    _check_pixels(name, a, b, 0.005)  # measured 0.1% (truck, downsized) and 0 (groceries, upsized)
    # the same photo as a uint8 array, and as floats in [0, 1] (transformers then needs do_rescale=False)
    array = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(ours(images=array)["pixel_values"], a["pixel_values"])
    np.testing.assert_array_equal(ours(images=array / 255.0)["pixel_values"], a["pixel_values"])
    unit = (array / np.float32(255)).astype(np.float32)
    _check_pixels(
        f"{name} float [0,1]", ours(images=unit), theirs(images=unit, do_rescale=False, return_tensors="pt"), 1.0
    )


def test_pixels_batch_of_mixed_sizes(ours, theirs, photos):
    rng = np.random.default_rng(1)
    images = [photos["truck"], rng.integers(0, 256, (37, 91, 3), dtype=np.uint8), photos["groceries"]]
    a, b = ours(images=images), theirs(images=images, return_tensors="pt")
    assert a["pixel_values"].shape == (3, 1024, 1024, 3)
    assert a["original_sizes"].tolist() == [[1200, 1800], [37, 91], [534, 800]]
    _check_pixels("batch of 3", a, b, 0.005)
    # batching changes nothing per image
    np.testing.assert_array_equal(a["pixel_values"][1], ours(images=images[1])["pixel_values"][0])


def test_pixel_normalisation_constants(ours):
    """A flat image of value v gives (v / 255 - mean) / std in every pixel, per channel."""
    for v in (0, 1, 128, 254, 255):
        pixels = ours(images=np.full((5, 9, 3), v, np.uint8))["pixel_values"]
        np.testing.assert_allclose(pixels, np.broadcast_to((v / 255 - MEAN) / STD, pixels.shape), rtol=0, atol=1e-6)


def test_array_and_pil_forms_agree(ours):
    rng = np.random.default_rng(4)
    rgba = np.dstack([_smooth(rng, 40, 70), rng.integers(0, 256, (40, 70), dtype=np.uint8)])
    np.testing.assert_array_equal(
        ours(images=rgba)["pixel_values"], ours(images=Image.fromarray(rgba, "RGBA"))["pixel_values"]
    )
    rgb = _smooth(rng, 40, 70)
    np.testing.assert_array_equal(ours(images=rgb)["pixel_values"], ours(images=Image.fromarray(rgb))["pixel_values"])


def test_grayscale_forms_agree(ours):
    rng = np.random.default_rng(2)
    gray = _smooth(rng, 60, 45, 1)
    expected = ours(images=np.repeat(gray[..., None], 3, axis=-1))["pixel_values"]
    for form in (gray, gray[..., None], Image.fromarray(gray)):
        np.testing.assert_array_equal(ours(images=form)["pixel_values"], expected)


# ---- prompts ---------------------------------------------------------------------------------------------------

TRUCK, GROCERIES = [1200, 1800], [534, 800]
# The seed document's prompt structures (its dog picture replaced by groceries.jpg, 800 x 534), then ragged extras.
PROMPTS = {
    "single_point": ([TRUCK], dict(input_points=[[[[500, 375]]]], input_labels=[[[1]]])),
    "multiple_points": ([TRUCK], dict(input_points=[[[[500, 375], [1125, 625]]]], input_labels=[[[1, 1]]])),
    "box": ([TRUCK], dict(input_boxes=[[[75, 275, 1725, 850]]])),
    "multiple_objects": ([TRUCK], dict(input_points=[[[[500, 375]], [[650, 750]]]], input_labels=[[[1], [1]]])),
    "batched_images": (
        [TRUCK, GROCERIES],
        dict(input_points=[[[[500, 375]]], [[[770, 200]]]], input_labels=[[[1]], [[1]]]),
    ),
    "batched_objects": (
        [TRUCK, GROCERIES],
        dict(input_points=[[[[500, 375]], [[650, 750]]], [[[770, 200]]]], input_labels=[[[1], [1]], [[1]]]),
    ),
    "batched_objects_multiple_points": (
        [TRUCK, GROCERIES],
        dict(
            input_points=[[[[500, 375]], [[650, 750]]], [[[400, 300]], [[630, 300], [550, 300]]]],
            input_labels=[[[1], [1]], [[1], [1, 1]]],
        ),
    ),
    "batched_boxes": (
        [TRUCK, GROCERIES],
        dict(
            input_boxes=[
                [[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800], [1240, 675, 1400, 750]],
                [[450, 170, 520, 350], [350, 190, 450, 350], [500, 170, 580, 350], [580, 170, 640, 350]],
            ]
        ),
    ),
    "points_without_labels": ([TRUCK, GROCERIES], dict(input_points=[[[[500, 375]], [[1, 2], [3, 4]]], [[[7, 8]]]])),
    "ragged_three_images": (
        [TRUCK, GROCERIES, [333, 517]],
        dict(
            input_points=[
                [[[500.25, 375.5]], [[650, 750], [0, 0], [1800, 1200]]],
                [[[770, 200]]],
                [[[1, 2], [3, 4]], [[517, 333]], [[10.5, 0.125]]],
            ],
            input_labels=[[[1], [1, 0, 1]], [[0]], [[1, 1], [0], [1]]],
        ),
    ),
    "points_and_boxes": (
        [[333, 517], [517, 333]],
        dict(
            input_points=[[[[10, 20]], [[30, 40], [50, 60]]], [[[1, 1]], [[332, 516]]]],
            input_labels=[[[1], [1, 0]], [[0], [1]]],
            input_boxes=[[[0, 0, 517, 333], [5.5, 6.5, 100, 200]], [[1, 2, 3, 4], [0, 0, 333, 517]]],
        ),
    ),
}


def _pads_expected(nested, depth):
    """Number of padded scalars a ragged list needs to become a dense array (independent of both processors)."""

    def dims(x, level):
        if level == depth:
            return []
        sub = [dims(v, level + 1) for v in x]
        return [len(x)] + [max((s[i] for s in sub if len(s) > i), default=0) for i in range(depth - level - 1)]

    def count(x, level):
        return len(x) if level == depth - 1 else sum(count(v, level + 1) for v in x)

    return math.prod(dims(nested, 0)) - count(nested, 0)


@pytest.mark.parametrize("name", list(PROMPTS))
def test_prompts_match_transformers(ours, theirs, name):
    sizes, prompts = PROMPTS[name]
    a = ours(original_sizes=sizes, **prompts)
    b = theirs(original_sizes=sizes, return_tensors="pt", **prompts)
    assert set(a) == set(b) == {"original_sizes", *prompts}
    for key in b:
        expected = b[key].numpy()
        assert a[key].shape == expected.shape and a[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(a[key], expected, err_msg=key)  # padded -10 included, coordinates bit for bit
    if "input_labels" in prompts:
        n_pad = _pads_expected(prompts["input_labels"], 3)
        assert int((a["input_labels"] == -10).sum()) == n_pad
        assert int((a["input_points"] == -10).all(-1).sum()) == n_pad


def test_prompts_scaled_per_image(ours):
    """Each image's prompts go to the 1024 frame with that image's own size (not copied from transformers)."""
    a = ours(original_sizes=[[100, 200], [400, 50]], input_points=[[[[50, 25]]], [[[25, 100]]]])
    np.testing.assert_allclose(a["input_points"][:, 0, 0], [[256, 256], [512, 256]], rtol=1e-6)
    b = ours(original_sizes=[[100, 200]], input_boxes=[[[0, 0, 200, 100], [20, 10, 40, 30]]])
    np.testing.assert_allclose(b["input_boxes"][0], [[0, 0, 1024, 1024], [102.4, 102.4, 204.8, 307.2]], rtol=1e-6)


def test_prompts_as_arrays_and_tensors(ours, theirs):
    """Dense prompts given as NumPy arrays or torch tensors (any dtype) equal the nested-list result."""
    box_sizes, dense = PROMPTS["points_and_boxes"]
    boxes = dense["input_boxes"]
    ref = theirs(original_sizes=box_sizes, input_boxes=boxes, return_tensors="pt")["input_boxes"].numpy()
    for convert in (np.asarray, lambda x: np.asarray(x, np.float32), torch.tensor):
        got = ours(original_sizes=convert(box_sizes), input_boxes=convert(boxes))
        np.testing.assert_array_equal(got["input_boxes"], ref)
    sizes = [TRUCK, GROCERIES]
    points = np.array([[[[500, 375], [1125, 625]]], [[[1, 2], [3, 4]]]], np.float32)
    labels = np.array([[[1, 0]], [[0, 1]]])
    ref = theirs(original_sizes=sizes, input_points=points, input_labels=labels, return_tensors="pt")
    for p, lab in ((points, labels), (torch.from_numpy(points), torch.from_numpy(labels)), (points.tolist(), labels)):
        got = ours(original_sizes=sizes, input_points=p, input_labels=lab)
        for key in ("input_points", "input_labels"):
            np.testing.assert_array_equal(got[key], ref[key].numpy())
    # lists holding arrays at any level
    mixed = [np.asarray(p) for p in points.tolist()]
    got = ours(original_sizes=sizes, input_points=mixed, input_labels=[list(lab) for lab in labels])
    for key in ("input_points", "input_labels"):
        np.testing.assert_array_equal(got[key], ref[key].numpy())
    # our own original_sizes output feeds back in (the docs' "previous mask" example passes it on)
    _, prompts = PROMPTS["batched_objects_multiple_points"]
    first = ours(original_sizes=sizes, **prompts)
    again = ours(original_sizes=first["original_sizes"], **prompts)
    for key in first:
        np.testing.assert_array_equal(again[key], first[key])


def test_prompts_with_images(ours, theirs, photos):
    images = [photos["truck"], photos["groceries"]]
    _, prompts = PROMPTS["batched_objects_multiple_points"]
    a, b = ours(images=images, **prompts), theirs(images=images, return_tensors="pt", **prompts)
    for key in ("original_sizes", "input_points", "input_labels"):
        np.testing.assert_array_equal(a[key], b[key].numpy(), err_msg=key)


# ---- post_process_masks ---------------------------------------------------------------------------------------

POST_SIZES = [[(333, 517), (517, 333)], [(37, 91)], [(1200, 1800)], [(256, 256), (1, 1), (300, 7)]]


def _logits(rng, n_images, p, m=3):
    """Random low-res logits with structure at several scales and a spread around 0."""
    coarse = rng.standard_normal((n_images, p, m, 16, 16)).astype(np.float32) * 6
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse).flatten(0, 1), (256, 256), mode="bicubic")
    fine = rng.standard_normal((n_images, p, m, 256, 256)).astype(np.float32)
    return (up.reshape(n_images, p, m, 256, 256).numpy() + fine).astype(np.float32)


def _their_post(theirs, logits, sizes, **kw):
    with torch.no_grad():
        return [t.numpy() for t in theirs.post_process_masks(torch.from_numpy(logits.copy()), sizes, **kw)]


@pytest.mark.parametrize("sizes", POST_SIZES, ids=lambda s: "+".join(f"{h}x{w}" for h, w in s))
def test_post_process_masks(ours, theirs, sizes):
    rng = np.random.default_rng(sum(h * w for h, w in sizes))
    p = 1 if sizes == [(1200, 1800)] else 3
    logits = _logits(rng, len(sizes), p)
    for threshold in (0.0, 0.7):
        raw_ours = ours.post_process_masks(logits, sizes, mask_threshold=threshold, binarize=False)
        raw_theirs = _their_post(theirs, logits, sizes, mask_threshold=threshold, binarize=False)
        bin_ours = ours.post_process_masks(logits, sizes, mask_threshold=threshold)
        bin_theirs = _their_post(theirs, logits, sizes, mask_threshold=threshold)
        for i, (h, w) in enumerate(sizes):
            assert isinstance(raw_ours[i], np.ndarray) and raw_ours[i].dtype == np.float32
            assert raw_ours[i].shape == raw_theirs[i].shape == (p, 3, h, w)
            err = np.abs(raw_ours[i] - raw_theirs[i]).max()
            assert err <= 1e-5, f"{h}x{w}: logits differ by {err:.3g}"
            assert bin_ours[i].dtype == bool and bin_ours[i].shape == bin_theirs[i].shape
            flips = bin_ours[i] != bin_theirs[i]
            near = np.abs(raw_theirs[i] - threshold) <= 1e-5  # only a tie at the threshold may flip
            print(f"[post] {h}x{w} t={threshold}: logits max diff {err:.2e}, {int(flips.sum())} binary flips")
            assert not np.any(flips & ~near), f"{h}x{w}: {int((flips & ~near).sum())} pixels flipped off a tie"
    # a list of per-image arrays gives the same as the batch
    listed = ours.post_process_masks(list(logits), sizes, binarize=False)
    for x, y in zip(listed, ours.post_process_masks(logits, sizes, binarize=False), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("binarize", [False, True])
def test_post_process_non_overlapping(ours, theirs, binarize):
    rng = np.random.default_rng(3)
    sizes = [(333, 517), (91, 37)]
    logits = _logits(rng, 2, 4)
    kw = dict(binarize=binarize, apply_non_overlapping_constraints=True)
    a, b = ours.post_process_masks(logits, sizes, **kw), _their_post(theirs, logits, sizes, **kw)
    raw = _their_post(theirs, logits, sizes, binarize=False)
    for i in range(len(sizes)):
        assert a[i].shape == b[i].shape and a[i].dtype == b[i].dtype
        top2 = np.sort(raw[i], axis=0)[-2:]
        ties = (top2[1] - top2[0] <= 1e-5)[None] | (np.abs(raw[i]) <= 1e-5)  # argmax or threshold ties
        bad = ~np.isclose(a[i], b[i], rtol=0, atol=1e-5) if not binarize else a[i] != b[i]
        print(f"[post] non-overlapping {sizes[i]} binarize={binarize}: {int(bad.sum())} values differ")
        assert not np.any(bad & ~ties)
        if binarize:  # at most one object per pixel and mask slot
            assert a[i].sum(axis=0).max() <= 1
    # one object: nothing to constrain
    single = logits[:, :1]
    np.testing.assert_array_equal(
        ours.post_process_masks(single, sizes, binarize=False, apply_non_overlapping_constraints=True)[0],
        ours.post_process_masks(single, sizes, binarize=False)[0],
    )


def test_post_process_hole_and_sprinkle_areas_are_used(ours):
    """transformers accepts and ignores max_hole_area / max_sprinkle_area; ours applies them on the low-res logits
    (see test_components for their exact semantics): a one-pixel hole and a one-pixel island disappear."""
    logits = np.full((1, 1, 1, 256, 256), -5.0, np.float32)
    logits[..., 50:90, 50:90] = 5.0
    logits[..., 70, 70] = -5.0  # hole
    logits[..., 200, 200] = 5.0  # sprinkle
    plain = ours.post_process_masks(logits, [(256, 256)])[0][0, 0]
    assert not plain[70, 70] and plain[200, 200]
    clean = ours.post_process_masks(logits, [(256, 256)], max_hole_area=1, max_sprinkle_area=1)[0][0, 0]
    expected = np.zeros((256, 256), bool)
    expected[50:90, 50:90] = True
    np.testing.assert_array_equal(clean, expected)


# ---- errors ---------------------------------------------------------------------------------------------------

SIZES2 = [TRUCK, GROCERIES]  # 1800 x 1200 and 800 x 534 (width x height)
BAD_PROMPTS = [
    # malformed nesting
    ("points_flat", dict(input_points=[500, 375]), r"input_points\[0\]: expected a list at nesting level 2 of 4"),
    ("points_depth2", dict(input_points=[[500, 375]]), r"input_points\[0\]\[0\]: expected a list at nesting level 3"),
    ("points_depth3", dict(input_points=[[[500, 375]]]), r"input_points\[0\]\[0\]\[0\]: expected a list at .* 4 of 4"),
    (
        "points_depth5",
        dict(input_points=[[[[[500, 375]]]]]),
        r"input_points\[0\]\[0\]\[0\]: nested one level too deep; .* \[image\]\[object\]\[point\]\[x, y\]",
    ),
    ("points_3_coords", dict(input_points=[[[[1, 2, 3]]]]), r"input_points\[0\]\[0\]\[0\]: expected 2 numbers, got 3"),
    ("points_array_ndim", dict(input_points=np.zeros((1, 1, 2))), r"input_points\[0\]\[0\]\[0\]: expected a list"),
    ("labels_depth2", dict(input_labels=[[1]]), r"input_labels\[0\]\[0\]: expected a list at nesting level 3 of 3"),
    ("boxes_flat", dict(input_boxes=[75, 275, 1725, 850]), r"input_boxes\[0\]: expected a list at nesting level 2"),
    ("boxes_3_coords", dict(input_boxes=[[[1, 2, 3]]]), r"input_boxes\[0\]\[0\]: expected 4 numbers, got 3"),
    ("point_not_number", dict(input_points=[[[["a", 2]]]]), r"input_points\[0\]\[0\]\[0\]\[0\]: 'a' is not a number"),
    # counts
    (
        "labels_objects",
        dict(input_points=[[[[1, 2]], [[3, 4]]]], input_labels=[[[1]]]),
        r"input_points\[0\] has 2 objects but input_labels\[0\] has 1",
    ),
    (
        "labels_points",
        dict(input_points=[[[[1, 2]]], [[[1, 2], [3, 4]]]], input_labels=[[[1]], [[1]]]),
        r"input_points\[1\]\[0\] has 2 points but input_labels\[1\]\[0\] has 1 labels",
    ),
    (
        "boxes_vs_point_objects",
        dict(input_points=[[[[1, 2]], [[3, 4]]]], input_boxes=[[[0, 0, 5, 5]]]),
        r"input_points have 2 objects per image .* but input_boxes 1 boxes",
    ),
    ("boxes_ragged", dict(input_boxes=[[[0, 0, 5, 5]], [[0, 0, 5, 5], [1, 1, 2, 2]]]), r"same number of boxes"),
    ("no_point", dict(input_points=[[[]]]), r"input_points contains no point"),
    ("no_box", dict(input_boxes=[[]]), r"input_boxes contains no box"),
    # geometry
    ("box_x2_lt_x1", dict(input_boxes=[[[0, 0, 5, 5], [30, 10, 20, 40]]]), r"input_boxes\[0\]\[1\]: .* has x2 < x1"),
    ("box_y2_lt_y1", dict(input_boxes=[[[0, 50, 5, 40]]]), r"input_boxes\[0\]\[0\]: .* has y2 < y1"),
    ("box_outside", dict(input_boxes=[[[0, 0, 1801, 5]]]), r"input_boxes\[0\]\[0\]: .* outside the 1800x1200 image"),
    ("point_x_outside", dict(input_points=[[[[1801, 5]]]]), r"input_points\[0\]\[0\]\[0\]: .* outside the 1800x1200"),
    (
        "point_y_outside",
        dict(input_points=[[[[5, 5], [5, 1200.5]]]]),
        r"input_points\[0\]\[0\]\[1\]: point \(5.0, 1200.5\)",
    ),
    (
        "point_negative",
        dict(input_points=[[[[-0.5, 5]]]]),
        r"input_points\[0\]\[0\]\[0\]: point \(-0.5, 5.0\) lies outside",
    ),
    # non-finite numbers and non-integer labels
    ("point_nan", dict(input_points=[[[[1, 2], [3, float("nan")]]]]), r"input_points\[0\]\[0\]\[1\]\[1\]: non-finite"),
    (
        "point_inf_array",
        dict(input_points=np.array([[[[np.inf, 2]]]])),
        r"input_points\[0\]\[0\]\[0\]\[0\]: non-finite",
    ),
    ("box_nan", dict(input_boxes=[[[0, 0, float("nan"), 5]]]), r"input_boxes\[0\]\[0\]\[2\]: non-finite number"),
    ("label_inf", dict(input_labels=[[[float("inf")]]]), r"input_labels\[0\]\[0\]\[0\]: non-finite number"),
    (
        "label_fraction",
        dict(input_points=[[[[1, 2]]]], input_labels=[[[0.5]]]),
        r"input_labels\[0\]\[0\]\[0\]: .* integer",
    ),
]


@pytest.mark.parametrize("name, prompts, match", BAD_PROMPTS, ids=[c[0] for c in BAD_PROMPTS])
def test_bad_prompts(ours, name, prompts, match):
    sizes = SIZES2 if name in ("labels_points", "boxes_ragged") else [TRUCK]  # those two prompt two images
    with pytest.raises(ValueError, match=match):
        ours(original_sizes=sizes, **prompts)


@pytest.mark.parametrize(
    "sizes, prompts, match",
    [
        ([TRUCK], dict(input_points=[[[[1, 2]]], [[[3, 4]]]]), r"input_points has prompts for 2 images but 1 images"),
        (SIZES2, dict(input_points=[[[[1, 2]]]]), r"input_points has prompts for 1 images but 2 images"),
        (SIZES2, dict(input_boxes=[[[0, 0, 1, 1]]]), r"input_boxes has prompts for 1 images but 2 images"),
        (
            SIZES2,
            dict(input_points=[[[[1, 2]]], [[[3, 4]]]], input_labels=[[[1]]]),
            r"input_labels has prompts for 1 images but 2 images",
        ),
        (SIZES2, dict(input_points=[]), r"input_points has prompts for 0 images"),
        # image 1 is 800 x 534: a point valid in image 0 is out of it
        (
            SIZES2,
            dict(input_points=[[[[900, 5]]], [[[900, 5]]]]),
            r"input_points\[1\]\[0\]\[0\]: .* outside the 800x534",
        ),
    ],
)
def test_prompt_image_counts(ours, sizes, prompts, match):
    with pytest.raises(ValueError, match=match):
        ours(original_sizes=sizes, **prompts)


def test_prompt_image_count_with_images(ours):
    images = [np.zeros((20, 30, 3), np.uint8)] * 2
    with pytest.raises(ValueError, match=r"input_points has prompts for 1 images but 2 images"):
        ours(images=images, input_points=[[[[1, 2]]]])
    with pytest.raises(ValueError, match=r"input_points\[1\]\[0\]\[0\]: point \(31.0, 2.0\) lies outside the 30x20"):
        ours(images=images, input_points=[[[[1, 2]]], [[[31, 2]]]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(), r"Either images or original_sizes"),
        (dict(images=[]), r"images is an empty list"),
        (dict(images=np.zeros((4, 5, 2), np.uint8)), r"images\[0\]: expected an \(H, W\)"),
        (dict(images=[np.zeros((4, 5, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)]), r"images\[1\]: empty image"),
        (dict(images=np.full((4, 5, 3), np.nan)), r"images\[0\]: image values must be finite"),
        (dict(original_sizes=[[0, 5]]), r"original_sizes must be positive"),
        (dict(original_sizes=[[10.5, 5]]), r"original_sizes must be positive integer \(height, width\) pairs"),
        (dict(original_sizes=[[1200]]), r"original_sizes must be \(height, width\) pairs, got shape \(1, 1\)"),
        (dict(original_sizes=[[[1200, 1800]]]), r"original_sizes must be \(height, width\) pairs"),
    ],
)
def test_bad_images(ours, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ours(**kwargs)


def test_post_process_bad_masks(ours):
    with pytest.raises(ValueError, match=r"2 images of masks for 1 original sizes"):
        ours.post_process_masks(np.zeros((2, 1, 1, 8, 8), np.float32), [(8, 8)])
    with pytest.raises(ValueError, match=r"masks\[1\] must be \(objects, masks, height, width\) logits"):
        ours.post_process_masks([np.zeros((1, 1, 8, 8)), np.zeros((1, 8, 8))], [(8, 8), (9, 9)])
