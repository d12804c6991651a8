"""``sam2_jax.processing.masks``: the one stability score (against the official ``calculate_stability_score``, and
in the mask decoder's form with 1.0 for an empty mask, under jit too) and the one bilinear upsampling (against
torch's ``F.interpolate``, on NumPy inputs and under jit)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from sam2.utils import amg as ref

from sam2_jax.processing.masks import interpolation_matrix, stability_score, upsample_bilinear


def _t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("threshold, offset", [(0.0, 1.0), (0.5, 0.25), (-1.0, 3.0)])
def test_stability_score(seed, threshold, offset):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((2, 5, 33, 47)) * 3).astype(np.float32)
    logits[0, 0] = -10.0  # empty at the low threshold: NaN, as the official 0 / 0
    ours = np.asarray(stability_score(logits, threshold, offset))
    theirs = ref.calculate_stability_score(_t(logits), threshold, offset).numpy()
    assert ours.dtype == theirs.dtype == np.float32 and ours.shape == (2, 5)
    np.testing.assert_array_equal(ours, theirs)  # NaN where NaN
    assert np.isnan(ours[0, 0])
    # the decoder's form: 1.0 for an empty union, the same elsewhere; and the same under jit
    jitted = jax.jit(stability_score, static_argnames=("empty_value",))
    decoder = np.asarray(jitted(logits, threshold, offset, empty_value=1.0))
    assert decoder[0, 0] == 1.0
    np.testing.assert_array_equal(decoder.ravel()[1:], theirs.ravel()[1:])


@pytest.mark.parametrize("size", [(333, 517), (1, 1), (300, 7), (1200, 1800), (64, 64)])
def test_upsample_bilinear_matches_torch(size):
    rng = np.random.default_rng(size[0])
    x = (rng.standard_normal((2, 3, 64, 48)) * 8).astype(np.float32)
    theirs = torch.nn.functional.interpolate(_t(x), size, mode="bilinear", align_corners=False).numpy()
    ours = np.asarray(upsample_bilinear(x, size))
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= 1e-5
    under_jit = np.asarray(jax.jit(upsample_bilinear, static_argnames=("size",))(x, size))
    assert np.abs(under_jit - theirs).max() <= 1e-5


def test_interpolation_matrix_rows_are_two_taps():
    m = interpolation_matrix(5, 13)
    assert m.shape == (13, 5) and m.dtype == np.float32
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    assert (np.count_nonzero(m, axis=1) <= 2).all()
    np.testing.assert_array_equal(interpolation_matrix(7, 7), np.eye(7, dtype=np.float32))
