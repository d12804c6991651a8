"""A jitted optax train step for SAM 2's video model over a clip: the official ``SAM2Train.forward`` (training mode)
with ``MultiStepMultiMasksAndIous`` summed over frames.

  make_video_train_step(model, optimizer, trainable="memory", num_frames=8, settings=None, dtype=None,
        loss_kwargs=None, remat=True, **official) -> ``step.TrainStep``: init(params) -> opt_state;
        step(params, opt_state, batch, key, plan=None) -> (params, opt_state, metrics), jitted (params are
        arguments). ``official``: ``VideoPromptSettings`` fields by their official names (defaults: the MOSE
        fine-tuning yaml). ``plan``: a ``video_prompts.ClipPlan`` to use instead of one drawn from ``key`` (to
        replay or inject the random choices). ``trainable``: ``step.trainable_labels`` ("memory",
        "decoder+memory", "all", ...). ``loss_kwargs``: ``losses.multistep_loss`` options over ``MOSE_LOSS``.
  clip_frame_features(model, params, pixel_values (T, B, S, S, 3)) -> the batch's ``frame_features``
  clip_loss(call, params, features, masks, keep, plan, settings, loss_kwargs, remat) -> (losses, iou): the forward

A batch (T frames, B videos, O objects each, S the model's image size; masks at the model's resolution, as the
official trainer's):
  frame_features  (feat_s0 (T, B, S/4, S/4, C/8), feat_s1 (T, B, S/8, S/8, C/4), features (T, B, S/16, S/16, C)):
                  the frozen encoder's ``Sam2VideoModel.frame_features`` per frame (the 64x64 level WITHOUT
                  ``no_memory_embedding``, unlike the image trainer's ``image_embeddings``), or
  pixel_values    (T, B, S, S, 3) (encoded in the step; for ``trainable="all"``)
  masks           (T, B, O, S, S) bool ground truth; valid (B, O) bool optional (False: padding objects)
The forward: the initial conditioning frames first (a ``scan`` over their K slots, skipped when unused: the
ground-truth mask as output, or a click / box on the features plus ``no_memory_embedding`` and the corrections),
then a ``scan`` over the frames in time order carrying every processed frame's memory (T, N, h, w, M) and pointer
(T, N, C), N = B * O: on each non-initial frame memory attention over the official selection (every conditioning
frame processed so far, the num_maskmem - 1 previous non-conditioning frames, pointers of the
min(T, max_obj_ptrs_in_encoder) - 1 previous ones, signed temporal offsets, future conditioning pointers
included as in training), the SAM heads, corrections on the plan's frames, the memory encoder on the final mask
(sigmoid, never binarised in training). Each frame body is ``jax.checkpoint``-ed (``remat``). One plan (cond
frames, point vs mask vs box, corrected frames) for the whole batch, as the official one; clicks per object.
Metrics: the summed losses (``loss`` = ``core_loss``), ``iou`` (final masks' IoU, mean over frames and valid
objects) and ``grad_norm``. Not modelled: the official dropout (memory attention, drop path) in training mode.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from ..modeling.sam2_video_model import FrameFeatures, Sam2VideoModel
from ..modeling.vision_encoder import sine_position_encoding
from ..tracking.steps import condition_on_memory
from . import prompts as P
from . import video_frames as V
from .losses import WEIGHTS, mask_iou
from .step import MaskedOptimizer, TrainStep
from .video_prompts import ClipPlan, VideoPromptSettings, frame_roles, sample_plan

MOSE_LOSS = dict(weights=WEIGHTS, supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True)
__all__ = ["MOSE_LOSS", "clip_frame_features", "clip_loss", "make_video_train_step", "video_training_model"]


class Caller:
    """``call(params, fn, *args)`` = ``net.apply({"params": params}, *args, method=fn)``; ``call.config``."""

    def __init__(self, net: Sam2VideoModel):
        self.net, self.config = net, net.config

    def __call__(self, params, fn, *args):
        return self.net.apply({"params": params}, *args, method=fn)


def video_training_model(model: Sam2VideoModel, dtype=None) -> Sam2VideoModel:
    """The model as ``SAM2Train`` runs it: single masks are token 0, pointers of future conditioning frames are
    read, memory masks are never binarised."""
    c, v = model.config, model.config.video_config
    if v.max_cond_frame_num != -1:
        raise ValueError("max_cond_frame_num other than -1 (every conditioning frame) is not supported")
    config = dataclasses.replace(
        c,
        mask_decoder_config=dataclasses.replace(c.mask_decoder_config, dynamic_multimask_via_stability=False),
        video_config=dataclasses.replace(
            v, only_obj_ptrs_in_the_past_for_eval=False, binarize_mask_from_pts_for_mem_enc=False
        ),
    )
    return Sam2VideoModel(config, model.dtype if dtype is None else dtype, model.implementation, model.precision)


def clip_frame_features(model: Sam2VideoModel, params, pixel_values):
    """(T, B, S, S, 3) -> the batch's ``frame_features`` tuple (each (T, B, ...))."""
    t, b = pixel_values.shape[:2]
    f = model.apply({"params": params}, pixel_values.reshape(t * b, *pixel_values.shape[2:]), method="frame_features")
    return tuple(x.reshape(t, b, *x.shape[1:]) for x in (f.feat_s0, f.feat_s1, f.features))


