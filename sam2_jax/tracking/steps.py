"""The tracker's pure, jit-compiled steps over a ``MemoryBank`` (official ``SAM2Base.track_step``, per frame).

``Tracker(model, memory_dtype=jnp.bfloat16)`` holds a ``Sam2VideoModel`` and these jitted functions; params are
always their first argument (never closed over), shapes are static on purpose:
  ``frame_features(params, pixel_values (1, S, S, 3))`` -> ``FrameFeatures``: once per frame, for all objects.
  ``track(params, bank, frame, frame_idx, reverse, num_frames, active, multimask=...)`` -> (bank, ``TrackOutput``):
      one tracked frame for all O objects of the bank at once: memory attention over the bank, the SAM heads
      (no prompt), the memory encoder on the new mask, and the bank update for ``active`` (O,) objects (the others,
      for which this frame is a conditioning frame, are computed and discarded). One compile for every frame
      of every video with the same object and conditioning buckets.
  ``prompt(params, bank, frame, frame_idx, reverse, num_frames, points, labels, point_mask, mask_inputs,
      initial=..., multimask=...)`` -> ``SamHeadsOutput``: a frame with clicks or a box (official
      ``_run_single_frame_inference`` with ``run_mem_encoder=False``); ``initial`` frames (not yet tracked for the
      object) use the no-memory embedding instead of memory attention. mask_inputs (O, 256, 256) logits or None.
  ``mask_prompt(params, frame, masks (O, S, S))`` -> ``SamHeadsOutput``: a frame given a mask.
  ``encode(params, frame, low_res_masks (O, S/4, S/4), object_score_logits (O, 1), from_points)`` -> memory features
      (O, h, w, M) in ``memory_dtype``: official ``_run_memory_encoder`` on a prompted frame's output.
  ``to_video_resolution(low_res_masks (O, S/4, S/4), (H, W))`` -> (O, H, W) float32, bilinear.
``frame_idx``, ``reverse`` and ``num_frames`` are traced scalars; ``multimask`` and ``initial`` are static.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from ..modeling.sam2_video_model import FrameFeatures, Sam2VideoModel
from ..modeling.vision_encoder import sine_position_encoding
from ..processing.masks import LOW_RES_CLAMP, upsample_bilinear
from .memory_bank import MemoryBank, select, write


@flax.struct.dataclass
class TrackOutput:
    low_res_masks: jax.Array  # (O, S/4, S/4) float32 logits (NO_OBJECT_SCORE where absent)
    object_score_logits: jax.Array  # (O, 1)
    object_pointer: jax.Array  # (O, C)
    memory_features: jax.Array  # (O, h, w, M) in the memory dtype


def condition_on_memory(model: Sam2VideoModel, bank: MemoryBank, frame: FrameFeatures, frame_idx, reverse, num_frames):
    """(O, h, w, C): the frame's features after memory attention over each object's selected bank entries."""
    config = model.config
    sel = select(bank, frame_idx, reverse, num_frames, config)
    o, kc = bank.cond_frames.shape
    _, h, w, m = bank.cond_features.shape[1:]
    c = bank.cond_pointers.shape[-1]

    features = jnp.concatenate([bank.cond_features, bank.recent_features], axis=1).reshape(o, -1, m)
    frame_offsets = jnp.concatenate([jnp.zeros((o, kc), jnp.int32), sel.recent_distance], axis=1)
    temporal = model.memory_temporal_encoding(frame_offsets).astype(jnp.float32)  # (O, Kc + R, M)
    spatial = jnp.asarray(sine_position_encoding(h, w, m // 2)).reshape(1, 1, h * w, m)
    position = (spatial + temporal[:, :, None, :]).reshape(o, -1, m)
    valid = jnp.repeat(jnp.concatenate([sel.cond_memory, sel.recent], axis=1), h * w, axis=1)

    pointers = jnp.concatenate([bank.cond_pointers, bank.pointers], axis=1)  # (O, Kc + P, C)
    offsets = jnp.concatenate([sel.cond_offset, sel.pointer_offset], axis=1)
    pointer_valid = jnp.concatenate([sel.cond_pointer, sel.pointer], axis=1)
    pointer_position = model.object_pointer_position_encoding(offsets, sel.max_pointers).astype(jnp.float32)
    split = c // m if m < c else 1  # official: a C-wide pointer becomes C / M tokens of M channels
    pointers = pointers.reshape(o, -1, split, c // split)[..., :m].reshape(o, -1, m)
    pointer_position = jnp.repeat(pointer_position, split, axis=1)
    pointer_valid = jnp.repeat(pointer_valid, split, axis=1)
    num_pointer_tokens = pointers.shape[1]

    memory = jnp.concatenate([features.astype(jnp.float32), pointers], axis=1)
    memory_position = jnp.concatenate([position, pointer_position], axis=1)
    mask = jnp.concatenate([valid, pointer_valid], axis=1)
    mask = mask.at[:, 0].set(mask[:, 0] | ~mask.any(axis=1))  # padded objects: keep the softmax finite
    current = jnp.broadcast_to(frame.features, (o, *frame.features.shape[1:]))
    return model.attend_to_memory(current, frame.position, memory, memory_position, num_pointer_tokens, mask)


def track_step(model, bank, frame, frame_idx, reverse, num_frames, active, multimask, memory_dtype):
    """The unjitted tracked-frame step (``Tracker.track``), for callers that vmap or shard it over videos."""
    features = condition_on_memory(model, bank, frame, frame_idx, reverse, num_frames)
    heads = model.sam_heads(features, frame, multimask_output=multimask)
    current = jnp.broadcast_to(frame.features, features.shape)
    memory, _ = model.encode_new_memory(current, heads.high_res_masks, heads.object_score_logits, False)
    memory = memory.astype(memory_dtype)
    bank = write(bank, frame_idx, reverse, memory, heads.object_pointer, active)
    out = TrackOutput(heads.low_res_masks, heads.object_score_logits, heads.object_pointer, memory)
    return bank, out


def _prompt(
    model, bank, frame, frame_idx, reverse, num_frames, points, labels, point_mask, mask_inputs, initial, multimask
):
    o = points.shape[0]
    if initial:  # official directly_add_no_mem_embed
        embed = frame.features + model.no_memory_embedding.astype(frame.features.dtype)
        features = jnp.broadcast_to(embed, (o, *embed.shape[1:]))
    else:
        features = condition_on_memory(model, bank, frame, frame_idx, reverse, num_frames)
    if mask_inputs is not None:
        mask_inputs = jnp.clip(mask_inputs, -LOW_RES_CLAMP, LOW_RES_CLAMP)  # a corrected frame's previous logits
    return model.sam_heads(features, frame, points, labels, point_mask, mask_inputs, multimask_output=multimask)


def _encode(model, frame, low_res_masks, object_score_logits, from_points, memory_dtype):
    size = model.config.prompt_encoder_config.image_size
    high = upsample_bilinear(low_res_masks, (size, size))
    o = low_res_masks.shape[0]
    current = jnp.broadcast_to(frame.features, (o, *frame.features.shape[1:]))
    memory, _ = model.encode_new_memory(current, high, object_score_logits, from_points)
    return memory.astype(memory_dtype)


class Tracker:
    """The jitted steps of one ``Sam2VideoModel``; see the module docstring. Stateless: safe to share."""

    def __init__(self, model: Sam2VideoModel, memory_dtype=jnp.bfloat16):
        self.model = model
        self.memory_dtype = jnp.dtype(memory_dtype)

        def bind(fn):
            def call(params, *args, **kwargs):
                return model.apply({"params": params}, *args, method=fn, **kwargs)

            return call

        md = self.memory_dtype
        self.frame_features = jax.jit(bind(Sam2VideoModel.frame_features))
        self.track = jax.jit(bind(functools.partial(track_step, memory_dtype=md)), static_argnames=("multimask",))
        self.prompt = jax.jit(bind(_prompt), static_argnames=("initial", "multimask"))
        self.mask_prompt = jax.jit(bind(Sam2VideoModel.mask_as_output))
        self.encode = jax.jit(bind(functools.partial(_encode, memory_dtype=md)))
        self.to_video_resolution = jax.jit(upsample_bilinear, static_argnums=1)
