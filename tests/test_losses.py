"""The training losses against the official ``training.loss_fns`` (run live in torch), torchvision and NumPy."""

from __future__ import annotations

import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest

from sam2_jax.training import losses as L

TOL = 1e-6


def official_loss_fns():
    """``training.loss_fns``; its only import from ``training.trainer`` is the ``CORE_LOSS_KEY`` string, and the
    trainer needs ``tensordict`` (not part of the dev install), so without it that constant is provided alone."""
    try:
        import training.trainer  # noqa: F401
    except ImportError:
        stub = types.ModuleType("training.trainer")
        stub.CORE_LOSS_KEY = "core_loss"
        sys.modules["training.trainer"] = stub
    import training.loss_fns as fns

    return fns


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def case(seed=0, b=2, p=3, m=3, hw=(32, 40)):
    """Random logits, targets with an absent object, IoU predictions and object scores."""
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((b, p, m, *hw))).astype(np.float32)
    targets = rng.random((b, p, *hw)) < rng.uniform(0.1, 0.6, (b, p, 1, 1))
    targets[0, 1] = False  # an absent object
    # objects whose first masks track the target so that the best-of-multimask choice varies
    logits[:, :, : m - 1] += np.where(targets[:, :, None], 4.0, -4.0) * rng.uniform(0, 1, (b, p, m - 1, 1, 1))
    ious = rng.uniform(0, 1, (b, p, m)).astype(np.float32)
    obj = rng.standard_normal((b, p, 1)).astype(np.float32)
    return logits, targets.astype(np.float32), ious, obj


def test_elementwise_losses_match_official_torchvision_numpy():
    import torch
    import torchvision

    fns = official_loss_fns()
    logits, targets, ious, _ = case()
    x = torch.from_numpy(logits.reshape(6, 3, *logits.shape[-2:]))
    t = torch.from_numpy(np.repeat(targets[:, :, None], 3, 2).reshape(x.shape))
    n = 1.0
    focal = L.focal_loss(logits, targets[:, :, None]).reshape(6, 3)
    e = rel(focal, fns.sigmoid_focal_loss(x, t, n, loss_on_multimask=True).numpy())
    print(f"[parity] focal vs official: {e:.2e}")
    assert e < TOL
    tv = torchvision.ops.sigmoid_focal_loss(x, t, 0.25, 2, reduction="none").flatten(2).mean(-1).numpy()
    assert rel(focal, tv) < TOL

    dice = L.dice_loss(logits, targets[:, :, None]).reshape(6, 3)
    e = rel(dice, fns.dice_loss(x, t, n, loss_on_multimask=True).numpy())
    print(f"[parity] dice vs official: {e:.2e}")
    assert e < TOL
    p64 = 1 / (1 + np.exp(-logits.astype(np.float64)))
    t64 = np.broadcast_to(targets[:, :, None], p64.shape)
    ref = 1 - (2 * (p64 * t64).sum((-2, -1)) + 1) / (p64.sum((-2, -1)) + t64.sum((-2, -1)) + 1)
    assert rel(dice, ref.reshape(6, 3)) < TOL

    for l1 in (False, True):
        ours = L.iou_loss(logits, targets[:, :, None], ious, use_l1=l1).reshape(6, 3)
        theirs = fns.iou_loss(x, t, torch.from_numpy(ious.reshape(6, 3)), n, True, l1).numpy()
        e = rel(ours, theirs)
        print(f"[parity] iou loss (l1={l1}) vs official: {e:.2e}")
        assert e < TOL


def official_multistep(fns, steps, targets, **kw):
    import torch

    b, p = targets.shape[:2]
    outs = {
        "multistep_pred_multimasks_high_res": [
            torch.from_numpy(np.asarray(s.masks).reshape(b * p, -1, *s.masks.shape[-2:])) for s in steps
        ],
        "multistep_pred_ious": [torch.from_numpy(np.asarray(s.ious).reshape(b * p, -1)) for s in steps],
        "multistep_object_score_logits": [
            torch.from_numpy(np.asarray(s.object_score_logits).reshape(b * p, 1)) for s in steps
        ],
    }
    weights = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}
    crit = fns.MultiStepMultiMasksAndIous(
        weights,
        supervise_all_iou=kw.get("supervise_all_iou", False),
        iou_use_l1_loss=kw.get("iou_use_l1_loss", False),
        pred_obj_scores=True,
    )
    out = crit([outs], torch.from_numpy(targets.reshape(1, b * p, *targets.shape[-2:])))
    return {k: float(v) for k, v in out.items()}


@pytest.mark.parametrize("supervise_all_iou,l1", [(False, False), (True, True)])
def test_multistep_loss_matches_official(supervise_all_iou, l1):
    """Two steps (3 masks, then 1), an absent object, best-of-multimask selection: every term as the official."""
    fns = official_loss_fns()
    logits, targets, ious, obj = case(1)
    single, _, ious1, obj1 = case(2, m=2)
    steps = [L.StepOutput(logits, ious, obj), L.StepOutput(single[:, :, :1], ious1[:, :, :1], obj1)]
    kw = dict(supervise_all_iou=supervise_all_iou, iou_use_l1_loss=l1)
    ours = L.multistep_loss(steps, targets, **kw)
    theirs = official_multistep(fns, steps, targets, **kw)
    best = np.argmin(20 * L.focal_loss(logits, targets[:, :, None]) + L.dice_loss(logits, targets[:, :, None]), -1)
    assert len(np.unique(best)) > 1  # the selection is exercised
    for k in ("loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss"):
        e = rel(ours[k], theirs[k])
        print(f"[parity] multistep {k} (all_iou={supervise_all_iou}, l1={l1}): {e:.2e}")
        assert e < TOL, k
    # the absent object adds no mask loss: changing its logits changes only the class loss
    other = logits.copy()
    other[0, 1] = -other[0, 1]
    moved = L.multistep_loss([L.StepOutput(other, ious, obj), steps[1]], targets, **kw)
    assert float(moved["loss_mask"]) == pytest.approx(float(ours["loss_mask"]), rel=1e-6)


def test_padded_objects_change_nothing():
    logits, targets, ious, obj = case(3)
    base = L.multistep_loss([L.StepOutput(logits, ious, obj)], targets)
    rng = np.random.default_rng(9)
    pad = lambda x: np.concatenate([x, rng.standard_normal((2, 2, *x.shape[2:])).astype(np.float32)], 1)  # noqa: E731
    padded_targets = np.concatenate([targets, np.ones((2, 2, *targets.shape[2:]), np.float32)], 1)
    valid = np.concatenate([np.ones((2, 3), bool), np.zeros((2, 2), bool)], 1)
    padded = L.multistep_loss([L.StepOutput(pad(logits), pad(ious), pad(obj))], padded_targets, valid)
    for k in base:
        assert float(padded[k]) == pytest.approx(float(base[k]), rel=1e-6), k
    unmasked = L.multistep_loss([L.StepOutput(pad(logits), pad(ious), pad(obj))], padded_targets)
    assert float(unmasked["core_loss"]) != pytest.approx(float(base["core_loss"]), rel=1e-3)


def test_object_score_loss_is_bce():
    x = jnp.array([-3.0, 0.0, 2.5])
    t = jnp.array([0.0, 1.0, 1.0])
    bce = -(t * np.log(1 / (1 + np.exp(-x))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-x))))
    assert rel(L.object_score_loss(x, t), bce) < TOL
