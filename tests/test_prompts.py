"""``sam2_jax.processing.prompts``: the one prompt path (buckets, scaling, validation, encoding, padding), and
that boxes sent as corner points decode like ``input_boxes`` through the model."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_jax import Sam2Processor
from sam2_jax.modeling.prompt_encoder import NOT_A_POINT_LABEL, PAD_LABEL
from sam2_jax.processing import prompts


def test_buckets():
    assert [prompts.bucket(n) for n in (0, 1, 2, 4, 5, 16, 17, 4096)] == [1, 1, 4, 4, 16, 16, 64, 4096]
    assert prompts.bucket(1, minimum=4) == 4 and prompts.bucket(5, minimum=4) == 16
    with pytest.raises(ValueError, match="largest bucket"):
        prompts.bucket(prompts.PROMPT_BUCKETS[-1] + 1)
    assert prompts.PAD_LABEL == PAD_LABEL and prompts.NOT_A_POINT_LABEL == NOT_A_POINT_LABEL


def test_scaling_is_the_processors_bit_for_bit():
    rng = np.random.default_rng(0)
    size = (333, 517)
    pts = rng.uniform(0, 333, (3, 5, 2)).astype(np.float32)
    boxes = np.sort(rng.uniform(0, 333, (3, 2, 2)), axis=1).reshape(3, 4).astype(np.float32)
    proc = Sam2Processor().process_prompts([size], [pts.tolist()], [[[1] * 5] * 3], [boxes.tolist()])
    np.testing.assert_array_equal(prompts.to_model_frame(pts, size, 1024), proc["input_points"][0])
    np.testing.assert_array_equal(prompts.to_model_frame(boxes, size, 1024), proc["input_boxes"][0])
    enc = prompts.encode(pts, np.ones((3, 5)), boxes, size=size, image_size=1024)
    np.testing.assert_array_equal(enc.points, proc["input_points"][0])
    np.testing.assert_array_equal(enc.boxes, proc["input_boxes"][0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(points=[[1.0, 2.0], [40.0, 5.0]], labels=[1, 1]), r"point_coords\[0\]\[1\]: point \(40.0, 5.0\) lies"),
        (dict(points=[[np.nan, 2.0]], labels=[1]), r"point_coords\[0\]\[0\]: non-finite number nan"),
        (dict(points=[[1.0, 2.0]]), "point_labels must be supplied"),
        (dict(points=[[1.0, 2.0]], labels=[1, 1]), "does not match"),
        (dict(points=[1.0, 2.0], labels=[1]), r"point_coords must be \(N, 2\)"),
        (dict(boxes=[5.0, 2.0, 4.0, 9.0]), r"box\[0\]: box \(5.0, 2.0, 4.0, 9.0\) has x2 < x1"),
        (dict(boxes=[1.0, 5.0, 4.0, 2.0]), "has y2 < y1"),
        (dict(boxes=[0.0, 0.0, 31.0, 9.0]), "lies outside the 30x20 image"),
        (dict(boxes=[0.0, 0.0, 3.0]), r"box must be \(4,\)"),
        (dict(points=np.zeros((3, 1, 2)), labels=np.ones((3, 1)), boxes=np.ones((2, 4))), "2 boxes for 3 point"),
    ],
)
def test_encode_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prompts.encode(**kwargs, size=(20, 30), image_size=1024)


def test_encode_broadcast_and_mask_only():
    one_box = prompts.encode(np.zeros((3, 2, 2)), np.ones((3, 2)), [0, 0, 5, 5], size=(20, 30), image_size=1024)
    assert one_box.boxes.shape == (3, 4) and one_box.points.shape == (3, 2, 2) and one_box.mask.all()
    one_click = prompts.encode([[1, 1]], [1], np.ones((4, 4)), size=(20, 30), image_size=1024)
    assert one_click.points.shape == (4, 1, 2) and one_click.labels.dtype == np.int32
    masks_only = prompts.encode(size=(20, 30), image_size=1024, n_prompts=2)
    assert masks_only.labels.shape == (2, 1) and not masks_only.mask.any()
    assert (masks_only.labels == NOT_A_POINT_LABEL).all() and masks_only.boxes is None


def test_pad_batch():
    a = prompts.encode(np.ones((2, 3, 2)), np.ones((2, 3)), size=(20, 30), image_size=30)
    b = prompts.encode([[1, 1]], [0], size=(20, 30), image_size=30)
    out = prompts.pad_batch([a, b], 4, 4)
    assert out["input_points"].shape == (2, 4, 4, 2) and "input_boxes" not in out
    assert out["prompt_mask"].sum() == 2 * 3 + 1
    assert (out["input_labels"][~out["prompt_mask"]] == NOT_A_POINT_LABEL).all()
    assert (out["input_points"][~out["prompt_mask"]] == 0).all()
    boxes_only = prompts.encode(boxes=np.ones((2, 4)), size=(20, 30), image_size=30)
    assert set(prompts.pad_batch([boxes_only], 4, 1)) == {"input_boxes"}  # no point tokens at all
    with pytest.raises(ValueError, match="as_corner_points"):
        prompts.pad_batch([a, boxes_only], 4, 4)
    with pytest.raises(ValueError, match="do not fit"):
        prompts.pad_batch([a], 1, 4)


def test_from_processor_and_corner_points():
    out = Sam2Processor(image_size=30).process_prompts(
        [(20, 30)], [[[[1, 2]], []]], [[[1], []]], [[[0, 0, 5, 5], [2, 3, 9, 9]]]
    )
    enc = prompts.from_processor(out)
    assert enc.mask.tolist() == [[True], [False]] and enc.labels[1, 0] == NOT_A_POINT_LABEL
    corners = prompts.as_corner_points(enc)
    assert corners.boxes is None and corners.points.shape == (2, 3, 2)
    assert corners.labels[:, :2].tolist() == [list(prompts.BOX_CORNER_LABELS)] * 2
    np.testing.assert_array_equal(corners.points[:, :2].reshape(2, 4), enc.boxes)
    boxes_only = prompts.from_processor(
        Sam2Processor(image_size=30).process_prompts([(20, 30)], None, None, [[[0, 0, 5, 5]]])
    )
    assert prompts.as_corner_points(boxes_only).labels.shape == (1, 2)


def test_corner_points_decode_like_input_boxes(small_ref):
    """The streaming encoding of boxes (corner points) and ``input_boxes`` give the same masks and scores."""
    rng = np.random.default_rng(0)
    s = small_ref.size
    emb = small_ref.embed(small_ref.params, rng.standard_normal((1, s, s, 3)).astype(np.float32))
    enc = prompts.encode(
        rng.uniform(0, s, (2, 2, 2)),
        np.array([[1, 0], [1, 1]]),
        [[10, 20, 200, 220], [50, 5, 90, 60]],
        size=(s, s),
        image_size=s,
    )
    as_boxes = small_ref.apply(small_ref.params, image_embeddings=emb, **prompts.pad_batch([enc], 4, 4))
    corners = prompts.pad_batch([prompts.as_corner_points(enc)], 4, 4)
    as_points = small_ref.apply(small_ref.params, image_embeddings=emb, **corners)
    for a, b in ((as_boxes.pred_masks, as_points.pred_masks), (as_boxes.iou_scores, as_points.iou_scores)):
        a, b = np.asarray(a)[:, :2], np.asarray(b)[:, :2]
        assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(a)
