"""SAM 2's training losses (the official ``training/loss_fns.py``), as pure JAX functions.

Per-mask terms, each reducing only the spatial axes (computed in float32 whatever the input dtype):

  focal_loss(logits (..., H, W), targets (..., H, W), alpha=0.25, gamma=2) -> (...)  mean over pixels
  dice_loss(logits (..., H, W), targets (..., H, W))                       -> (...)  1 - (2|XY| + 1) / (|X| + |Y| + 1)
  iou_loss(logits (..., H, W), targets (..., H, W), pred_ious (...), use_l1=False) -> (...) squared (or absolute)
        error between the predicted IoU and the IoU of ``logits > 0`` with ``targets > 0``
  object_score_loss(object_score_logits (...), present (...))              -> (...)  binary cross-entropy
        (the official focal loss with alpha -1, gamma 0)

Their combination, ``MultiStepMultiMasksAndIous`` of the official trainer:

  multistep_loss(steps, targets (B, P, H, W), valid (B, P) or None, weights=WEIGHTS, ...) -> dict of scalars
        ``steps`` is a sequence of correction steps, each a ``StepOutput`` with masks (B, P, M, H, W) logits
        (M = 3 multimask outputs or 1, at the targets' resolution), ious (B, P, M) and object_score_logits
        (B, P, 1). Per step and object: focal and dice of the best of the M masks (lowest
        focal * w_mask + dice * w_dice), the IoU loss of that mask (or the mean over all M with
        ``supervise_all_iou``), all three zeroed for objects absent from the target (an all-zero mask), plus the
        object-score loss. Everything is summed over objects and steps and divided by the number of objects
        (``valid.sum()``, at least 1: the official ``num_objects``; absent objects count, padded ones do not).
        Keys: loss_mask, loss_dice, loss_iou, loss_class and core_loss (the weighted sum).

Objects with ``valid`` False (padding) contribute nothing at all, whatever their masks and targets hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

WEIGHTS = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}  # the official SAM 2.1 ones

__all__ = [
    "WEIGHTS",
    "StepOutput",
    "focal_loss",
    "dice_loss",
    "iou_loss",
    "mask_iou",
    "object_score_loss",
    "multistep_loss",
]


class StepOutput(NamedTuple):
    """One decoder pass: masks (B, P, M, H, W) logits, ious (B, P, M), object_score_logits (B, P, 1)."""

    masks: jax.Array
    ious: jax.Array
    object_score_logits: jax.Array


def _f32(x) -> jax.Array:
    return jnp.asarray(x).astype(jnp.float32)


def focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0) -> jax.Array:
    """Sigmoid focal loss (RetinaNet) averaged over the last two axes; ``alpha < 0`` turns the weighting off."""
    x, t = _f32(logits), _f32(targets)
    prob = jax.nn.sigmoid(x)
    ce = jnp.maximum(x, 0.0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))  # stable BCE with logits
    p_t = prob * t + (1.0 - prob) * (1.0 - t)
    loss = ce * (1.0 - p_t) ** gamma if gamma != 0 else ce
    if alpha >= 0:
        loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
    return loss.mean(axis=(-2, -1))


def dice_loss(logits, targets) -> jax.Array:
    """1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) over the last two axes, p = sigmoid(logits)."""
    p, t = jax.nn.sigmoid(_f32(logits)), _f32(targets)
    numerator = 2.0 * (p * t).sum(axis=(-2, -1))
    denominator = p.sum(axis=(-2, -1)) + t.sum(axis=(-2, -1))
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def mask_iou(logits, targets) -> jax.Array:
    """IoU of ``logits > 0`` with ``targets > 0`` over the last two axes (0 when both are empty)."""
    pred, gt = jnp.asarray(logits) > 0, jnp.asarray(targets) > 0
    inter = (pred & gt).sum(axis=(-2, -1)).astype(jnp.float32)
    union = (pred | gt).sum(axis=(-2, -1)).astype(jnp.float32)
    return inter / jnp.maximum(union, 1.0)


def iou_loss(logits, targets, pred_ious, use_l1: bool = False) -> jax.Array:
    """Error of the predicted IoU against the actual one (no gradient flows through the actual IoU)."""
    diff = _f32(pred_ious) - jax.lax.stop_gradient(mask_iou(logits, targets))
    return jnp.abs(diff) if use_l1 else diff * diff


def object_score_loss(object_score_logits, present, alpha: float = -1.0, gamma: float = 0.0) -> jax.Array:
    """Focal loss of the object-score logits against presence, elementwise (the official defaults: plain BCE)."""
    x = _f32(object_score_logits)[..., None, None]
    return focal_loss(x, _f32(present)[..., None, None], alpha, gamma)


def multistep_loss(
    steps: Sequence[StepOutput],
    targets,
    valid=None,
    weights: dict[str, float] | None = None,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    supervise_all_iou: bool = False,
    iou_use_l1_loss: bool = False,
    pred_obj_scores: bool = True,
    focal_alpha_obj_score: float = -1.0,
    focal_gamma_obj_score: float = 0.0,
) -> dict[str, jax.Array]:
    """The official ``MultiStepMultiMasksAndIous`` over (B, P) objects; see the module docstring."""
    weights = dict(WEIGHTS if weights is None else weights)
    weights.setdefault("loss_class", 0.0)
    targets = _f32(targets)  # (B, P, H, W)
    valid = jnp.ones(targets.shape[:2], bool) if valid is None else jnp.asarray(valid, bool)
    keep = valid.astype(jnp.float32)
    num_objects = jnp.maximum(keep.sum(), 1.0)
    present = (targets > 0).any(axis=(-2, -1)).astype(jnp.float32)  # (B, P)
    obj_weight = keep * present if pred_obj_scores else keep

    totals = {k: jnp.float32(0.0) for k in ("loss_mask", "loss_dice", "loss_iou", "loss_class")}
    for step in steps:
        masks = step.masks
        tgt = targets[:, :, None]  # (B, P, 1, H, W) against (B, P, M, H, W)
        focal = focal_loss(masks, tgt, focal_alpha, focal_gamma)  # (B, P, M)
        dice = dice_loss(masks, tgt)
        ious = iou_loss(masks, tgt, step.ious, iou_use_l1_loss)
        if masks.shape[2] > 1:
            combo = focal * weights["loss_mask"] + dice * weights["loss_dice"]
            best = jnp.argmin(combo, axis=-1)[..., None]
            focal = jnp.take_along_axis(focal, best, axis=-1)[..., 0]
            dice = jnp.take_along_axis(dice, best, axis=-1)[..., 0]
            ious = ious.mean(-1) if supervise_all_iou else jnp.take_along_axis(ious, best, axis=-1)[..., 0]
        else:
            focal, dice, ious = focal[..., 0], dice[..., 0], ious[..., 0]
        totals["loss_mask"] += (focal * obj_weight).sum() / num_objects
        totals["loss_dice"] += (dice * obj_weight).sum() / num_objects
        totals["loss_iou"] += (ious * obj_weight).sum() / num_objects
        if pred_obj_scores:
            cls = object_score_loss(
                step.object_score_logits[..., 0], present, focal_alpha_obj_score, focal_gamma_obj_score
            )
            totals["loss_class"] += (cls * keep).sum() / num_objects
    totals["core_loss"] = sum(totals[k] * w for k, w in weights.items() if w != 0)
    return totals
