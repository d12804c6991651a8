"""A jitted optax train step for SAM 2's image model (the official ``SAM2Train`` on one frame).

  make_optimizer(lr, steps=None, warmup=0, weight_decay=0.1, clip=None, b1=0.9, b2=0.999, eps=1e-8,
        end_lr=0.0, encoder_lr_scale=1.0, layer_decay=1.0) -> optax transformation: gradient clipping by global
        norm (``clip``), AdamW with weight decay on matrices only (kernels, embeddings; not biases or norm scales),
        the learning rate constant (``steps=None``) or linear warm-up over ``warmup`` steps then cosine decay to
        ``end_lr`` at ``steps``; with ``encoder_lr_scale`` / ``layer_decay`` != 1 each param's rate multiplied
        by its ``lr_scales`` factor (the image encoder lower, layer-wise decay over the Hiera trunk: the official
        whole-model recipe is 0.6 and 0.9; only matters when the encoder trains, ``trainable="all"``)
  trainable_labels(params, trainable) -> the param tree labelled "train" / "freeze":
        "decoder" the mask decoder (without ``conv_s0`` / ``conv_s1``, which belong to the image path),
        "prompt+decoder" also the prompt encoder, "memory" the video model's memory path (every
        ``sam2_video_model.VIDEO_ONLY_PARAMS`` subtree: memory attention, memory encoder, temporal encodings,
        object-pointer projections, no-object pointer, occlusion embedding, mask downsampler; plus
        ``no_memory_embedding``), "decoder+memory" both, "all" everything; the random Fourier matrices
        (``positional_embedding``, buffers in torch) always stay frozen
  make_train_step(model, optimizer, trainable="decoder", num_correction_steps=0, ...) -> ``TrainStep``:
        init(params) -> opt_state; step(params, opt_state, batch, key) -> (params, opt_state, metrics),
        jitted. The frozen params get no update (``optax.multi_transform`` with ``set_to_zero``); the trained
        ones get ``optimizer``'s (per-param rates, ``encoder_lr_scale`` / ``layer_decay``, are its options).

A batch (B images, P objects each, H x W targets; the loss is computed at the targets' resolution, the
low-resolution logits upsampled bilinearly as the official ``high_res`` masks):
  image_embeddings  the tuple of ``Sam2Model.get_image_embeddings`` (the encoder frozen, computed once), or
  pixel_values      (B, S, S, 3) (only useful with ``trainable="all"``)
  masks             (B, P, H, W) ground truth (bool or 0/1), valid (B, P) bool optional (False: padding)
  input_points (B, P, N, 2), input_labels (B, P, N), prompt_mask (B, P, N) optional: the first prompt in the
                    model frame; without them a click (or with ``use_box`` a jittered box) is sampled per object
  correction_points (B, P, num_correction_steps, 2), correction_labels (B, P, num_correction_steps) optional:
                    the correction clicks; without them each is sampled from the previous prediction's errors
Per correction step the new click is appended and the previous step's low-resolution logits (the best mask by
predicted IoU) are fed back as the mask prompt, gradients flowing through them as in the official trainer. A
step decodes several masks while it holds at most ``multimask_max_points`` real points (a click: 3 masks; a box
or corrections: 1). Masks of objects judged absent (object score <= 0) become -1024 (``mask_absent``, SAM 2's
``pred_obj_scores``). Metrics: the losses of ``losses.multistep_loss`` and ``iou``, the mean over valid objects
of the final mask's IoU with the target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..modeling.sam2_model import Sam2Model
from ..modeling.sam2_video_model import VIDEO_ONLY_PARAMS
from . import prompts as P
from .losses import StepOutput, mask_iou, multistep_loss
from .lr_scales import scale_by_lr_scales

NO_OBJ_SCORE = -1024.0
TRAINABLE = ("decoder", "prompt+decoder", "memory", "decoder+memory", "all")
MEMORY_PARAMS = (*VIDEO_ONLY_PARAMS, "no_memory_embedding")  # "memory": the video model's memory path
__all__ = [
    "MEMORY_PARAMS",
    "TRAINABLE",
    "TrainStep",
    "make_optimizer",
    "make_schedule",
    "trainable_labels",
    "make_train_step",
]


class TrainStep(NamedTuple):
    init: Callable[[Any], Any]
    step: Callable[..., tuple[Any, Any, dict]]


def make_schedule(lr: float, steps: int, warmup: int = 0, end_lr: float = 0.0) -> optax.Schedule:
    """The learning rate at each step: linear warm-up from 0 over ``warmup`` steps, cosine decay to ``end_lr``."""
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 0), max(steps, warmup + 1), end_lr)


def make_optimizer(
    lr: float,
    steps: int | None = None,
    warmup: int = 0,
    weight_decay: float = 0.1,
    clip: float | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    end_lr: float = 0.0,
    encoder_lr_scale: float = 1.0,
    layer_decay: float = 1.0,
) -> optax.GradientTransformation:
    """AdamW (decay on >= 2-D params only), optional global-norm clipping, optional warm-up + cosine schedule,
    optional per-param rate multipliers (``lr_scales``; with the defaults the transformation and its state are
    those of plain AdamW)."""
    schedule = lr if steps is None else make_schedule(lr, steps, warmup, end_lr)
    decay_mask = lambda params: jax.tree_util.tree_map(lambda x: jnp.ndim(x) >= 2, params)  # noqa: E731
    parts = [optax.adamw(schedule, b1, b2, eps, weight_decay=weight_decay, mask=decay_mask)]
    if clip is not None:
        parts.insert(0, optax.clip_by_global_norm(clip))
    if encoder_lr_scale != 1.0 or layer_decay != 1.0:
        parts.append(scale_by_lr_scales(encoder_lr_scale, layer_decay))
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


def trainable_labels(params, trainable: str = "decoder"):
    """The param tree with "train" / "freeze" leaves (see the module docstring)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")

    def label(path, _):
        keys = [getattr(k, "key", str(k)) for k in path]
        if keys[-1] == "positional_embedding":
            return "freeze"
        if trainable == "all":
            return "train"
        if keys[0] in MEMORY_PARAMS:
            return "train" if trainable in ("memory", "decoder+memory") else "freeze"
        if trainable == "memory":
            return "freeze"
        if keys[0] == "mask_decoder":
            return "freeze" if keys[1] in ("conv_s0", "conv_s1") else "train"
        return "train" if trainable == "prompt+decoder" and keys[0] == "prompt_encoder" else "freeze"

    return jax.tree_util.tree_map_with_path(label, params)


