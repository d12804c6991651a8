"""The SAM 2 mask decoder: prompts + image embedding -> mask logits, IoU scores and object-score logits.

In:
  image_embeddings   (B, 64, 64, C) the image embedding (``no_memory_embedding`` already added)
  image_pe           (1, 64, 64, C) image-wide positional encoding
  sparse_embeddings  (B, P, T, C) prompt tokens
  dense_embeddings   (B, P', 64, 64, C), P' = 1 or P
  high_resolution_features: feat_s0 (B, 256, 256, C/8) and feat_s1 (B, 128, 128, C/4), already projected
                     by ``conv_s0`` / ``conv_s1`` (done once per image, see ``project_high_resolution``)
  token_mask         (B, P, T) bool or None: False for bucket-padding prompt tokens (masked out of attention)
  mask_floor         (B, P) float32 or None: when given, masks (and mask tokens) are made only where a returned
                     IoU score of the prompt exceeds its floor, decided per ``prompt_chunk`` of prompts (without
                     chunks, for all at once); elsewhere they are zeros. Not for a single stability-checked mask,
                     nor with PerSAM inputs.
  attention_similarity, target_embedding: PerSAM's inputs, see ``two_way_transformer``
  implementation     (module field) an ``Implementation``: reassociated cross-attention, subpixel upscaling,
                     prompts in a ``scan`` of ``prompt_chunk``, layer 0's image side computed once. The answer
                     does not depend on it (up to float32 rounding).
Out:
  masks (B, P, M, 256, 256) logits, iou_scores (B, P, M), object_score_logits (B, P, 1), with M = 3 when
  ``multimask_output`` and M = 1 otherwise, and mask_tokens (B, P, 4, C): the four mask tokens after the
  transformer (official ``mask_tokens_out``; the video model's object pointers are made from them). A single
  mask is the stability-checked one: if mask 0's stability (area above +delta / area above -delta) is below
  the threshold, the best of the three multimask outputs by predicted IoU replaces it.

Masks only where they can be kept (``mask_floor``; the automatic mask generator, ``frontends.image.mask_survivors``):
the scores do not need the mask upscaling (about a quarter of a prompt's FLOPs), nor the final token-to-image
attention of the mask tokens (the attention is per token). So with a floor the transformer's final attention
serves the two score tokens of every prompt, and the mask tokens' final attention, the hypernetworks and the
upscaling are a ``cond`` branch that runs only for a chunk of prompts with a score above its floor (per
``prompt_chunk``: one prompt on CPU; without chunks, all prompts at once). On CPU, with no mask wanted, a prompt
costs about half of ``__call__``'s. The same numbers as without a floor, up to float32 rounding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import MaskDecoderConfig
from ..processing.masks import stability_score
from . import mixed_precision as mp
from .attention import einsum_f32, folding_is_cheaper
from .implementation import Implementation
from .layers import Dtype, FeedForward, LayerNorm, gelu
from .two_way_transformer import TwoWayTransformer


class ConvTranspose2x2(nn.Module):
    """Transposed convolution with kernel 2 and stride 2 (no overlap), kernel stored (2, 2, in, out).

    ``__call__`` maps (..., H, W, in) to the (..., 2H, 2W, out) image. ``subpixel`` gives the same numbers as
    (..., 2, 2, out) per input pixel (indexed by the output pixel's row and column offset), so that two
    upscalings in a row can be chained without interleaving the pixels in between.
    """

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def subpixel(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (2, 2, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return mp.einsum("...c,uvco->...uvo", x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        *lead, h, w, _ = x.shape
        n = len(lead)
        y = self.subpixel(x)  # (..., H, W, u, v, out) -> (..., H, u, W, v, out)
        y = y.transpose(*range(n), n, n + 2, n + 1, n + 3, n + 4)
        return y.reshape(*lead, 2 * h, 2 * w, self.features)


def to_subpixels(x: jax.Array, levels: int) -> jax.Array:
    """(B, h * 2**levels, w * 2**levels, C) -> (B, h * w, 2, 2, ..., C): the layout of ``levels`` chained
    ``ConvTranspose2x2.subpixel`` outputs, offsets ordered (u1, v1, u2, v2, ...) from the coarsest."""
    b, hh, ww, c = x.shape
    f = 2**levels
    x = x.reshape(b, hh // f, *([2] * levels), ww // f, *([2] * levels), c)
    rows, cols = list(range(2, 2 + levels)), list(range(3 + levels, 3 + 2 * levels))
    order = [0, 1, 2 + levels] + [a for pair in zip(rows, cols, strict=True) for a in pair] + [3 + 2 * levels]
    return x.transpose(order).reshape(b, (hh // f) * (ww // f), *([2] * (2 * levels)), c)


def from_subpixels(x: jax.Array, h: int, w: int) -> jax.Array:
    """(..., h * w, 2, 2, 2, 2, M) mask logits in the two-level subpixel layout -> (..., M, 4h, 4w)."""
    lead, m = x.shape[:-6], x.shape[-1]
    x = x.reshape(*lead, h, w, 2, 2, 2, 2, m)  # (h, w, u1, v1, u2, v2, M)
    n = len(lead)
    x = x.transpose(*range(n), n + 6, n, n + 2, n + 4, n + 1, n + 3, n + 5)
    return x.reshape(*lead, m, 4 * h, 4 * w)


class MaskDecoder(nn.Module):
    """transformers ``Sam2MaskDecoder``; see the module docstring."""

    config: MaskDecoderConfig
    dtype: Dtype = jnp.float32
    implementation: Implementation = Implementation()

    def setup(self):
        c = self.config
        n_tokens = c.num_multimask_outputs + 1
        self.iou_token = nn.Embed(1, c.hidden_size)
        self.mask_tokens = nn.Embed(n_tokens, c.hidden_size)
        self.obj_score_token = nn.Embed(1, c.hidden_size)
        reassociate = self.implementation.cross_attention == "reassociated"
        self.transformer = TwoWayTransformer(c, self.dtype, reassociate)
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
        attention_similarity: jax.Array | None = None,
        target_embedding: jax.Array | None = None,
        mask_floor: jax.Array | None = None,
    ):
        if mask_floor is not None and not multimask_output and self.config.dynamic_multimask_via_stability:
            raise ValueError("mask_floor cannot pick a single mask by stability: use multimask_output=True")
        if mask_floor is not None and (attention_similarity is not None or target_embedding is not None):
            raise ValueError("mask_floor does not take PerSAM inputs (attention_similarity, target_embedding)")
        c, impl = self.config, self.implementation
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
        feat_s0, feat_s1 = high_resolution_features
        if impl.upscaling == "subpixel":  # permuted to the subpixel layout once per call, see ``_upscale``
            feat_s0, feat_s1 = to_subpixels(feat_s0, 2), to_subpixels(feat_s1, 1)
        shared = (pe, feat_s0[:, None], feat_s1[:, None])
        # layer 0's projections of a shared image side, once for all prompts, when they serve enough prompts that
        # computing them beats the reassociated per-prompt order (``Sam2Attention``'s own test)
        shared_src = src.shape[1] == 1
        internal = c.hidden_size // c.attention_downsample_rate
        hoist = (
            impl.hoist_image_side
            and shared_src
            and attention_similarity is None
            and not folding_is_cheaper(p, c.num_attention_heads, tokens.shape[2], 1, internal)
        )
        initializing = self.is_initializing()
        image_side = self.transformer.image_side(src, pe) if hoist and not initializing else None
        own_src = None if shared_src else src
        per_prompt = (tokens, token_mask, own_src, attention_similarity, target_embedding, mask_floor)
        chunk = impl.prompt_chunk
        if chunk is None or p <= chunk or initializing:
            return self._decode(per_prompt, src, shared, image_side, (h, w), multimask_output)

        # chunks of prompts in a loop: on CPU their activations (~16 MB per prompt) then stay in cache
        n = -(-p // chunk)

        def split(x):  # (B, P, ...) -> (n, B, chunk, ...), the last chunk padded with copies of the last prompt
            if x is None:
                return None
            x = jnp.broadcast_to(x, (b, p, *x.shape[2:])) if x.ndim >= 2 else x
            x = jnp.pad(x, [(0, 0), (0, n * chunk - p)] + [(0, 0)] * (x.ndim - 2), mode="edge")
            return x.reshape(b, n, chunk, *x.shape[2:]).swapaxes(0, 1)

        def step(module, carry, xs, src, shared, image_side):
            return carry, module._decode(xs, src, shared, image_side, (h, w), multimask_output)

        scan = nn.scan(
            step,
            variable_broadcast="params",
            variable_axes={"intermediates": 0},  # sown per chunk: (chunks, B, chunk, ...)
            split_rngs={"params": False},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
        )
        xs = tuple(split(x) for x in per_prompt)
        _, outs = scan(self, None, xs, src, shared, image_side)
        return tuple(x.swapaxes(0, 1).reshape(b, n * chunk, *x.shape[3:])[:, :p] for x in outs)

    def _decode(self, per_prompt, src, shared, image_side, hw, multimask_output):
        """Two-way transformer, upscaling and heads for (B, P) prompts: (masks, iou_pred, object_score_logits,
        mask_tokens)."""
        c = self.config
        tokens, token_mask, own_src, attention_similarity, target_embedding, floor = per_prompt
        pe, s0, s1 = shared
        dynamic = not multimask_output and c.dynamic_multimask_via_stability
        keep = slice(1, None) if multimask_output else slice(None) if dynamic else slice(0, 1)
        src = src if own_src is None else own_src
        if floor is not None:
            return self._decode_above(tokens, token_mask, src, shared, image_side, hw, keep, floor)
        queries, keys = self.transformer(
            tokens,
            src,
            pe,
            token_mask,
            image_side,
            attention_similarity,
            target_embedding,
        )
        hyper_in = jnp.stack(
            [mlp(queries[:, :, 2 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=2
        )
        iou_pred = self.iou_prediction_head(queries[:, :, 1].astype(jnp.float32))
        object_score_logits = self.pred_obj_score_head(queries[:, :, 0].astype(jnp.float32))
        if self.implementation.upscaling == "subpixel":  # only the masks that can be returned
            hyper_in, iou_pred = hyper_in[:, :, keep], iou_pred[:, :, keep]
            masks = self._upscale(keys, hyper_in, s0, s1, hw)
        else:  # transformers' order: upscale the image, all mask tokens, then select
            masks = self._upscale(keys, hyper_in, s0, s1, hw)
            masks, iou_pred = masks[:, :, keep], iou_pred[:, :, keep]
        if dynamic:
            masks, iou_pred = self._dynamic_multimask_via_stability(masks, iou_pred)
        return masks, iou_pred, object_score_logits, queries[:, :, 2:]

    def _decode_above(self, tokens, token_mask, src, shared, image_side, hw, keep, floor):
        """``_decode`` with ``mask_floor`` (no PerSAM inputs): the transformer's blocks, then its final attention
        (per token, so it may serve a subset of the tokens) for the object-score and IoU tokens of every prompt,
        and for the mask tokens, the hypernetworks and the upscaling only if a returned score passes its floor
        (a ``cond``: one branch runs). Mask tokens and masks are zeros where they are not made."""
        pe, s0, s1 = shared
        queries, keys = self.transformer.blocks(tokens, src, pe, token_mask, image_side)

        def final(module, sel, queries, keys):
            return module.transformer.final_attention(queries[:, :, sel], keys, tokens[:, :, sel], pe)

        heads = final(self, slice(0, 2), queries, keys)
        object_score_logits = self.pred_obj_score_head(heads[:, :, 0].astype(jnp.float32))
        iou_pred = self.iou_prediction_head(heads[:, :, 1].astype(jnp.float32))[:, :, keep]

        def make(module, queries, keys, s0, s1):  # the rest of ``_decode``'s queries[:, :, 2:]
            mask_tokens = final(module, slice(2, None), queries, keys)
            hyper_in = jnp.stack(
                [mlp(mask_tokens[:, :, i]) for i, mlp in enumerate(module.output_hypernetworks_mlps)], axis=2
            )
            return module._upscale(keys, hyper_in[:, :, keep], s0, s1, hw), mask_tokens

        def skip(module, queries, keys, s0, s1):
            b, p = queries.shape[:2]
            shape = (b, p, iou_pred.shape[-1], 4 * hw[0], 4 * hw[1])
            return jnp.zeros(shape, jnp.float32), jnp.zeros_like(queries[:, :, 2:])

        wanted = jnp.any(iou_pred > floor[..., None])
        masks, mask_tokens = nn.cond(wanted, make, skip, self, queries, keys, s0, s1)
        return masks, iou_pred, object_score_logits, mask_tokens

    def _upscale(self, keys, hyper_in, s0, s1, hw):
        """keys (B, P, h * w, C), hyper_in (B, P, M, C/8) and the high-resolution features s0, s1 (B, 1, ...) as
        ``__call__`` lays them out (subpixel order for "subpixel") -> mask logits (B, P, M, 4h, 4w)."""
        if self.implementation.upscaling == "subpixel":
            # (B, P, HW, 2, 2, C/4), then (B, P, HW, 2, 2, 2, 2, C/8)
            x = gelu(self.upscale_layer_norm(self.upscale_conv1.subpixel(keys) + s1.astype(self.dtype)))
            x = gelu(self.upscale_conv2.subpixel(x) + s0.astype(self.dtype))
            return from_subpixels(einsum_f32("bpnuvstc,bpmc->bpnuvstm", x, hyper_in), *hw)
        x = keys.reshape(*keys.shape[:2], *hw, keys.shape[-1])
        x = gelu(self.upscale_layer_norm(self.upscale_conv1(x) + s1.astype(self.dtype)))
        x = gelu(self.upscale_conv2(x) + s0.astype(self.dtype))
        return einsum_f32("bphwc,bpmc->bpmhw", x, hyper_in)

    def _dynamic_multimask_via_stability(self, masks: jax.Array, iou_pred: jax.Array):
        c = self.config
        multi_masks, multi_iou = masks[:, :, 1:], iou_pred[:, :, 1:]
        best = jnp.argmax(multi_iou, axis=-1)  # (B, P)
        best_masks = jnp.take_along_axis(multi_masks, best[:, :, None, None, None], axis=2)
        best_iou = jnp.take_along_axis(multi_iou, best[:, :, None], axis=2)
        single_masks, single_iou = masks[:, :, :1], iou_pred[:, :, :1]
        stable = stability_score(single_masks, 0.0, c.dynamic_multimask_stability_delta, empty_value=1.0)
        stable = stable >= c.dynamic_multimask_stability_thresh  # (B, P, 1)
        return (
            jnp.where(stable[..., None, None], single_masks, best_masks),
            jnp.where(stable, single_iou, best_iou),
        )
