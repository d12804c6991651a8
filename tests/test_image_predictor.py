"""``Sam2ImagePredictor`` against the official ``SAM2ImagePredictor`` (randomised weights, original ``.pt``
converted), on a real non-square photograph, plus bucket padding and compile counting."""

from __future__ import annotations

import numpy as np
import pytest
from compile_count import jit_compiles
from conftest import GROCERIES_JPG as GROCERIES
from conftest import TRUCK_JPG as TRUCK
from conftest import assert_rel_close, rel_l2
from PIL import Image

import sam2_jax
from sam2_jax.frontends.image.image_predictor import Sam2ImagePredictor
from sam2_jax.processing.prompts import PROMPT_BUCKETS, bucket


def _image(path, size=None):
    img = Image.open(path).convert("RGB")
    return np.asarray(img if size is None else img.resize(size, Image.BILINEAR))


@pytest.fixture(scope="module")
def truck():
    return _image(TRUCK)  # 1800 x 1200, landscape


@pytest.fixture(scope="module")
def official(official_tiny, truck):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(official_tiny[0])
    predictor.set_image(truck)
    return predictor


def _official_pixels(official, images):
    """The official transform's normalised pixels, channels-last, so both models see the same input."""
    import torch

    return torch.stack([official._transforms(im) for im in images]).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def ours(official_converted, official, truck):
    model, params = sam2_jax.load(official_converted)
    predictor = Sam2ImagePredictor(model, params)
    predictor.set_pixel_values(_official_pixels(official, [truck]), [truck.shape[:2]])
    return predictor


H, W = 1200, 1800
PROMPTS = {
    "one_point": dict(point_coords=[[900.0, 500.0]], point_labels=[1]),
    "points": dict(point_coords=[[900.0, 500.0], [1500.0, 1000.0], [200.0, 300.0]], point_labels=[1, 0, 1]),
    "box": dict(box=[100.0, 250.0, 1700.0, 1100.0]),
    "box_and_point": dict(box=[100.0, 250.0, 1700.0, 1100.0], point_coords=[[900.0, 500.0]], point_labels=[1]),
    "batched_points": dict(point_coords=[[[900.0, 500.0]], [[300.0, 800.0]]], point_labels=[[1], [1]]),
    "batched_boxes": dict(box=[[100.0, 250.0, 1700.0, 1100.0], [50.0, 50.0, 600.0, 400.0], [10, 700, 900, 1190]]),
}


def _compare(ours_out, theirs_out, what, logits=True):
    (m, s, lr), (m_ref, s_ref, lr_ref) = ours_out, theirs_out
    assert m.shape == m_ref.shape and s.shape == s_ref.shape and lr.shape == lr_ref.shape, what
    assert_rel_close(lr, lr_ref, 1e-4, f"{what} low-res logits")
    assert_rel_close(s, s_ref, 1e-4, f"{what} scores")
    if logits:
        assert_rel_close(m, m_ref, 1e-4, f"{what} full-size logits")
    else:
        assert m.dtype == np.bool_
        flipped = np.mean(m != m_ref.astype(bool))
        assert flipped <= 1e-5, f"{what}: {flipped:.2e} of the mask pixels differ"


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_matches_official_predictor(ours, official, prompt, multimask):
    kwargs = {k: np.asarray(v) for k, v in PROMPTS[prompt].items()}
    theirs = official.predict(multimask_output=multimask, **kwargs)
    _compare(ours.predict(multimask_output=multimask, **kwargs), theirs, prompt, logits=False)


