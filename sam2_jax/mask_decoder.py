"""The SAM 2 mask decoder: prompts + image embedding -> mask logits, IoU scores and object-score logits.

In:
  image_embeddings   (B, 64, 64, C) the image embedding (``no_memory_embedding`` already added)
  image_pe           (1, 64, 64, C) image-wide positional encoding
  sparse_embeddings  (B, P, T, C) prompt tokens
  dense_embeddings   (B, P', 64, 64, C), P' = 1 or P
  high_resolution_features: feat_s0 (B, 256, 256, C/8) and feat_s1 (B, 128, 128, C/4), already projected
                     by ``conv_s0`` / ``conv_s1`` (done once per image, see ``project_high_resolution``)
  token_mask         (B, P, T) bool or None: False for bucket-padding prompt tokens (masked out of attention)
Out:
  masks (B, P, M, 256, 256) logits, iou_scores (B, P, M), object_score_logits (B, P, 1), with M = 3 when
  ``multimask_output`` and M = 1 otherwise. A single mask is the stability-checked one: if mask 0's
  stability (area above +delta / area above -delta) is below the threshold, the best of the three
  multimask outputs by predicted IoU replaces it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import MaskDecoderConfig
from .layers import Dtype, FeedForward, LayerNorm, einsum_f32, gelu
from .two_way_transformer import TwoWayTransformer


class ConvTranspose2x2(nn.Module):
    """Transposed convolution with kernel 2 and stride 2 (no overlap), kernel stored (2, 2, in, out)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        b, h, w, _ = x.shape
        y = jnp.einsum("bhwc,uvco->bhuwvo", x, kernel.astype(self.dtype))
        return y.reshape(b, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)


def stability_scores(mask_logits: jax.Array, delta: float) -> jax.Array:
    """IoU between the masks thresholded at +delta and -delta, over the last two axes."""
    area_i = jnp.sum(mask_logits > delta, axis=(-2, -1)).astype(jnp.float32)
    area_u = jnp.sum(mask_logits > -delta, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(area_u > 0, area_i / jnp.maximum(area_u, 1.0), 1.0)


class MaskDecoder(nn.Module):
    """transformers ``Sam2MaskDecoder``; see the module docstring."""

    config: MaskDecoderConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        n_tokens = c.num_multimask_outputs + 1
        self.iou_token = nn.Embed(1, c.hidden_size)
        self.mask_tokens = nn.Embed(n_tokens, c.hidden_size)
        self.obj_score_token = nn.Embed(1, c.hidden_size)
        self.transformer = TwoWayTransformer(c, self.dtype)
        self.upscale_conv1 = ConvTranspose2x2(c.hidden_size // 4, self.dtype)
        self.upscale_layer_norm = LayerNorm(1e-6, self.dtype)
        self.upscale_conv2 = ConvTranspose2x2(c.hidden_size // 8, self.dtype)
        self.output_hypernetworks_mlps = [
            FeedForward(c.hidden_size, c.hidden_size // 8, 3, "relu", dtype=self.dtype) for _ in range(n_tokens)
        ]
        # the score heads are small: always float32, whatever the computation dtype
        self.iou_prediction_head = FeedForward(
            c.iou_head_hidden_dim, n_tokens, c.iou_head_depth, "relu", sigmoid_output=True, dtype=jnp.float32
        )
        self.pred_obj_score_head = FeedForward(c.hidden_size, 1, 3, "relu", dtype=jnp.float32)
        self.conv_s0 = nn.Conv(c.hidden_size // 8, (1, 1), dtype=self.dtype)
        self.conv_s1 = nn.Conv(c.hidden_size // 4, (1, 1), dtype=self.dtype)

    def project_high_resolution(self, feat_s0: jax.Array, feat_s1: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Project the 256x256 and 128x128 FPN levels once per image (C -> C/8 and C/4)."""
        return self.conv_s0(feat_s0), self.conv_s1(feat_s1)

    def __call__(
        self,
        image_embeddings: jax.Array,
        image_pe: jax.Array,
        sparse_embeddings: jax.Array,
        dense_embeddings: jax.Array,
        high_resolution_features: tuple[jax.Array, jax.Array],
        multimask_output: bool = True,
        token_mask: jax.Array | None = None,
    ):
        c = self.config
        b, h, w, ch = image_embeddings.shape
        p = sparse_embeddings.shape[1]
        output_tokens = jnp.concatenate(
            [self.obj_score_token.embedding, self.iou_token.embedding, self.mask_tokens.embedding], axis=0
        ).astype(self.dtype)
        n_out = output_tokens.shape[0]
        tokens = jnp.concatenate([jnp.broadcast_to(output_tokens, (b, p, n_out, ch)), sparse_embeddings], axis=2)
        if token_mask is not None:
            token_mask = jnp.concatenate([jnp.ones((b, p, n_out), bool), token_mask.astype(bool)], axis=2)

        src = image_embeddings[:, None].astype(self.dtype) + dense_embeddings.astype(self.dtype)
        src = src.reshape(b, src.shape[1], h * w, ch)  # prompt axis stays 1 unless masks are per prompt
        pe = image_pe.reshape(1, 1, h * w, ch)
        queries, keys = self.transformer(tokens, src, pe, token_mask)

        iou_token_out = queries[:, :, 1]
        mask_tokens_out = queries[:, :, 2 : 2 + c.num_multimask_outputs + 1]

        feat_s0, feat_s1 = high_resolution_features
        x = keys.reshape(b * p, h, w, ch)
        x = self.upscale_conv1(x).reshape(b, p, 2 * h, 2 * w, -1) + feat_s1[:, None].astype(self.dtype)
        x = gelu(self.upscale_layer_norm(x))
        x = self.upscale_conv2(x.reshape(b * p, 2 * h, 2 * w, -1)).reshape(b, p, 4 * h, 4 * w, -1)
        x = gelu(x + feat_s0[:, None].astype(self.dtype))

        hyper_in = jnp.stack(
            [mlp(mask_tokens_out[:, :, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=2
        )
        masks = einsum_f32("bpmc,bphwc->bpmhw", hyper_in, x)
        iou_pred = self.iou_prediction_head(iou_token_out.astype(jnp.float32))
        object_score_logits = self.pred_obj_score_head(queries[:, :, 0].astype(jnp.float32))

        if multimask_output:
            masks, iou_pred = masks[:, :, 1:], iou_pred[:, :, 1:]
        elif c.dynamic_multimask_via_stability:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :, :1], iou_pred[:, :, :1]
        return masks, iou_pred, object_score_logits

    def _dynamic_multimask_via_stability(self, masks: jax.Array, iou_pred: jax.Array):
        c = self.config
        multi_masks, multi_iou = masks[:, :, 1:], iou_pred[:, :, 1:]
        best = jnp.argmax(multi_iou, axis=-1)  # (B, P)
        best_masks = jnp.take_along_axis(multi_masks, best[:, :, None, None, None], axis=2)
        best_iou = jnp.take_along_axis(multi_iou, best[:, :, None], axis=2)
        single_masks, single_iou = masks[:, :, :1], iou_pred[:, :, :1]
        stable = stability_scores(single_masks, c.dynamic_multimask_stability_delta)
        stable = stable >= c.dynamic_multimask_stability_thresh  # (B, P, 1)
        return (
            jnp.where(stable[..., None, None], single_masks, best_masks),
            jnp.where(stable, single_iou, best_iou),
        )