def _training_model(model: Sam2Model, dtype) -> Sam2Model:
    """The model as the official trainer runs it: a single mask is mask token 0 (no stability fallback)."""
    c = model.config
    config = dataclasses.replace(
        c, mask_decoder_config=dataclasses.replace(c.mask_decoder_config, dynamic_multimask_via_stability=False)
    )
    return Sam2Model(config, model.dtype if dtype is None else dtype, model.implementation, model.precision)


class MaskedOptimizer:
    """``optimizer`` over the ``trainable`` params only (``trainable_labels``; the frozen ones get no update,
    ``optax.set_to_zero``), the shared part of the image and video train steps:
      frozen(params) -> tree of bool (True: frozen); init(params) -> opt_state;
      apply(params, opt_state, grads, frozen) -> (params, opt_state, the trained params' gradient norm)."""

    def __init__(self, optimizer: optax.GradientTransformation, trainable: str):
        self.optimizer, self.trainable = optimizer, trainable
        self._tx = None  # made on first use: the labels need the param tree

    def tx(self, params) -> optax.GradientTransformation:
        if self._tx is None:
            labels = trainable_labels(params, self.trainable)
            self._tx = optax.multi_transform({"train": self.optimizer, "freeze": optax.set_to_zero()}, labels)
        return self._tx

    def frozen(self, params):
        return jax.tree_util.tree_map(lambda lab: lab == "freeze", trainable_labels(params, self.trainable))

    def init(self, params):
        return self.tx(params).init(params)

    def apply(self, params, opt_state, grads, frozen):
        updates, opt_state = self.tx(params).update(grads, opt_state, params)
        norm = optax.tree.norm(jax.tree_util.tree_map(lambda g, f: jnp.zeros_like(g) if f else g, grads, frozen))
        return optax.apply_updates(params, updates), opt_state, norm