def test_logits_and_mask_refinement_match_official(ours, official):
    """``return_logits`` and a previous low-res mask fed back with a new click, and a mask on its own."""
    first = dict(point_coords=np.array([[900.0, 500.0]]), point_labels=np.array([1]))
    theirs = official.predict(multimask_output=True, return_logits=True, **first)
    mine = ours.predict(multimask_output=True, return_logits=True, **first)
    _compare(mine, theirs, "logits", logits=True)

    prev = theirs[2][np.argmax(theirs[1])][None]  # (1, 256, 256), the official usage
    second = dict(point_coords=np.array([[900.0, 500.0], [400.0, 900.0]]), point_labels=np.array([1, 0]))
    theirs = official.predict(mask_input=prev, multimask_output=False, **second)
    _compare(ours.predict(mask_input=prev, multimask_output=False, **second), theirs, "refinement", logits=False)

    theirs = official.predict(mask_input=prev, multimask_output=True, return_logits=True)
    _compare(ours.predict(mask_input=prev, multimask_output=True, return_logits=True), theirs, "mask only")


def test_predict_batch_matches_official(official_tiny, official, ours, truck):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    images = [truck, _image(GROCERIES, (517, 683))]  # landscape and portrait
    ref = SAM2ImagePredictor(official_tiny[0])
    ref.set_image_batch(images)
    mine = Sam2ImagePredictor(ours.model, ours.params)
    mine.set_pixel_values(_official_pixels(official, images), [im.shape[:2] for im in images], batch=True)
    kwargs = dict(
        point_coords_batch=[np.array([[900.0, 500.0]]), np.array([[[100.0, 600.0], [300.0, 100.0]]] * 2)],
        point_labels_batch=[np.array([1]), np.array([[1, 0]] * 2)],
        box_batch=[None, np.array([[10.0, 20.0, 400.0, 500.0], [200.0, 300.0, 500.0, 680.0]])],
    )
    theirs = ref.predict_batch(multimask_output=True, **kwargs)
    got = mine.predict_batch(multimask_output=True, **kwargs)
    for i in range(len(images)):
        _compare([g[i] for g in got], [t[i] for t in theirs], f"image {i}", logits=False)


def test_padding_does_not_change_the_answer(ours):
    """3 clicks padded to the 4-bucket, 3 prompts padded to 4: equal to the model called without padding."""
    points = np.array([[[900.0, 500.0], [1500.0, 1000.0], [200.0, 300.0]]] * 3) + np.arange(3)[:, None, None] * 40
    labels = np.array([[1, 0, 1]] * 3)
    _, scores, low_res = ours.predict(point_coords=points, point_labels=labels, multimask_output=True)

    scale = np.array([1024 / W, 1024 / H], np.float32)
    embeddings = ours.embedding.features
    out = ours.model.apply(
        {"params": ours.params},
        image_embeddings=embeddings,
        input_points=(points * scale)[None].astype(np.float32),
        input_labels=labels[None].astype(np.int32),
    )
    unpadded = np.clip(np.asarray(out.pred_masks[0]), -32, 32)
    assert rel_l2(low_res, unpadded) <= 1e-5, rel_l2(low_res, unpadded)
    assert rel_l2(scores, np.asarray(out.iou_scores[0])) <= 1e-5


def test_new_number_of_clicks_does_not_recompile(ours):
    assert bucket(1) == 1 and bucket(2) == 4 and bucket(5) == 16 and bucket(4096) == 4096
    with pytest.raises(ValueError, match="largest bucket"):
        bucket(PROMPT_BUCKETS[-1] + 1)

    def click(n, objects=1):
        rng = np.random.default_rng(n)
        pts = rng.uniform([0, 0], [W, H], (objects, n, 2))
        ours.predict(point_coords=pts, point_labels=np.ones((objects, n)), multimask_output=False)

    click(2)  # compiles the 4-point bucket
    before = jit_compiles(ours._decode)
    for n in (3, 4, 2):
        click(n)
    assert jit_compiles(ours._decode) == before, "2, 3 and 4 clicks share one compiled decoder"
    click(2, objects=3)  # 3 objects -> the 4-prompt bucket: one more compile
    click(4, objects=4)
    click(1, objects=2)
    assert jit_compiles(ours._decode) == before + 1
    ours.predict(box=np.array([[0, 0, 10, 10], [5, 5, 50, 60]]), multimask_output=False)
    before = jit_compiles(ours._decode)
    ours.predict(box=np.array([[0, 0, 10, 10]] * 3), multimask_output=False)
    assert jit_compiles(ours._decode) == before, "2 and 3 boxes share one compiled decoder"


