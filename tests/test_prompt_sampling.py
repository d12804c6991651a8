"""Training prompt simulation: clicks in the right regions, boxes, determinism, one compile."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from compile_count import jit_compiles

from sam2_jax.modeling.prompt_encoder import NOT_A_POINT_LABEL
from sam2_jax.training import prompts as P


def masks_case(seed=0, n=6, h=24, w=32):
    """Random blobs as ground truth and a shifted, partly wrong prediction."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((n, h, w), bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        gt[i, y0 : y0 + rng.integers(2, h // 2), x0 : x0 + rng.integers(2, w // 2)] = True
    pred = np.roll(gt, 3, axis=-1) | (rng.random((n, h, w)) < 0.02)
    pred[-1] = gt[-1]  # one prediction exactly right
    return gt, pred


def test_error_clicks_lie_in_their_region():
    """Over many keys: label 1 on a false negative, label 0 on a false positive, a background click when exact;
    and every error pixel kind is hit (the draw is spread over the region)."""
    gt, pred = masks_case()
    sample = jax.jit(jax.vmap(lambda k: P.sample_error_points(k, gt, pred, 2)))
    points, labels = map(np.asarray, sample(jax.random.split(jax.random.PRNGKey(0), 200)))
    x, y = points[..., 0].astype(int), points[..., 1].astype(int)
    assert np.array_equal(points, np.round(points))
    obj = np.broadcast_to(np.arange(gt.shape[0])[None, :, None], x.shape)
    g, p = gt[obj, y, x], pred[obj, y, x]
    assert np.all(g[labels == 1] & ~p[labels == 1])  # false negatives -> positive
    assert np.all(~g[labels == 0] & (p[labels == 0] | (obj[labels == 0] == gt.shape[0] - 1)))
    assert np.all(labels[:, -1] == 0) and not np.any(gt[-1][y[:, -1], x[:, -1]])  # exact: background click
    assert (labels[:, :-1] == 1).any() and (labels[:, :-1] == 0).any()
    # the clicks cover the false-negative region of object 0 roughly uniformly
    fn0 = gt[0] & ~pred[0]
    hits = {
        (a, b) for a, b, lab in zip(x[:, 0].ravel(), y[:, 0].ravel(), labels[:, 0].ravel(), strict=True) if lab == 1
    }
    assert len(hits) > min(fn0.sum(), 50) * 0.5


def test_initial_click_inside_mask_with_padding_slot():
    gt, _ = masks_case(1)
    keys = jax.random.split(jax.random.PRNGKey(1), 100)
    points, labels, mask = map(np.asarray, jax.vmap(lambda k: P.sample_initial_prompt(k, gt))(keys))
    x, y = points[..., 0, 0].astype(int), points[..., 0, 1].astype(int)
    obj = np.broadcast_to(np.arange(gt.shape[0]), x.shape)
    assert gt[obj, y, x].all() and (labels[..., 0] == 1).all()
    assert (labels[..., 1] == NOT_A_POINT_LABEL).all() and (~mask[..., 1]).all() and mask[..., 0].all()
    assert (points[..., 1, :] == 0).all()


def test_box_is_bounding_box_without_jitter_and_bounded_with():
    gt, _ = masks_case(2)
    ys, xs = np.nonzero(gt[0])
    points, labels = P.sample_box(jax.random.PRNGKey(0), gt, noise=0.0)
    assert np.array_equal(np.asarray(points[0]), [[xs.min(), ys.min()], [xs.max(), ys.max()]])
    assert np.array_equal(np.asarray(labels), np.tile([2, 3], (gt.shape[0], 1)))
    box = np.asarray(P.mask_to_box(gt))
    assert np.array_equal(np.asarray(P.mask_to_box(np.zeros((1, 5, 7), bool)))[0], [7, 5, -1, -1])
    jittered = np.stack([np.asarray(P.sample_box(k, gt, 0.1, 2.0)[0]) for k in jax.random.split(jax.random.key(3), 20)])
    delta = np.abs(jittered.reshape(20, -1, 4) - box)
    side = np.stack([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]] * 2, -1)
    assert np.all(delta <= np.minimum(0.1 * side, 2.0) + 1e-5) and delta.max() > 0
    assert jittered.min() >= 0 and jittered[..., 0].max() <= gt.shape[2] - 1


def test_deterministic_and_compiles_once():
    gt, pred = masks_case(3)
    fn = jax.jit(lambda k, g, p: P.sample_error_points(k, g, p, 1))
    a = fn(jax.random.PRNGKey(5), gt, pred)
    b = fn(jax.random.PRNGKey(5), gt, pred)
    c = fn(jax.random.PRNGKey(6), gt, pred)
    for seed in range(3):
        g2, p2 = masks_case(10 + seed)
        fn(jax.random.PRNGKey(seed), g2, p2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert jit_compiles(fn) == 1


def test_append_points():
    pts, labels, mask = P.sample_initial_prompt(jax.random.PRNGKey(0), masks_case()[0])
    new = jnp.ones((*labels.shape[:-1], 1, 2)), jnp.zeros((*labels.shape[:-1], 1), jnp.int32)
    p2, l2, m2 = P.append_points(pts, labels, mask, *new)
    assert p2.shape[-2] == 3 and l2.shape[-1] == 3 and bool(m2[..., 2].all()) and not bool(m2[..., 1].any())
