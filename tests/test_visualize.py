"""``overlay``: masks are tinted and outlined, everything else is left as it was."""

from __future__ import annotations

import numpy as np

from sam2_jax import overlay


def test_overlay_tints_only_the_masks():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 5:15, 5:20] = True
    masks[1, 25:35, 30:55] = True
    out = overlay(image, masks)
    assert out.shape == image.shape and out.dtype == np.uint8
    near = masks.any(0)
    near = near | np.roll(near, 1, 0) | np.roll(near, -1, 0) | np.roll(near, 1, 1) | np.roll(near, -1, 1)
    outside = ~near  # the outline may take the one-pixel ring around a mask
    np.testing.assert_array_equal(out[outside], image[outside])
    assert np.all(np.any(out[masks[0]] != image[masks[0]], axis=-1))
    assert not np.array_equal(out[masks[0]].mean(0), out[masks[1]].mean(0))  # two colours


def test_overlay_draws_prompts():
    image = np.zeros((50, 50, 3), np.uint8)
    out = overlay(image, np.zeros((50, 50), bool), points=[((10, 10), 1), ((40, 40), 0)], box=[[5, 5, 45, 45]])
    assert out[10, 10, 1] > 150 and out[40, 40, 0] > 150  # green positive, red negative click
    assert out[5, 25, 1] == 255 and out[25, 25].sum() == 0  # box outline, inside untouched