def test_set_image_with_our_processor_close_to_official(ours, official, truck):
    """End to end from the photograph: our NumPy resize differs from torchvision's by at most one 8-bit level,
    which moves the masks by a few boundary pixels only."""
    mine = Sam2ImagePredictor(ours.model, ours.params)
    mine.set_image(Image.fromarray(truck))
    kwargs = dict(point_coords=np.array([[900.0, 500.0]]), point_labels=np.array([1]), multimask_output=True)
    masks, scores, _ = mine.predict(**kwargs)
    ref_masks, ref_scores, _ = official.predict(**kwargs)
    inter = np.logical_and(masks, ref_masks).sum((1, 2))
    union = np.logical_or(masks, ref_masks).sum((1, 2))
    iou = inter / np.maximum(union, 1)
    score_diff = np.abs(scores - ref_scores).max()
    print(f"[parity] set_image via our processor: mask IoU {iou.round(4)}, score diff {score_diff:.1e}")
    assert iou.min() >= 0.98 and score_diff <= 0.02


def test_bad_input(ours, official_converted):
    fresh = Sam2ImagePredictor(ours.model, ours.params)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="point_labels must be supplied"):
        ours.predict(point_coords=np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="does not match"):
        ours.predict(point_coords=np.array([[1.0, 2.0], [3.0, 4.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="non-finite"):
        ours.predict(point_coords=np.array([[np.nan, 2.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match=r"point_coords\[0\]\[1\]: point \(1801.0, 5.0\) lies outside the 1800x1200"):
        ours.predict(point_coords=np.array([[1.0, 2.0], [1801.0, 5.0]]), point_labels=np.array([1, 1]))
    with pytest.raises(ValueError, match="x2 < x1"):
        ours.predict(box=np.array([500.0, 20.0, 400.0, 60.0]))
    with pytest.raises(ValueError, match="outside"):
        ours.predict(box=np.array([0.0, 0.0, 400.0, 1300.0]))
    with pytest.raises(ValueError, match="box must be"):
        ours.predict(box=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(RuntimeError, match="predict_batch"):
        ours.predict_batch(point_coords_batch=[np.array([[1.0, 2.0]])], point_labels_batch=[np.array([1])])
    with pytest.raises(ValueError, match="pixel_values must be"):
        fresh.set_pixel_values(np.zeros((1, 512, 512, 3), np.float32), [(512, 512)])


def test_predict_batched_pads_once_and_is_stateless(ours, monkeypatch):
    """``predict_batched`` on an explicit embedding: P prompts padded once (to ``pad_to`` when given), the same
    answer as ``predict``, and nothing stored on the predictor."""
    rows = []
    real = ours._decode

    def spy(*args, **kwargs):
        rows.append(kwargs["points"].shape[1])
        return real(*args, **kwargs)

    pts = np.array([[[500.0, 375.0]], [[1100.0, 600.0]], [[300.0, 900.0]]])
    labels = np.ones((3, 1))
    _, want, want_low = ours.predict(point_coords=pts, point_labels=labels)
    monkeypatch.setattr(ours, "_decode", spy)
    low, scores = ours.predict_batched(pts, labels, embedding=ours.embedding, pad_to=7)
    low_b, scores_b = ours.predict_batched(pts, labels)
    monkeypatch.undo()
    assert rows == [7, 4]  # pad_to rows, or the bucket of 3; once each
    assert low.shape == (3, 3, 256, 256) and scores.shape == (3, 3)
    assert_rel_close(np.clip(low, -32, 32), want_low, 1e-5)
    assert_rel_close(scores, want, 1e-5)
    np.testing.assert_array_equal(scores_b, scores)
    with pytest.raises(ValueError, match="do not fit"):
        ours.predict_batched(pts, labels, pad_to=2)


def _host_post_process(predictor, low_res, size, threshold=0.0, binarize=True, hole=0.0, sprinkle=0.0):
    """The former host path: the processor's NumPy post-processing (matrix-form upsampling, then threshold)."""
    return predictor.processor.post_process_masks(
        low_res[None], [size], threshold, binarize, max_hole_area=hole, max_sprinkle_area=sprinkle
    )[0]


@pytest.mark.parametrize("threshold", [0.0, -1.5])
def test_device_post_processing_equals_host_path(ours, threshold):
    """``predict``'s on-device upsample + threshold against the former NumPy path: bool masks equal but for
    pixels within float rounding of the threshold (< 1e-5 of them), logits within 1e-6 relative L2; 17 boxes
    run as chunks 16 + 1; hole filling still applies."""
    rng = np.random.default_rng(0)
    xy = rng.uniform([0, 0], [W / 2, H / 2], (17, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(50, [W / 2, H / 2], (17, 2))], 1)
    saved = ours.mask_threshold
    ours.mask_threshold = threshold
    try:
        low, _ = ours.predict_batched(boxes=boxes, multimask_output=False)
        masks, _, _ = ours.predict(box=boxes, multimask_output=False)
        want = _host_post_process(ours, low, (H, W), threshold)
        assert masks.dtype == np.bool_ and masks.shape == want.shape == (17, 1, H, W)
        flipped = np.mean(masks != want)
        print(f"[parity] device vs host masks, threshold {threshold}: {flipped:.2e} of the pixels differ")
        assert flipped < 1e-5

        pt = dict(point_coords=np.array([[900.0, 500.0]]), point_labels=np.array([1]))
        logits, _, _ = ours.predict(multimask_output=True, return_logits=True, **pt)
        low, _ = ours.predict_batched(pt["point_coords"], pt["point_labels"], multimask_output=True)
        want = _host_post_process(ours, low, (H, W), threshold, binarize=False)[0]
        assert logits.dtype == np.float32 and logits.shape == want.shape == (3, H, W)
        err = rel_l2(logits, want)
        print(f"[parity] device vs host full-size logits, threshold {threshold}: relative L2 {err:.2e}")
        assert err < 1e-6, err
    finally:
        ours.mask_threshold = saved

    filled = Sam2ImagePredictor(ours.model, ours.params, max_hole_area=40.0, max_sprinkle_area=40.0)
    filled._embedding = ours.embedding
    masks, _, _ = filled.predict(multimask_output=True, **pt)
    want = _host_post_process(filled, low, (H, W), hole=40.0, sprinkle=40.0)[0]
    assert np.mean(masks != want) < 1e-5


def test_device_post_processing_compiles_per_size_and_chunk(ours):
    """One compile per original size and prompt chunk: new box counts made of known chunks do not recompile."""
    from sam2_jax.frontends.image.image_predictor import ImageEmbedding
    from sam2_jax.processing.masks import rows_jit  # the compiled pass that sees the output size

    size = (601, 901)  # a size no other test uses: its compiles start from zero
    fresh = Sam2ImagePredictor(ours.model, ours.params)
    fresh._embedding = ImageEmbedding(ours.embedding.features, (size,))

    def boxes(n):
        return dict(box=np.array([[10.0, 20.0, 400.0, 500.0]] * n), multimask_output=False)

    start = jit_compiles(rows_jit)
    fresh.predict(**boxes(5))  # chunks 4 + 1
    assert jit_compiles(rows_jit) == start + 2
    for n in (2, 3, 6, 8):
        fresh.predict(**boxes(n))
    assert jit_compiles(rows_jit) == start + 2
    fresh.predict(**boxes(16))
    assert jit_compiles(rows_jit) == start + 3
    masks, scores, low = fresh.predict(**boxes(6))
    assert masks.shape == (6, 1, *size) and scores.shape == (6, 1) and low.shape == (6, 1, 256, 256)
    assert masks.dtype == np.bool_ and (masks == masks[:1]).all()
