"""The SAM 2 prompt encoder: points, boxes and masks to sparse and dense embeddings.

In:
  input_points  (B, P, N, 2) float, (x, y) in the 1024-pixel input frame, or None
  input_labels  (B, P, N) int: 1 positive, 0 negative, -1 "not a point", -10 padding (zero embedding,
                the token still takes part in attention, as in transformers), or None
  input_boxes   (B, P, 4) float (x1, y1, x2, y2) in the 1024 frame, or None
  input_masks   (B, P' , 256, 256) mask logits with P' = 1 (one per image) or P (one per object), or None
Out:
  sparse embeddings (B, P, T, 256): the points (plus a "not a point" pad token when there is no box), then
                    the two box corners and the pad token when there is a box
  dense embeddings  (B, P', 64, 64, 256): the embedded mask, or ``no_mask_embed`` broadcast (P' = 1)

Coordinates are shifted to pixel centres (+0.5), normalised by the image size, mapped to [-1, 1], projected
by a 2 x 128 Gaussian matrix (``shared_embedding``), times 2*pi, then [sin, cos] (Tancik et al. 2020).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import PromptEncoderConfig
from .layers import Dtype, LayerNorm, gelu

PAD_LABEL = -10  # transformers' padding label: embedding zeroed, token still attends
NOT_A_POINT_LABEL = -1


class PositionalEmbedding(nn.Module):
    """Random Fourier features of coordinates in [0, 1]^2 (transformers ``Sam2PositionalEmbedding``)."""

    num_features: int  # half the hidden size
    scale: float = 1.0

    def setup(self):
        self.positional_embedding = self.param(
            "positional_embedding", nn.initializers.normal(self.scale), (2, self.num_features), jnp.float32
        )

    def __call__(self, coords: jax.Array) -> jax.Array:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_features), float32."""
        coords = 2.0 * coords.astype(jnp.float32) - 1.0
        gaussian = self.positional_embedding.astype(jnp.float32)
        proj = 2.0 * jnp.pi * jnp.matmul(coords, gaussian, precision=jax.lax.Precision.HIGHEST)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)

    def grid(self, size: int) -> jax.Array:
        """(size, size, 2 * num_features): the encoding of the cell centres of a size x size grid ((x, y) order).

        The angle is separable, a(x) + b(y), so sin and cos are taken on 2 x size rows and combined with
        the addition formulas instead of on size**2 points (the same values to float32 rounding).
        """
        centres = 2.0 * (jnp.arange(size, dtype=jnp.float32) + 0.5) / size - 1.0
        gaussian = self.positional_embedding.astype(jnp.float32)
        a = 2.0 * jnp.pi * centres[None, :, None] * gaussian[0]  # (1, size [x], F)
        b = 2.0 * jnp.pi * centres[:, None, None] * gaussian[1]  # (size [y], 1, F)
        sin_a, cos_a, sin_b, cos_b = jnp.sin(a), jnp.cos(a), jnp.sin(b), jnp.cos(b)
        sin = sin_a * cos_b + cos_a * sin_b
        cos = cos_a * cos_b - sin_a * sin_b
        return jnp.concatenate([sin, cos], axis=-1)


class MaskEmbedding(nn.Module):
    """(N, 256, 256, 1) mask logits -> (N, 64, 64, hidden): two 2x2 stride-2 convs with LayerNorm2d + GELU, then 1x1."""

    config: PromptEncoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, masks: jax.Array) -> jax.Array:
        c = self.config
        x = masks.astype(self.dtype)
        x = nn.Conv(c.mask_input_channels // 4, (2, 2), (2, 2), "VALID", dtype=self.dtype, name="conv1")(x)
        x = gelu(LayerNorm(c.layer_norm_eps, self.dtype, name="layer_norm1")(x))
        x = nn.Conv(c.mask_input_channels, (2, 2), (2, 2), "VALID", dtype=self.dtype, name="conv2")(x)
        x = gelu(LayerNorm(c.layer_norm_eps, self.dtype, name="layer_norm2")(x))
        return nn.Conv(c.hidden_size, (1, 1), dtype=self.dtype, name="conv3")(x)


class PromptEncoder(nn.Module):
    """transformers ``Sam2PromptEncoder``; see the module docstring."""

    config: PromptEncoderConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.shared_embedding = PositionalEmbedding(c.hidden_size // 2, c.scale)
        self.mask_embed = MaskEmbedding(c, self.dtype)
        self.no_mask_embed = nn.Embed(1, c.hidden_size)
        self.point_embed = nn.Embed(c.num_point_embeddings, c.hidden_size)
        self.not_a_point_embed = nn.Embed(1, c.hidden_size)

    def _encode_coords(self, coords: jax.Array) -> jax.Array:
        return self.shared_embedding((coords.astype(jnp.float32) + 0.5) / self.config.image_size)

    def embed_points(self, points: jax.Array, labels: jax.Array, pad: bool) -> jax.Array:
        """(B, P, N, 2), (B, P, N) -> (B, P, N [+1], hidden)."""
        if pad:
            points = jnp.pad(points, ((0, 0), (0, 0), (0, 1), (0, 0)))
            labels = jnp.pad(labels, ((0, 0), (0, 0), (0, 1)), constant_values=NOT_A_POINT_LABEL)
        labels = labels[..., None]
        emb = self._encode_coords(points)
        emb = jnp.where(labels == NOT_A_POINT_LABEL, self.not_a_point_embed.embedding[0], emb)
        emb = jnp.where(labels == PAD_LABEL, 0.0, emb)
        typed = self.point_embed.embedding[jnp.clip(labels[..., 0], 0, self.config.num_point_embeddings - 1)]
        emb = emb + jnp.where(labels >= 0, typed, 0.0)
        return emb

    def embed_boxes(self, boxes: jax.Array) -> jax.Array:
        """(B, P, 4) -> (B, P, 3, hidden): top-left corner, bottom-right corner, "not a point"."""
        corners = self._encode_coords(boxes.reshape(*boxes.shape[:-1], 2, 2))
        corners = corners + self.point_embed.embedding[2:4]
        pad = jnp.broadcast_to(self.not_a_point_embed.embedding[0], (*boxes.shape[:-1], 1, corners.shape[-1]))
        return jnp.concatenate([corners, pad], axis=-2)

    def __call__(self, input_points=None, input_labels=None, input_boxes=None, input_masks=None):
        c = self.config
        sparse = []
        batch = 1
        if input_points is not None:
            if input_labels is None:
                raise ValueError("input_labels are required with input_points")
            batch = input_points.shape[0]
            sparse.append(self.embed_points(input_points, input_labels, pad=input_boxes is None))
        if input_boxes is not None:
            batch = input_boxes.shape[0]
            sparse.append(self.embed_boxes(input_boxes))
        sparse_embeddings = jnp.concatenate(sparse, axis=2).astype(self.dtype) if sparse else None
        if input_masks is not None:
            b, p, h, w = input_masks.shape
            dense = self.mask_embed(input_masks.reshape(b * p, h, w, 1))
            dense = dense.reshape(b, p, *dense.shape[1:])
        else:
            s = c.image_embedding_size
            dense = jnp.broadcast_to(
                self.no_mask_embed.embedding[0].astype(self.dtype), (batch, 1, s, s, c.hidden_size)
            )
        return sparse_embeddings, dense
