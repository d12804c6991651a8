"""``Sam2ImagePredictor.warm_up`` (``frontends/image/warm_up.py``): after it, ``predict`` compiles nothing and
answers as without it; bad prompts fail as ``predict`` would."""

from __future__ import annotations

import numpy as np
import pytest
from compile_count import count_compiles

from sam2_jax.frontends.image.image_predictor import Sam2ImagePredictor

SIZE = (123, 187)  # an image size no other test uses, so that nothing is compiled for it beforehand


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pair(small_ref, image):
    """Two predictors with the image set: one to warm up, one left cold."""
    out = []
    for _ in range(2):
        pred = Sam2ImagePredictor(small_ref.model, small_ref.params)
        pred.set_image(image)
        out.append(pred)
    return out


@pytest.mark.parametrize(
    "prompt",
    [
        dict(point_coords=np.array([[10.0, 20.0], [150.0, 60.0]]), point_labels=np.array([1, 0])),
        dict(box=np.array([5.0, 8.0, 120.0, 100.0]), multimask_output=False),
    ],
    ids=["clicks", "box"],
)
def test_predict_after_warm_up_compiles_nothing(pair, image, prompt):
    warm, cold = pair
    future = warm.warm_up(SIZE, **prompt)  # in a thread, beside set_image as the command line does
    warm.set_image(image)
    assert future.result() is None
    with count_compiles() as c:
        masks, scores, low_res = warm.predict(**prompt)
    assert c.n == 0, f"predict compiled {c.n} times after warm_up"

    with count_compiles() as c:
        expected = cold.predict(**prompt)
    assert c.n > 0  # without a warm-up the first predict compiles: the count above could have failed
    np.testing.assert_array_equal(masks, expected[0])
    np.testing.assert_array_equal(scores, expected[1])
    np.testing.assert_array_equal(low_res, expected[2])


def test_warm_up_stores_nothing_and_fails_like_predict(small_ref, pair):
    pred = Sam2ImagePredictor(small_ref.model, small_ref.params)
    assert pred.warm_up(SIZE, point_coords=np.array([[3.0, 4.0]]), point_labels=np.array([1]), background=False) is None
    assert pred.embedding is None
    outside = dict(point_coords=np.array([[500.0, 4.0]]), point_labels=np.array([1]))
    with pytest.raises(ValueError) as from_warm_up:
        pred.warm_up(SIZE, **outside).result()
    with pytest.raises(ValueError) as from_predict:
        pair[1].predict(**outside)  # the same image size
    assert "outside" in str(from_predict.value) and str(from_warm_up.value) == str(from_predict.value)
    with pytest.raises(ValueError, match="original_size"):
        pred.warm_up((0, 10), point_coords=np.array([[1.0, 1.0]]), point_labels=np.array([1]))
