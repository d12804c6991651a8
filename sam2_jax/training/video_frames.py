"""One frame of the official video training forward (``SAM2Train.track_step``), for N objects at once.

Pure functions of a param tree; ``call(params, fn, *args)`` is ``model.apply({"params": params}, *args, method=fn)``
of the training model (``video_step``). Shapes: N objects (videos x objects, flattened), S the image size, s = S/4
the low-resolution side, h = S/16, C hidden width, M memory width, n = num_correction_pt_per_frame.

  multimask(config, is_init, num_points) -> bool: the official ``_use_multimask``
  step_losses(masks (N, K, S, S) logits, ious (N, K), object_score_logits (N, 1), gt (N, S, S) bool,
        keep (N,) bool, loss_kwargs) -> dict of scalars: ``losses.multistep_loss`` of one decoder pass over the
        flattened batch (normalised by keep.sum(): the official ``num_objects``)
  first_pass(call, params, features (N, h, w, C), frame (FrameFeatures of N), gt, keep, points (N, n0, 2) or
        None, labels (N, n0), point_mask (N, n0) or None, multimask, n, loss_kwargs) -> (losses, carry): the
        first SAM pass (no points: a tracked frame); the carry: point buffers (N, n0 + n) and the pass's outputs
  correct(call, params, features, frame, gt, keep, carry, n0, keys (n, 2), from_gt (n,) bool, flags, loss_kwargs)
        -> (losses, carry): the n official correction steps: a click from the errors of the previous step's
        high-resolution mask (``prompts.sample_error_points``; from the ground truth alone where ``from_gt``),
        appended to the points, the previous low-resolution best mask (with its gradient) as the mask prompt
  result(carry) -> FrameResult of the last pass
  mask_frame(call, params, frame, gt, keep, loss_kwargs) -> (losses, FrameResult): a frame whose prompt is its
        ground-truth mask (official ``_use_mask_as_output``)
  bank_view(store_memory (T, N, h, w, M), store_pointers (T, N, C), t, cond_slots (Kc,), init_slots (K,),
        is_cond (T,), num_recent, num_pointers) -> ``tracking.MemoryBank``: the memories the official
        ``_prepare_memory_conditioned_features`` (training mode) reads on frame t: every conditioning frame already
        processed (all initial ones, and corrected ones before t), the last ``num_recent`` non-conditioning frames
        and pointers of the last ``num_pointers``; -1 marks unused slots
FrameResult: high_res_masks (N, S, S) final logits, object_pointer (N, C), object_score_logits (N, 1).
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from ..modeling.prompt_encoder import NOT_A_POINT_LABEL
from ..modeling.sam2_video_model import Sam2VideoModel
from ..processing.masks import upsample_bilinear
from ..tracking.memory_bank import MemoryBank
from .losses import StepOutput, multistep_loss
from .prompts import sample_error_points

LOSS_KEYS = ("loss_mask", "loss_dice", "loss_iou", "loss_class", "core_loss")


@flax.struct.dataclass
class FrameResult:
    high_res_masks: jax.Array
    object_pointer: jax.Array
    object_score_logits: jax.Array


def _result(high, pointer, scores) -> FrameResult:
    return FrameResult(*(x.astype(jnp.float32) for x in (high, pointer, scores)))


def zero_losses() -> dict:
    return {k: jnp.float32(0.0) for k in LOSS_KEYS}


def add_losses(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in LOSS_KEYS}


def multimask(config, is_init: bool, num_points: int) -> bool:
    v = config.video_config
    return bool(
        v.multimask_output_in_sam
        and (is_init or v.multimask_output_for_tracking)
        and v.multimask_min_pt_num <= num_points <= v.multimask_max_pt_num
    )


def step_losses(masks, ious, object_score_logits, gt, keep, loss_kwargs) -> dict:
    out = StepOutput(masks[None], ious[None], object_score_logits[None])
    losses = multistep_loss([out], gt[None], keep[None], **loss_kwargs)
    return {k: losses[k] for k in LOSS_KEYS}


def _heads_losses(heads, gt, keep, size, loss_kwargs) -> dict:
    high = upsample_bilinear(heads.low_res_multimasks, (size, size))
    return step_losses(high, heads.iou_scores, heads.object_score_logits, gt, keep, loss_kwargs)


def _runs(flags: list[bool]) -> list[tuple[int, int, bool]]:
    """Consecutive equal flags as (start, length, flag)."""
    runs: list[tuple[int, int, bool]] = []
    for i, f in enumerate(flags):
        if runs and runs[-1][2] == f:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, f)
        else:
            runs.append((i, 1, f))
    return runs


def first_pass(call, params, features, frame, gt, keep, points, labels, point_mask, mm, num_corrections, loss_kwargs):
    """The SAM heads on the frame's first prompt (``points`` None: none, a tracked frame) -> (losses, carry), the
    carry holding point buffers with room for ``num_corrections`` clicks and the pass's outputs."""
    size = call.config.prompt_encoder_config.image_size
    heads = call(params, Sam2VideoModel.sam_heads, features, frame, points, labels, point_mask, None, mm)
    losses = _heads_losses(heads, gt, keep, size, loss_kwargs)
    num, n0 = gt.shape[0], 0 if points is None else points.shape[1]
    buf_points = jnp.zeros((num, n0 + num_corrections, 2), jnp.float32)
    buf_labels = jnp.full((num, n0 + num_corrections), NOT_A_POINT_LABEL, jnp.int32)
    buf_mask = jnp.zeros((num, n0 + num_corrections), bool)
    if n0:
        buf_points = buf_points.at[:, :n0].set(points.astype(jnp.float32))
        buf_labels = buf_labels.at[:, :n0].set(labels.astype(jnp.int32))
        buf_mask = buf_mask.at[:, :n0].set(True if point_mask is None else point_mask)
    carry = (buf_points, buf_labels, buf_mask, heads.low_res_masks, heads.high_res_masks, heads.object_pointer,
             heads.object_score_logits)  # fmt: skip
    return losses, carry


