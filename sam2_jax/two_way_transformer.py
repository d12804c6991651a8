"""The two-way transformer of the SAM mask decoder (Kirillov et al. 2023).

In:
  point_embeddings (B, P, T, C): output tokens followed by the sparse prompt tokens (also their "query PE")
  image_embeddings (B, P or 1, HW, C): flattened 64x64 image embedding (plus dense prompt)
  image_pe         broadcastable to image_embeddings: the image-wide positional encoding
  token_mask       (B, P, T) bool or None: False marks tokens that must not be attended to (bucket padding)
Out:
  queries (B, P, T, C) and keys (B, P, HW, C) after ``num_hidden_layers`` blocks of: token self-attention,
  token-to-image cross-attention, MLP, image-to-token cross-attention; then a final token-to-image attention
  and LayerNorm. LayerNorm eps is 1e-5 here (plain ``nn.LayerNorm`` in the reference).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from .config import MaskDecoderConfig
from .layers import Dtype, FeedForward, LayerNorm, attention

EPS = 1e-5


class Sam2Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width (``q_proj``...``o_proj``)."""

    hidden_size: int
    num_heads: int
    downsample_rate: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query, key, value, key_mask=None):
        internal = self.hidden_size // self.downsample_rate
        head_dim = internal // self.num_heads

        def heads(x, name):
            x = nn.Dense(internal, dtype=self.dtype, name=name)(x)
            return x.reshape(*x.shape[:-1], self.num_heads, head_dim).swapaxes(-2, -3)  # (..., heads, T, d)

        q, k, v = heads(query, "q_proj"), heads(key, "k_proj"), heads(value, "v_proj")
        mask = None if key_mask is None else key_mask[..., None, None, :]
        out = attention(q, k, v, head_dim**-0.5, mask).swapaxes(-2, -3)  # (..., T, heads, d), broadcast shape
        out = out.reshape(*out.shape[:-2], internal)
        return nn.Dense(self.hidden_size, dtype=self.dtype, name="o_proj")(out)


class TwoWayAttentionBlock(nn.Module):
    config: MaskDecoderConfig
    skip_first_layer_pe: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, queries, keys, query_pe, key_pe, token_mask=None):
        c = self.config

        def attn(name, rate):
            return Sam2Attention(c.hidden_size, c.num_attention_heads, rate, self.dtype, name=name)

        if self.skip_first_layer_pe:
            queries = attn("self_attn", 1)(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + attn("self_attn", 1)(q, q, queries, token_mask)
        queries = LayerNorm(EPS, self.dtype, name="layer_norm1")(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = queries + attn("cross_attn_token_to_image", c.attention_downsample_rate)(q, k, keys)
        queries = LayerNorm(EPS, self.dtype, name="layer_norm2")(queries)

        mlp = FeedForward(c.mlp_dim, c.hidden_size, c.num_hidden_layers, "relu", dtype=self.dtype, name="mlp")
        queries = LayerNorm(EPS, self.dtype, name="layer_norm3")(queries + mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = keys + attn("cross_attn_image_to_token", c.attention_downsample_rate)(k, q, queries, token_mask)
        keys = LayerNorm(EPS, self.dtype, name="layer_norm4")(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """transformers ``Sam2TwoWayTransformer``; see the module docstring."""

    config: MaskDecoderConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, point_embeddings, image_embeddings, image_pe, token_mask=None):
        c = self.config
        # image_embeddings / image_pe may have a prompt axis of 1: the first layer's image-side projections are
        # then computed once per image and broadcast over the prompts (keys become per-prompt after layer 0).
        queries, keys = point_embeddings, image_embeddings
        image_pe = image_pe.astype(self.dtype)
        for i in range(c.num_hidden_layers):
            block = TwoWayAttentionBlock(c, skip_first_layer_pe=(i == 0), dtype=self.dtype, name=f"layers_{i}")
            queries, keys = block(queries, keys, point_embeddings, image_pe, token_mask)
            self.sow("intermediates", f"layer_{i}", (queries, keys))
        q, k = queries + point_embeddings, keys + image_pe
        final = Sam2Attention(
            c.hidden_size,
            c.num_attention_heads,
            c.attention_downsample_rate,
            self.dtype,
            name="final_attn_token_to_image",
        )
        queries = LayerNorm(EPS, self.dtype, name="layer_norm_final_attn")(queries + final(q, k, keys))
        return queries, keys
