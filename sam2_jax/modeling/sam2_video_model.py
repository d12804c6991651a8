"""The SAM 2 video model's parameters and building blocks (transformers ``Sam2VideoModel``), channels-last.

``Sam2VideoModel(config, dtype, implementation, precision)`` is ``Sam2Model`` (same image path, same param paths,
same ``__call__`` / ``get_image_embeddings``) plus every video tensor of transformers' layout, under transformers'
attribute names: ``memory_attention``, ``memory_encoder``, ``no_memory_positional_encoding`` (1, 1, C),
``memory_temporal_positional_encoding`` (num_maskmem, 1, 1, M), ``no_object_pointer`` (1, C), ``mask_downsample``
(4x4 stride-4 conv, 1 -> 1 channel), ``object_pointer_proj`` (3-layer ReLU MLP), and, in sam2.1,
``temporal_positional_encoding_projection_layer`` (C -> M) and ``occlusion_spatial_embedding_parameter`` (1, M).
C = fpn_hidden_size (256), M = memory_encoder_output_channels (64), S = image size (1024), h = w = S / 16.

Methods (each runs under the model's matmul ``precision``), the tracker's building blocks:
  ``attend_to_memory(features, position, memory, memory_position, num_object_pointer_tokens, memory_mask)``
      the memory attention (``memory_attention.py``): (B, h, w, C) -> (B, h, w, C)
  ``encode_memory(features, masks)`` the memory encoder on an already mapped mask (``memory_encoder.py``)
  ``encode_new_memory(features, mask_logits, object_score_logits, is_mask_from_pts)``: transformers
      ``_encode_new_memory`` without its bfloat16 storage cast: mask logits (B, S, S[, 1]) -> sigmoid, or > 0 when
      ``is_mask_from_pts`` (bool, or (B,) bool) and ``binarize_mask_from_pts_for_mem_enc``; x scale + bias; the
      memory encoder; plus ``occlusion_spatial_embedding_parameter`` where object_score_logits (B, 1) <= 0.
      Out: (features (B, h, w, M), position encoding (B, h, w, M)).
  ``object_pointer(sam_output_token, object_score_logits)``: (B, ..., C) tokens -> pointers (B, ..., C), blended
      with ``no_object_pointer`` where the object is absent (official ``fixed_no_obj_ptr``).
  ``object_pointer_position_encoding(temporal_offsets, max_object_pointers)``: (N,) frame offsets -> (N, M),
      a 1-D sine encoding of offset / (max - 1) projected to M (zeros when the release has no such encoding).
  ``memory_temporal_encoding(temporal_offsets)``: (F,) int offsets (0 = conditioning frame, k = k frames away)
      -> (F, M) rows of ``memory_temporal_positional_encoding`` (row ``offset - 1``, so 0 takes the last row).
  ``frame_features(pixel_values)``: (1, S, S, 3) -> ``FrameFeatures`` (s0, s1, the 64x64 features without any
      memory, and their position encoding): what every object's step on that frame shares.
  ``sam_heads(features, frame, points, labels, point_mask, mask_inputs, multimask_output)``: official
      ``_forward_sam_heads`` for B objects: features (B, h, w, C) (memory-conditioned, or with the no-memory
      embedding), points (B, N, 2) in the model's frame, labels (B, N), point_mask (B, N) bool or None (False for
      bucket padding), mask_inputs (B, 256, 256) logits or None -> ``SamHeadsOutput``.
  ``mask_as_output(frame, masks)``: official ``_use_mask_as_output`` for (B, S, S) binary masks.
The per-frame tracking logic (memory bank, pointer selection) is in ``sam2_jax.tracking``.

``init_all`` touches every submodule so that ``init`` / ``jax.eval_shape`` give the full tree (``param_shapes``).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..config import Sam2Config
from ..processing.masks import upsample_bilinear
from .implementation import resolve
from .layers import Dense, Dtype, FeedForward
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .prompt_encoder import NOT_A_POINT_LABEL
from .sam2_model import Sam2Model, sparse_token_mask, with_precision

NO_OBJECT_SCORE = -1024.0  # official NO_OBJ_SCORE: the mask logits of an object judged absent
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0  # official _use_mask_as_output: sigmoid(-10) = 4.5e-5

# top-level names of the video-only params: the image model's tree is the video model's tree without them
VIDEO_ONLY_PARAMS = (
    "memory_attention",
    "memory_encoder",
    "no_memory_positional_encoding",
    "memory_temporal_positional_encoding",
    "no_object_pointer",
    "mask_downsample",
    "object_pointer_proj",
    "temporal_positional_encoding_projection_layer",
    "occlusion_spatial_embedding_parameter",
)


@flax.struct.dataclass
class FrameFeatures:
    """One frame's image features, shared by every object's step on it (batch 1, channels-last)."""

    feat_s0: jax.Array  # (1, S/4, S/4, C/8), projected by conv_s0
    feat_s1: jax.Array  # (1, S/8, S/8, C/4), projected by conv_s1
    features: jax.Array  # (1, h, w, C): the 64x64 level, no memory and no no-memory embedding
    position: jax.Array  # (1, h, w, C): its sine position encoding


@flax.struct.dataclass
class SamHeadsOutput:
    """Official ``_forward_sam_heads`` outputs for B objects (float32)."""

    low_res_multimasks: jax.Array  # (B, M, S/4, S/4), NO_OBJECT_SCORE where the object is absent
    iou_scores: jax.Array  # (B, M)
    low_res_masks: jax.Array  # (B, S/4, S/4): the best mask (by predicted IoU when M = 3)
    high_res_masks: jax.Array  # (B, S, S): it, bilinearly upsampled
    object_pointer: jax.Array  # (B, C)
    object_score_logits: jax.Array  # (B, 1)


def sine_encoding_1d(positions: jax.Array, dim: int, temperature: float = 10000.0) -> jax.Array:
    """(N,) -> (N, dim): [sin(p / t_i), cos(p / t_i)], t_i = temperature ** (2 (i // 2) / (dim / 2)), float32."""
    half = dim // 2
    dim_t = np.float32(temperature) ** (2 * (np.arange(half, dtype=np.float32) // 2) / np.float32(half))
    angles = positions.astype(jnp.float32)[..., None] / jnp.asarray(dim_t)
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class Sam2VideoModel(Sam2Model):
    """``Sam2Model`` plus the video model's tensors and building blocks; see the module docstring."""

    def setup(self):
        super().setup()
        c = self.config
        c.check_video()
        v, impl = c.video_config, resolve(self.implementation)
        hidden, mem = c.vision_config.fpn_hidden_size, v.memory_encoder_output_channels
        zeros = nn.initializers.zeros
        self.memory_attention = MemoryAttention(v, self.dtype, impl)
        self.memory_encoder = MemoryEncoder(v, self.dtype)
        self.no_memory_positional_encoding = self.param("no_memory_positional_encoding", zeros, (1, 1, hidden))
        self.memory_temporal_positional_encoding = self.param(
            "memory_temporal_positional_encoding", zeros, (v.num_maskmem, 1, 1, mem)
        )
        self.no_object_pointer = self.param("no_object_pointer", zeros, (1, hidden))
        self.mask_downsample = nn.Conv(1, (4, 4), (4, 4), padding="VALID", dtype=self.dtype)
        self.object_pointer_proj = FeedForward(hidden, hidden, 3, "relu", dtype=self.dtype)
        if v.enable_temporal_pos_encoding_for_object_pointers:
            self.temporal_positional_encoding_projection_layer = Dense(mem, dtype=self.dtype)
        if v.enable_occlusion_spatial_embedding:
            self.occlusion_spatial_embedding_parameter = self.param(
                "occlusion_spatial_embedding_parameter", zeros, (1, mem)
            )

    @with_precision
    def frame_features(self, pixel_values: jax.Array) -> FrameFeatures:
        out = self.get_image_features(pixel_values)
        s0, s1, features = out.fpn_hidden_states
        return FrameFeatures(s0, s1, features, out.fpn_position_encoding[-1].astype(features.dtype))

    @with_precision
    def sam_heads(
        self,
        features: jax.Array,
        frame: FrameFeatures,
        points: jax.Array | None = None,
        labels: jax.Array | None = None,
        point_mask: jax.Array | None = None,
        mask_inputs: jax.Array | None = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        v, size = self.config.video_config, self.config.prompt_encoder_config.image_size
        b = features.shape[0]
        if points is None:  # official: one "not a point" point
            points = jnp.zeros((b, 1, 2), jnp.float32)
            labels = jnp.full((b, 1), NOT_A_POINT_LABEL, jnp.int32)
            point_mask = None
        masks_in = None if mask_inputs is None else mask_inputs[:, None]
        sparse, dense = self.prompt_encoder(points[:, None], labels[:, None], None, masks_in)
        token_mask = sparse_token_mask(None if point_mask is None else point_mask[:, None], sparse, False)
        masks, ious, scores, tokens = self.mask_decoder(
            features,
            self.get_image_wide_positional_embeddings(),
            sparse,
            dense,
            (frame.feat_s0, frame.feat_s1),
            multimask_output=multimask_output,
            token_mask=token_mask,
        )
        masks, ious = masks[:, 0].astype(jnp.float32), ious[:, 0].astype(jnp.float32)
        scores, tokens = scores[:, 0].astype(jnp.float32), tokens[:, 0]
        masks = jnp.where(scores[:, :, None, None] > 0, masks, NO_OBJECT_SCORE)
        if multimask_output:
            best = jnp.argmax(ious, axis=-1)
            low = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)[:, 0]
            token = tokens[:, 0]
            if v.use_multimask_token_for_obj_ptr:
                token = jnp.take_along_axis(tokens[:, 1:], best[:, None, None], axis=1)[:, 0]
        else:
            low, token = masks[:, 0], tokens[:, 0]
        return SamHeadsOutput(
            low_res_multimasks=masks,
            iou_scores=ious,
            low_res_masks=low,
            high_res_masks=upsample_bilinear(low, (size, size)),
            object_pointer=self.object_pointer(token, scores),
            object_score_logits=scores,
        )

    @with_precision
    def mask_as_output(self, frame: FrameFeatures, masks: jax.Array) -> SamHeadsOutput:
        size = self.config.prompt_encoder_config.image_size
        masks = masks.astype(jnp.float32)
        b = masks.shape[0]
        high = masks * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        low = jax.image.resize(high, (b, size // 4, size // 4), "linear", antialias=True)
        prompt = self.mask_downsample(masks[..., None].astype(self.dtype))[..., 0].astype(jnp.float32)
        features = jnp.broadcast_to(frame.features, (b, *frame.features.shape[1:]))
        heads = self.sam_heads(features, frame, mask_inputs=prompt)
        present = jnp.any(masks.reshape(b, -1) > 0, axis=-1, keepdims=True).astype(jnp.float32)
        pointer = present * heads.object_pointer + (1 - present) * self.no_object_pointer.astype(jnp.float32)
        return SamHeadsOutput(
            low_res_multimasks=low[:, None],
            iou_scores=jnp.ones((b, 1), jnp.float32),
            low_res_masks=low,
            high_res_masks=high,
            object_pointer=pointer,
            object_score_logits=MASK_AS_OUTPUT_SCALE * present + MASK_AS_OUTPUT_BIAS,
        )

    @with_precision
    def attend_to_memory(
        self,
        current_vision_features: jax.Array,
        current_vision_position_embeddings: jax.Array,
        memory: jax.Array,
        memory_position_embeddings: jax.Array,
        num_object_pointer_tokens: int = 0,
        memory_mask: jax.Array | None = None,
    ) -> jax.Array:
        return self.memory_attention(
            current_vision_features,
            current_vision_position_embeddings,
            memory,
            memory_position_embeddings,
            num_object_pointer_tokens,
            memory_mask,
        )

    @with_precision
    def encode_memory(self, vision_features: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.memory_encoder(vision_features, masks)

    @with_precision
    def encode_new_memory(
        self,
        vision_features: jax.Array,
        mask_logits: jax.Array,
        object_score_logits: jax.Array,
        is_mask_from_pts: bool | jax.Array = False,
    ) -> tuple[jax.Array, jax.Array]:
        v = self.config.video_config
        if mask_logits.ndim == 3:
            mask_logits = mask_logits[..., None]
        logits = mask_logits.astype(jnp.float32)
        mask = jax.nn.sigmoid(logits)
        if v.binarize_mask_from_pts_for_mem_enc:
            binarize = jnp.asarray(is_mask_from_pts, bool).reshape(-1, 1, 1, 1)
            mask = jnp.where(binarize, (logits > 0).astype(jnp.float32), mask)
        mask = mask * v.sigmoid_scale_for_mem_enc + v.sigmoid_bias_for_mem_enc
        features, pos = self.memory_encoder(vision_features, mask)
        if v.enable_occlusion_spatial_embedding:
            absent = (object_score_logits.reshape(-1, 1, 1, 1) <= 0).astype(features.dtype)
            features = features + absent * self.occlusion_spatial_embedding_parameter.astype(features.dtype)
        return features, pos

    @with_precision
    def object_pointer(self, sam_output_token: jax.Array, object_score_logits: jax.Array) -> jax.Array:
        pointer = self.object_pointer_proj(sam_output_token.astype(self.dtype))
        present = (object_score_logits > 0).astype(pointer.dtype)
        return present * pointer + (1 - present) * self.no_object_pointer[0].astype(pointer.dtype)

    @with_precision
    def object_pointer_position_encoding(self, temporal_offsets: jax.Array, max_object_pointers: int) -> jax.Array:
        v = self.config.video_config
        mem = v.memory_encoder_output_channels
        offsets = jnp.asarray(temporal_offsets)
        if not v.enable_temporal_pos_encoding_for_object_pointers:
            return jnp.zeros((*offsets.shape, mem), self.dtype)
        normalised = offsets.astype(jnp.float32) / jnp.maximum(jnp.asarray(max_object_pointers, jnp.float32) - 1, 1)
        sine = sine_encoding_1d(normalised, self.config.vision_config.fpn_hidden_size)
        return self.temporal_positional_encoding_projection_layer(sine.astype(self.dtype))

    def memory_temporal_encoding(self, temporal_offsets: jax.Array) -> jax.Array:
        table = self.memory_temporal_positional_encoding.reshape(self.config.video_config.num_maskmem, -1)
        return table[jnp.asarray(temporal_offsets) - 1].astype(self.dtype)

    def init_all(self):
        """The image model's ``init_all``, then every video submodule once."""
        out = super().init_all()
        v = self.config.video_config
        size = self.config.prompt_encoder_config.image_size
        embed = out.image_embeddings[-1][:1]
        b, h, w, _ = embed.shape
        mem = v.memory_encoder_output_channels
        memory = jnp.zeros((b, h * w + 4, mem), jnp.float32)
        self.attend_to_memory(embed, jnp.zeros_like(embed), memory, memory, 4)
        self.encode_new_memory(embed, jnp.zeros((b, size, size), jnp.float32), jnp.ones((b, 1), jnp.float32))
        self.object_pointer(jnp.zeros((b, embed.shape[-1]), jnp.float32), jnp.ones((b, 1), jnp.float32))
        self.object_pointer_position_encoding(jnp.arange(2), v.max_object_pointers_in_encoder)
        self.mask_downsample(jnp.zeros((b, size, size, 1), self.dtype))
        return self.memory_temporal_encoding(jnp.arange(v.num_maskmem))


def init_params(config: Sam2Config, rng: jax.Array | None = None, dtype: Dtype = jnp.float32):
    """Randomly initialised params of the full video model (``param_shapes`` for shapes only)."""
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return Sam2VideoModel(config, dtype, "reference").init(rng, method=Sam2VideoModel.init_all)["params"]


def param_shapes(config: Sam2Config):
    """The video model's param tree as ``jax.ShapeDtypeStruct`` leaves, without computing anything."""
    return jax.eval_shape(lambda: init_params(config))


def image_params(params: dict) -> dict:
    """The image model's params (``Sam2Model``) out of a video model's tree: the video-only subtrees dropped."""
    return {k: v for k, v in params.items() if k not in VIDEO_ONLY_PARAMS}


def has_video_params(params) -> bool:
    """Whether a (nested, or flat with tuple keys) param tree holds any video-only tensor."""
    return any((k[0] if isinstance(k, tuple) else k) in VIDEO_ONLY_PARAMS for k in params)
