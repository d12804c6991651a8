"""The tracker's fixed-size memory bank, and which of its entries feed memory attention on a frame.

``MemoryBank`` is a pytree of arrays with a leading object axis O (the tracked objects, padded to a bucket):
  cond_frames      (O, Kc) int32      conditioning frames (frames with user input); -1 marks an empty slot
  cond_features    (O, Kc, h, w, M)   their memory features (bfloat16 by default, as both references store them)
  cond_pointers    (O, Kc, C) float32 their object pointers
  recent_frames    (O, R) int32       R = num_maskmem - 1 slots for the memories of tracked (non-conditioning) frames
  recent_features  (O, R, h, w, M)
  pointer_frames   (O, P) int32       P = max_object_pointers_in_encoder - 1 slots for their object pointers
  pointers         (O, P, C) float32
h = w = image_size / 16, M = memory channels (64), C = hidden size (256). O and Kc are padded to
``processing.prompts.TRACKING_BUCKETS`` (``bucket_of``).

The slots hold frame indices, not ages, so the bank means the same as the official ``output_dict`` restricted to
the frames near the current one: ``select`` finds, for frame t tracked forward (s = 1) or in reverse (s = -1),
  - every conditioning frame's features (official ``max_cond_frames_in_attn`` = -1), temporal slot 0;
  - the recent frames at distance d = (t - f) * s in 1..R, temporal slot d (official ``t_pos`` = num_maskmem - d);
  - pointers of conditioning frames not in the future (``only_obj_ptrs_in_the_past_for_eval``), at offset
    (t - f) * s, and of tracked frames at d in 1..min(num_frames, P + 1) - 1, at offset d.
``write`` stores a tracked frame's memory in the slot holding the same frame, else an empty one, else one ahead of
t, else the farthest behind: moving one frame at a time in one direction, the bank always holds the R (and P)
frames just behind, so one compiled step serves every frame and the bank never grows.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..config import Sam2Config
from ..processing.prompts import TRACKING_BUCKETS, bucket


def bucket_of(n: int) -> int:
    """The padded size of n objects or n conditioning frames (``prompts.TRACKING_BUCKETS``)."""
    return bucket(n, 1, TRACKING_BUCKETS)


@flax.struct.dataclass
class MemoryBank:
    cond_frames: jax.Array
    cond_features: jax.Array
    cond_pointers: jax.Array
    recent_frames: jax.Array
    recent_features: jax.Array
    pointer_frames: jax.Array
    pointers: jax.Array

    @property
    def num_objects(self) -> int:
        return self.cond_frames.shape[0]

    @property
    def cond_capacity(self) -> int:
        return self.cond_frames.shape[1]


def bank_sizes(config: Sam2Config) -> tuple[int, int, int, int, int]:
    """(R, P, h, M, C) of a config: recent slots, pointer slots, grid side, memory channels, hidden size."""
    v = config.video_config
    h = config.prompt_encoder_config.image_size // 16
    return (
        v.num_maskmem - 1,
        max(v.max_object_pointers_in_encoder - 1, 0),
        h,
        v.memory_encoder_output_channels,
        config.vision_config.fpn_hidden_size,
    )


def empty_bank(config: Sam2Config, num_objects: int, cond_capacity: int = 1, dtype=jnp.bfloat16) -> MemoryBank:
    """An all-empty bank (NumPy arrays; ``jax.device_put`` it or pass it to a jitted step)."""
    r, p, h, m, c = bank_sizes(config)
    o, k = num_objects, cond_capacity
    return MemoryBank(
        cond_frames=np.full((o, k), -1, np.int32),
        cond_features=np.zeros((o, k, h, h, m), dtype),
        cond_pointers=np.zeros((o, k, c), np.float32),
        recent_frames=np.full((o, r), -1, np.int32),
        recent_features=np.zeros((o, r, h, h, m), dtype),
        pointer_frames=np.full((o, p), -1, np.int32),
        pointers=np.zeros((o, p, c), np.float32),
    )


@flax.struct.dataclass
class Selection:
    """Which bank entries feed memory attention on one frame, with their temporal positions."""

    cond_memory: jax.Array  # (O, Kc) bool
    cond_pointer: jax.Array  # (O, Kc) bool
    cond_offset: jax.Array  # (O, Kc) int32: signed frame offset of the pointer
    recent: jax.Array  # (O, R) bool
    recent_distance: jax.Array  # (O, R) int32 in 1..R where selected
    pointer: jax.Array  # (O, P) bool
    pointer_offset: jax.Array  # (O, P) int32
    max_pointers: jax.Array  # () int32: min(num_frames, P + 1), the pointers' temporal normaliser plus one


def select(bank: MemoryBank, frame_idx, reverse, num_frames, config: Sam2Config) -> Selection:
    """The official ``_prepare_memory_conditioned_features`` choice of memories for a non-initial frame."""
    v = config.video_config
    r, p = bank.recent_frames.shape[1], bank.pointer_frames.shape[1]
    t = jnp.asarray(frame_idx, jnp.int32)
    sign = jnp.where(jnp.asarray(reverse, bool), -1, 1).astype(jnp.int32)
    max_pointers = jnp.minimum(jnp.asarray(num_frames, jnp.int32), p + 1)

    cond = bank.cond_frames >= 0
    cond_offset = (t - bank.cond_frames) * sign
    if v.use_signed_tpos_enc_to_obj_ptrs:
        offset = cond_offset
    else:
        offset = jnp.abs(t - bank.cond_frames)
    past = cond_offset >= 0 if v.only_obj_ptrs_in_the_past_for_eval else jnp.ones_like(cond)

    d = (t - bank.recent_frames) * sign
    recent = (bank.recent_frames >= 0) & (d >= 1) & (d <= r)
    dp = (t - bank.pointer_frames) * sign
    pointer = (bank.pointer_frames >= 0) & (dp >= 1) & (dp <= max_pointers - 1)
    return Selection(
        cond_memory=cond,
        cond_pointer=cond & past,
        cond_offset=jnp.where(cond, offset, 0),
        recent=recent,
        recent_distance=jnp.where(recent, d, 1),
        pointer=pointer,
        pointer_offset=jnp.where(pointer, dp, 0),
        max_pointers=max_pointers,
    )


def _slot_to_replace(frames: jax.Array, frame_idx, sign) -> jax.Array:
    """(O, N) slot frames -> (O,) slot: the same frame, else an empty slot, else one ahead, else the farthest."""
    d = (frame_idx - frames) * sign
    rank = jnp.where(frames == frame_idx, 4e9, jnp.where(frames < 0, 3e9, jnp.where(d < 0, 2e9, d.astype(jnp.float32))))
    return jnp.argmax(rank, axis=-1)


def write(bank: MemoryBank, frame_idx, reverse, features, pointer, active) -> MemoryBank:
    """Store each active object's tracked-frame memory: features (O, h, w, M), pointer (O, C), active (O,) bool."""
    t = jnp.asarray(frame_idx, jnp.int32)
    sign = jnp.where(jnp.asarray(reverse, bool), -1, 1).astype(jnp.int32)
    active = jnp.asarray(active, bool)
    out = {}
    if bank.recent_frames.shape[1]:
        slot = _slot_to_replace(bank.recent_frames, t, sign)
        hit = (jax.nn.one_hot(slot, bank.recent_frames.shape[1], dtype=bool)) & active[:, None]  # (O, R)
        out["recent_frames"] = jnp.where(hit, t, bank.recent_frames)
        out["recent_features"] = jnp.where(
            hit[:, :, None, None, None], features[:, None].astype(bank.recent_features.dtype), bank.recent_features
        )
    if bank.pointer_frames.shape[1]:
        slot = _slot_to_replace(bank.pointer_frames, t, sign)
        hit = (jax.nn.one_hot(slot, bank.pointer_frames.shape[1], dtype=bool)) & active[:, None]
        out["pointer_frames"] = jnp.where(hit, t, bank.pointer_frames)
        out["pointers"] = jnp.where(hit[:, :, None], pointer[:, None].astype(jnp.float32), bank.pointers)
    return bank.replace(**out)