def make_train_step(
    model: Sam2Model,
    optimizer: optax.GradientTransformation,
    trainable: str = "decoder",
    num_correction_steps: int = 0,
    use_box: bool = False,
    box_noise: float = 0.1,
    box_noise_bound: float = 20.0,
    sample_from_gt_prob: float = 0.0,
    multimask_max_points: int = 1,
    mask_absent: bool = True,
    dtype=None,
    loss_kwargs: dict | None = None,
) -> TrainStep:
    """See the module docstring; ``dtype`` is the computation dtype (default: the model's; params stay
    float32), ``loss_kwargs`` go to ``losses.multistep_loss`` (weights, supervise_all_iou, iou_use_l1_loss...)."""
    net = _training_model(model, dtype)
    loss_kwargs = dict(loss_kwargs or {})
    size = model.config.prompt_encoder_config.image_size
    masked = MaskedOptimizer(optimizer, trainable)

    def decode(params, emb, pe, points, labels, prompt_mask, mask_in, multimask, out_hw):
        out = net.apply(
            {"params": params},
            image_embeddings=emb,
            input_points=points,
            input_labels=labels,
            prompt_mask=prompt_mask,
            input_masks=mask_in,
            multimask_output=multimask,
            image_positional_embeddings=pe,
        )
        low, ious, obj = out.pred_masks, out.iou_scores, out.object_score_logits
        if mask_absent:
            low = jnp.where(obj[..., None, None] > 0, low, NO_OBJ_SCORE)
        high = low
        if low.shape[-2:] != out_hw:
            high = jax.image.resize(low, (*low.shape[:-2], *out_hw), "linear", antialias=False)
        best = jnp.argmax(ious, axis=-1)[..., None, None, None]  # the official choice for the next step
        low_best = jnp.take_along_axis(low, best, axis=2)[:, :, 0]
        high_best = jnp.take_along_axis(high, best, axis=2)[:, :, 0]
        return StepOutput(high, ious, obj), low_best, high_best

    def loss_fn(params, frozen, batch, key):
        params = jax.tree_util.tree_map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
        if "pixel_values" in batch:
            emb = net.apply({"params": params}, batch["pixel_values"], method=Sam2Model.get_image_embeddings)
        else:
            emb = tuple(batch["image_embeddings"])
        pe = net.apply({"params": params}, method=Sam2Model.get_image_wide_positional_embeddings)
        gt = jnp.asarray(batch["masks"]) > 0
        out_hw = gt.shape[-2:]
        scale = jnp.array([size / out_hw[1], size / out_hw[0]], jnp.float32)
        k_first, k_gt, *k_steps = jax.random.split(key, 2 + num_correction_steps)
        if "input_points" in batch:
            points = jnp.asarray(batch["input_points"], jnp.float32)
            labels = jnp.asarray(batch["input_labels"], jnp.int32)
            prompt_mask = batch.get("prompt_mask")
            n_real = points.shape[2]
        else:
            points, labels, prompt_mask = P.sample_initial_prompt(k_first, gt, use_box, box_noise, box_noise_bound)
            points = points * scale
            n_real = 2 if use_box else 1
        multimask = n_real <= multimask_max_points
        out, low, high = decode(params, emb, pe, points, labels, prompt_mask, None, multimask, out_hw)
        steps = [out]
        from_gt = jax.random.bernoulli(k_gt, sample_from_gt_prob) if sample_from_gt_prob > 0 else False
        for i in range(num_correction_steps):
            if "correction_points" in batch:
                new_points = jnp.asarray(batch["correction_points"], jnp.float32)[:, :, i : i + 1]
                new_labels = jnp.asarray(batch["correction_labels"], jnp.int32)[:, :, i : i + 1]
            else:
                pred = jax.lax.stop_gradient(high) > 0
                if sample_from_gt_prob > 0:  # the official "sample from the ground truth": an empty prediction
                    pred = pred & ~from_gt
                new_points, new_labels = P.sample_error_points(k_steps[i], gt, pred, 1)
                new_points = new_points * scale
            points, labels, prompt_mask = P.append_points(points, labels, prompt_mask, new_points, new_labels)
            if "input_points" in batch and batch.get("prompt_mask") is None:
                prompt_mask = None  # explicit unpadded prompts: every token attends, as the official call
            multimask = n_real + i + 1 <= multimask_max_points
            out, low, high = decode(params, emb, pe, points, labels, prompt_mask, low, multimask, out_hw)
            steps.append(out)
        losses = multistep_loss(steps, gt, batch.get("valid"), **loss_kwargs)
        valid = jnp.ones(gt.shape[:2], bool) if batch.get("valid") is None else jnp.asarray(batch["valid"], bool)
        iou = (mask_iou(high, gt) * valid).sum() / jnp.maximum(valid.sum(), 1)
        return losses["core_loss"], {**losses, "loss": losses["core_loss"], "iou": iou}

    @jax.jit
    def step(params, opt_state, batch, key):
        frozen = masked.frozen(params)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(params, frozen, batch, key)
        params, opt_state, metrics["grad_norm"] = masked.apply(params, opt_state, grads, frozen)
        return params, opt_state, metrics

    return TrainStep(masked.init, step)
