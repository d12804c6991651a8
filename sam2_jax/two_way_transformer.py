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

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .config import MaskDecoderConfig
from .layers import Dtype, FeedForward, LayerNorm, attention, einsum_f32

EPS = 1e-5


class Projection(nn.Module):
    """A dense layer (``kernel`` (in, out), ``bias``) whose weights can also be read for reassociated products."""

    in_features: int
    features: int
    dtype: Dtype = jnp.float32

    def setup(self):
        self.kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features))
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,))

    def weights(self) -> tuple[jax.Array, jax.Array]:
        return self.kernel.astype(self.dtype), self.bias.astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = self.weights()
        return jnp.dot(x.astype(self.dtype), kernel) + bias


class Sam2Attention(nn.Module):
    """Multi-head attention with an optional down-projection of the internal width (``q_proj``...``o_proj``).

    Cross-attention between a few tokens and the 4096 image tokens is evaluated in a reassociated order when
    that is cheaper (decided from the static shapes): the projections of the image side are folded into the
    few tokens' side, so the image tokens are never projected. Token -> image: logits = (q_h Wk_h^T) x^T
    (the q.bk term is constant along the softmax axis and dropped), output = (A x) Wv_h + bv_h. Image ->
    token: logits = x (Wq_h k_h^T) + bq_h k_h^T, output = sum_h A_h (v_h Wo_h) + bo. Same result up to
    float32 rounding, about half the FLOPs.
    """

    hidden_size: int
    num_heads: int
    downsample_rate: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, query, key, value, key_mask=None):
        c, heads = self.hidden_size, self.num_heads
        internal = c // self.downsample_rate
        d = internal // heads
        scale = d**-0.5
        proj = {n: Projection(c, internal, self.dtype, name=n) for n in ("q_proj", "k_proj", "v_proj")}
        proj["o_proj"] = Projection(internal, c, self.dtype, name="o_proj")
        n_q, n_k = query.shape[-2], key.shape[-2]
        batch_q, batch_k = math.prod(query.shape[:-2]), math.prod(key.shape[:-2])
        batch = math.prod(np.broadcast_shapes(query.shape[:-2], key.shape[:-2]))
        if n_k > c and heads * n_q < internal and batch * heads * n_q < batch_k * internal:
            return self._few_queries(proj, query, key, value, key_mask, scale)
        if n_q > c and heads * n_k < internal:
            return self._few_keys(proj, query, key, value, key_mask, scale, batch * heads * n_k < batch_q * internal)

        def split(x, name):
            x = proj[name](x)
            return x.reshape(*x.shape[:-1], heads, d).swapaxes(-2, -3)  # (..., heads, T, d)

        q, k, v = split(query, "q_proj"), split(key, "k_proj"), split(value, "v_proj")
        mask = None if key_mask is None else key_mask[..., None, None, :]
        out = attention(q, k, v, scale, mask).swapaxes(-2, -3)  # (..., T, heads, d), broadcast shape
        return proj["o_proj"](out.reshape(*out.shape[:-2], internal))

    def _few_queries(self, proj, query, key, value, key_mask, scale):
        """Few queries attend to many keys: the keys' and values' projections move to the query side."""
        heads = self.num_heads
        wk, _ = proj["k_proj"].weights()
        wv, bv = proj["v_proj"].weights()
        q = proj["q_proj"](query) * jnp.asarray(scale, self.dtype)
        q = q.reshape(*q.shape[:-1], heads, -1)  # (..., Tq, heads, d)
        q_folded = jnp.einsum("...thd,chd->...htc", q, wk.reshape(wk.shape[0], heads, -1))
        # logits laid out (..., n, heads, Tq): the many keys stay the row operand of both products (no transpose)
        logits = einsum_f32("...nc,...htc->...nht", key.astype(self.dtype), q_folded)
        if key_mask is not None:
            logits = jnp.where(key_mask[..., :, None, None], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-3).astype(self.dtype)
        context = einsum_f32("...nht,...nc->...htc", weights, value.astype(self.dtype)).astype(self.dtype)
        out = jnp.einsum("...htc,chd->...thd", context, wv.reshape(wv.shape[0], heads, -1))
        return proj["o_proj"](out.reshape(*out.shape[:-2], -1) + bv)

    def _few_keys(self, proj, query, key, value, key_mask, scale, fold_query):
        """Many queries attend to few keys: the output projection (and, if cheaper, the queries') move there."""
        heads = self.num_heads
        k = proj["k_proj"](key) * jnp.asarray(scale, self.dtype)
        k = k.reshape(*k.shape[:-1], heads, -1)  # (..., Tk, heads, d)
        if fold_query:
            wq, bq = proj["q_proj"].weights()
            k_folded = jnp.einsum("...thd,chd->...cht", k, wq.reshape(wq.shape[0], heads, -1))
            logits = einsum_f32("...nc,...cht->...nht", query.astype(self.dtype), k_folded)
            logits = logits + einsum_f32("hd,...thd->...ht", bq.reshape(heads, -1), k)[..., None, :, :]
        else:
            q = proj["q_proj"](query)
            logits = einsum_f32("...nhd,...thd->...nht", q.reshape(*q.shape[:-1], heads, -1), k)
        if key_mask is not None:
            logits = jnp.where(key_mask[..., None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        v = proj["v_proj"](value)
        wo, bo = proj["o_proj"].weights()
        v_folded = jnp.einsum(
            "...thd,hdc->...htc", v.reshape(*v.shape[:-1], heads, -1), wo.reshape(heads, -1, wo.shape[-1])
        )
        return einsum_f32("...nht,...htc->...nc", weights, v_folded).astype(self.dtype) + bo


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