def clip_loss(call: Caller, params, features, masks, keep, plan: ClipPlan, s: VideoPromptSettings, loss_kwargs, remat):
    """features: the three (T, B, ...) levels; masks (T, N, S, S) bool; keep (N,) bool -> (losses, iou)."""
    cfg, v = call.config, call.config.video_config
    s0, s1, f64 = (jnp.asarray(x) for x in features)
    masks = jnp.asarray(masks)
    t_count, b, h, w, c = f64.shape
    n = masks.shape[1]
    o = n // b
    m = v.memory_encoder_output_channels
    position = jnp.asarray(sine_position_encoding(h, w, c // 2))[None].astype(f64.dtype)
    rep = lambda x: jnp.repeat(x, o, axis=0)  # noqa: E731  (B, ...) -> (N, ...), each video's objects in a row
    is_init, corrected, is_cond = frame_roles(plan, t_count, s.add_all_frames_to_correct_as_cond)
    extra = plan.extra_corrected if s.add_all_frames_to_correct_as_cond else plan.extra_corrected[:0]
    cond_slots = jnp.concatenate([plan.init_cond_frames, extra])
    num_recent, num_pointers = v.num_maskmem - 1, min(t_count, v.max_object_pointers_in_encoder) - 1
    checkpoint = (lambda fn: jax.checkpoint(fn, prevent_cse=False)) if remat else (lambda fn: fn)
    n_corr, jitter = s.num_correction_pt_per_frame, (s.box_noise, s.box_noise_bound)
    no_memory = lambda: (jnp.zeros((n, h, w, m), jnp.float32), jnp.zeros((n, c), jnp.float32))  # noqa: E731

    def frame_at(t):
        return FrameFeatures(rep(s0[t]), rep(s1[t]), rep(f64[t]), position)

    def finish(p, frame, gt, losses, res):
        memory, _ = call(p, Sam2VideoModel.encode_new_memory, frame.features, res.high_res_masks,
                         res.object_score_logits, False)  # fmt: skip
        iou = (mask_iou(res.high_res_masks, gt) * keep).sum()
        return losses, memory.astype(jnp.float32), res.object_pointer.astype(jnp.float32), iou

    def slot(p, xs):  # an initial conditioning frame: no memory
        f, use_box, key = xs
        fc = jnp.maximum(f, 0)
        frame, gt = frame_at(fc), masks[fc]
        embed = frame.features + p["no_memory_embedding"].astype(frame.features.dtype)
        keys, gt_only = plan.correction_keys[fc], plan.sample_from_gt[fc]
        args = (call, p, embed, frame, gt, keep)

        def prompted():  # a click (and a masked padding point) or a box, then the corrections
            click, box = P.sample_initial_prompt(key, gt, False), P.sample_initial_prompt(key, gt, True, *jitter)
            points, labels, point_mask = (jnp.where(use_box, b_, c_) for c_, b_ in zip(click, box, strict=True))
            pass0 = lambda mm: lambda: V.first_pass(*args, points, labels, point_mask, mm, n_corr, loss_kwargs)  # noqa: E731
            mm_click, mm_box = V.multimask(cfg, True, 1), V.multimask(cfg, True, 2)
            losses, carry = (
                pass0(mm_click)() if mm_click == mm_box else jax.lax.cond(use_box, pass0(mm_box), pass0(mm_click))
            )
            fix = lambda flags: lambda: V.correct(*args, carry, 2, keys, gt_only, flags, loss_kwargs)  # noqa: E731
            f_click = [V.multimask(cfg, True, 2 + j) for j in range(n_corr)]
            f_box = [V.multimask(cfg, True, 3 + j) for j in range(n_corr)]
            more, carry = fix(f_click)() if f_click == f_box else jax.lax.cond(use_box, fix(f_box), fix(f_click))
            return V.add_losses(losses, more), V.result(carry)

        losses, res = jax.lax.cond(
            plan.use_pt_input, prompted, lambda: V.mask_frame(*args[:2], frame, gt, keep, loss_kwargs)
        )
        return finish(p, frame, gt, losses, res)

    def slot_or_skip(p, xs):
        skip = lambda: (V.zero_losses(), *no_memory(), jnp.float32(0.0))  # noqa: E731
        return jax.lax.cond(xs[0] >= 0, lambda: slot(p, xs), skip)

    slot_fn = checkpoint(slot_or_skip)
    _, (loss_a, mem_a, ptr_a, iou_a) = jax.lax.scan(
        lambda carry, xs: (carry, slot_fn(params, xs)),
        None,
        (plan.init_cond_frames, plan.use_box, plan.init_keys),
    )
    where = jnp.where(plan.init_cond_frames >= 0, plan.init_cond_frames, t_count)
    store = (
        jnp.zeros((t_count, n, h, w, m), jnp.float32).at[where].set(mem_a, mode="drop"),
        jnp.zeros((t_count, n, c), jnp.float32).at[where].set(ptr_a, mode="drop"),
    )

    def track(p, store, t):
        frame, gt = frame_at(t), masks[t]
        bank = V.bank_view(*store, t, cond_slots, plan.init_cond_frames, is_cond, num_recent, num_pointers)
        feats = call(p, condition_on_memory, bank, frame, t, False, t_count)
        keys, gt_only = plan.correction_keys[t], plan.sample_from_gt[t]

        args = (call, p, feats, frame, gt, keep)
        losses, carry = V.first_pass(*args, None, None, None, V.multimask(cfg, False, 0), n_corr, loss_kwargs)
        flags = [V.multimask(cfg, False, 1 + j) for j in range(n_corr)]
        more, carry = jax.lax.cond(
            corrected[t],
            lambda: V.correct(*args, carry, 0, keys, gt_only, flags, loss_kwargs),
            lambda: (V.zero_losses(), carry),
        )
        losses, res = V.add_losses(losses, more), V.result(carry)
        losses, memory, pointer, iou = finish(p, frame, gt, losses, res)
        return (store[0].at[t].set(memory), store[1].at[t].set(pointer)), (losses, iou)

    def body(p, store, t):
        skip = lambda: (store, (V.zero_losses(), jnp.float32(0.0)))  # noqa: E731
        return jax.lax.cond(is_init[t], skip, lambda: track(p, store, t))

    body_fn = checkpoint(body)
    _, (loss_b, iou_b) = jax.lax.scan(lambda st, t: body_fn(params, st, t), store, jnp.arange(t_count))
    losses = {k: loss_a[k].sum() + loss_b[k].sum() for k in V.LOSS_KEYS}
    iou = (iou_a.sum() + iou_b.sum()) / (t_count * jnp.maximum(keep.sum(), 1))
    return losses, iou


def make_video_train_step(
    model: Sam2VideoModel,
    optimizer: optax.GradientTransformation,
    trainable: str = "memory",
    num_frames: int = 8,
    settings: VideoPromptSettings | None = None,
    dtype=None,
    loss_kwargs: dict | None = None,
    remat: bool = True,
    **official,
) -> TrainStep:
    """See the module docstring."""
    s = dataclasses.replace(settings or VideoPromptSettings(), **official)
    loss_kwargs = {**MOSE_LOSS, **(loss_kwargs or {})}
    call = Caller(video_training_model(model, dtype))
    size = call.config.prompt_encoder_config.image_size
    masked = MaskedOptimizer(optimizer, trainable)

    def loss_fn(params, frozen, batch, plan):
        params = jax.tree_util.tree_map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
        if "pixel_values" in batch:
            features = clip_frame_features(call.net, params, jnp.asarray(batch["pixel_values"]))
        else:
            features = tuple(jnp.asarray(x) for x in batch["frame_features"])
        gt = jnp.asarray(batch["masks"]) > 0
        t, b, o = gt.shape[:3]
        if t != num_frames or gt.shape[-2:] != (size, size):
            raise ValueError(f"masks must have shape ({num_frames}, B, O, {size}, {size}), got {gt.shape}")
        valid = batch.get("valid")
        keep = jnp.ones((b * o,), bool) if valid is None else jnp.asarray(valid, bool).reshape(b * o)
        gt = gt.reshape(t, b * o, size, size)
        losses, iou = clip_loss(call, params, features, gt, keep, plan, s, loss_kwargs, remat)
        return losses["core_loss"], {**losses, "loss": losses["core_loss"], "iou": iou}

    @jax.jit
    def step(params, opt_state, batch, key, plan=None):
        if plan is None:
            plan = sample_plan(key, num_frames, s)
        frozen = masked.frozen(params)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, frozen, batch, plan)
        params, opt_state, metrics["grad_norm"] = masked.apply(params, opt_state, grads, frozen)
        return params, opt_state, metrics

    return TrainStep(masked.init, step)