def correct(call, params, features, frame, gt, keep, carry, n0, keys, from_gt, flags, loss_kwargs):
    """The official correction steps after ``first_pass`` (``flags``: each step's static multimask) -> (losses,
    carry)."""
    size = call.config.prompt_encoder_config.image_size
    num = gt.shape[0]

    def step(mm, carry, xs):
        pts, lab, msk, low, high = carry[:5]
        j, key, gt_only = xs
        pred = (jax.lax.stop_gradient(high) > 0) & ~gt_only
        click, label = sample_error_points(key, gt, pred, 1)
        pts = jax.lax.dynamic_update_slice_in_dim(pts, click, n0 + j, axis=1)
        lab = jax.lax.dynamic_update_slice_in_dim(lab, label, n0 + j, axis=1)
        msk = jax.lax.dynamic_update_slice_in_dim(msk, jnp.ones((num, 1), bool), n0 + j, axis=1)
        out = call(params, Sam2VideoModel.sam_heads, features, frame, pts, lab, msk, low, mm)
        carry = (pts, lab, msk, out.low_res_masks, out.high_res_masks, out.object_pointer, out.object_score_logits)
        return carry, _heads_losses(out, gt, keep, size, loss_kwargs)

    losses = zero_losses()
    for start, length, mm in _runs(flags):
        xs = (jnp.arange(start, start + length), keys[start : start + length], from_gt[start : start + length])
        carry, per_step = jax.lax.scan(functools.partial(step, mm), carry, xs)
        losses = add_losses(losses, {k: v.sum() for k, v in per_step.items()})
    return losses, carry


def result(carry) -> FrameResult:
    return _result(*carry[4:])


def mask_frame(call, params, frame, gt, keep, loss_kwargs):
    heads = call(params, Sam2VideoModel.mask_as_output, frame, gt)
    losses = step_losses(
        heads.high_res_masks[:, None], heads.iou_scores, heads.object_score_logits, gt, keep, loss_kwargs
    )
    return losses, _result(heads.high_res_masks, heads.object_pointer, heads.object_score_logits)


def bank_view(memory, pointers, t, cond_slots, init_slots, is_cond, num_recent, num_pointers) -> MemoryBank:
    num_frames, n = memory.shape[:2]
    k = init_slots.shape[0]
    slot_is_init = jnp.arange(cond_slots.shape[0]) < k
    done = (cond_slots >= 0) & (slot_is_init | (cond_slots < t))
    cond = jnp.where(done, cond_slots, -1)

    def behind(count):
        f = t - jnp.arange(1, count + 1)
        ok = (f >= 0) & ~is_cond[jnp.clip(f, 0, num_frames - 1)]
        return jnp.where(ok, f, -1)

    recent, ptr = behind(num_recent), behind(num_pointers)
    gather = lambda store, f: jnp.swapaxes(store[jnp.clip(f, 0, num_frames - 1)], 0, 1)  # noqa: E731
    per_object = lambda f: jnp.broadcast_to(f, (n, f.shape[0])).astype(jnp.int32)  # noqa: E731
    return MemoryBank(
        cond_frames=per_object(cond),
        cond_features=gather(memory, cond),
        cond_pointers=gather(pointers, cond),
        recent_frames=per_object(recent),
        recent_features=gather(memory, recent),
        pointer_frames=per_object(ptr),
        pointers=gather(pointers, ptr),
    )
