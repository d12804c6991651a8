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

from ..config import MaskDecoderConfig
from .layers import Dtype, FeedForward, LayerNorm, attention, einsum_f32

EPS = 1e-5


def folding_is_cheaper(batch: int, heads: int, n_few: int, batch_many: int, internal: int) -> bool:
    """Whether folding the many-token side's projection into the few tokens costs less than projecting the
    many tokens: ``batch`` prompts x ``heads`` x ``n_few`` folded rows against ``batch_many`` (1 when shared
    by all prompts) x ``internal`` projected columns, both per many-side token and channel."""
    return batch * heads * n_few < batch_many * internal


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
    float32 rounding, about half the FLOPs. ``projected`` passes in projections computed once for many
    prompts (``TwoWayTransformer.image_side``): {"query"} or {"key", "value"}, (..., N, internal).
    """

    hidden_size: int
    num_heads: int
    downsample_rate: int = 1
    dtype: Dtype = jnp.float32

    def setup(self):
        c, internal = self.hidden_size, self.hidden_size // self.downsample_rate
        self.q_proj = Projection(c, internal, self.dtype)
        self.k_proj = Projection(c, internal, self.dtype)
        self.v_proj = Projection(c, internal, self.dtype)
        self.o_proj = Projection(internal, c, self.dtype)

    def __call__(self, query, key, value, key_mask=None, projected=None):
        c, heads = self.hidden_size, self.num_heads
        internal = c // self.downsample_rate
        d = internal // heads
        scale = d**-0.5
        projected = projected or {}
        n_q, n_k = query.shape[-2], key.shape[-2]
        batch_q, batch_k = math.prod(query.shape[:-2]), math.prod(key.shape[:-2])
        batch = math.prod(np.broadcast_shapes(query.shape[:-2], key.shape[:-2]))
        few_queries = n_k > c and heads * n_q < internal and folding_is_cheaper(batch, heads, n_q, batch_k, internal)
        if few_queries and not projected:
            return self._few_queries(query, key, value, key_mask, scale)
        if n_q > c and heads * n_k < internal:
            fold_query = folding_is_cheaper(batch, heads, n_k, batch_q, internal) and "query" not in projected
            return self._few_keys(query, key, value, key_mask, scale, fold_query, projected.get("query"))

        def split(x):
            return x.reshape(*x.shape[:-1], heads, d).swapaxes(-2, -3)  # (..., heads, T, d)

        q = projected["query"] if "query" in projected else self.q_proj(query)
        k = projected["key"] if "key" in projected else self.k_proj(key)
        v = projected["value"] if "value" in projected else self.v_proj(value)
        mask = None if key_mask is None else key_mask[..., None, None, :]
        out = attention(split(q), split(k), split(v), scale, mask).swapaxes(-2, -3)  # (..., T, heads, d)
        return self.o_proj(out.reshape(*out.shape[:-2], internal))

    def image_side(self, image: jax.Array, image_pe: jax.Array, role: str) -> dict[str, jax.Array]:
        """The projections of the image side that do not depend on the prompts: as keys ("key", "value") or
        as queries ("query")."""
        if role == "keys":
            return {"key": self.k_proj(image + image_pe), "value": self.v_proj(image)}
        return {"query": self.q_proj(image + image_pe)}

    def _few_queries(self, query, key, value, key_mask, scale):
        """Few queries attend to many keys: the keys' and values' projections move to the query side."""
        heads = self.num_heads
        wk, _ = self.k_proj.weights()
        wv, bv = self.v_proj.weights()
        q = self.q_proj(query) * jnp.asarray(scale, self.dtype)
        q = q.reshape(*q.shape[:-1], heads, -1)  # (..., Tq, heads, d)
        q_folded = jnp.einsum("...thd,chd->...htc", q, wk.reshape(wk.shape[0], heads, -1))
        # logits laid out (..., n, heads, Tq): the many keys stay the row operand of both products (no transpose)
        logits = einsum_f32("...nc,...htc->...nht", key.astype(self.dtype), q_folded)
        if key_mask is not None:
            logits = jnp.where(key_mask[..., :, None, None], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-3).astype(self.dtype)
        context = einsum_f32("...nht,...nc->...htc", weights, value.astype(self.dtype)).astype(self.dtype)
        out = jnp.einsum("...htc,chd->...thd", context, wv.reshape(wv.shape[0], heads, -1))
        return self.o_proj(out.reshape(*out.shape[:-2], -1) + bv)

    def _few_keys(self, query, key, value, key_mask, scale, fold_query, q=None):
        """Many queries attend to few keys: the output projection (and, if cheaper, the queries') move there."""
        heads = self.num_heads
        k = self.k_proj(key) * jnp.asarray(scale, self.dtype)
        k = k.reshape(*k.shape[:-1], heads, -1)  # (..., Tk, heads, d)
        if fold_query:
            wq, bq = self.q_proj.weights()
            k_folded = jnp.einsum("...thd,chd->...cht", k, wq.reshape(wq.shape[0], heads, -1))
            logits = einsum_f32("...nc,...cht->...nht", query.astype(self.dtype), k_folded)
            logits = logits + einsum_f32("hd,...thd->...ht", bq.reshape(heads, -1), k)[..., None, :, :]
        else:
            q = self.q_proj(query) if q is None else q
            logits = einsum_f32("...nhd,...thd->...nht", q.reshape(*q.shape[:-1], heads, -1), k)
        if key_mask is not None:
            logits = jnp.where(key_mask[..., None, None, :], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        v = self.v_proj(value)
        wo, bo = self.o_proj.weights()
        v_folded = jnp.einsum(
            "...thd,hdc->...htc", v.reshape(*v.shape[:-1], heads, -1), wo.reshape(heads, -1, wo.shape[-1])
        )
        return einsum_f32("...nht,...htc->...nc", weights, v_folded).astype(self.dtype) + bo


class TwoWayAttentionBlock(nn.Module):
    config: MaskDecoderConfig
    skip_first_layer_pe: bool = False
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config

        def attn(rate):
            return Sam2Attention(c.hidden_size, c.num_attention_heads, rate, self.dtype)

        self.self_attn = attn(1)
        self.cross_attn_token_to_image = attn(c.attention_downsample_rate)
        self.cross_attn_image_to_token = attn(c.attention_downsample_rate)
        self.mlp = FeedForward(c.mlp_dim, c.hidden_size, c.num_hidden_layers, "relu", dtype=self.dtype)
        self.layer_norm1, self.layer_norm2, self.layer_norm3, self.layer_norm4 = (
            LayerNorm(EPS, self.dtype) for _ in range(4)
        )

    def image_side(self, keys, key_pe):
        """Prompt-independent projections of the image side: (token -> image, image -> token) dicts."""
        return (
            self.cross_attn_token_to_image.image_side(keys, key_pe, "keys"),
            self.cross_attn_image_to_token.image_side(keys, key_pe, "queries"),
        )

    def __call__(self, queries, keys, query_pe, key_pe, token_mask=None, image_side=None):
        to_image, to_token = image_side or (None, None)
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, token_mask)
        queries = self.layer_norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = queries + self.cross_attn_token_to_image(q, k, keys, projected=to_image)
        queries = self.layer_norm2(queries)
        queries = self.layer_norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = keys + self.cross_attn_image_to_token(k, q, queries, token_mask, projected=to_token)
        keys = self.layer_norm4(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """transformers ``Sam2TwoWayTransformer``; see the module docstring."""

    config: MaskDecoderConfig
    dtype: Dtype = jnp.float32

    def setup(self):
        c = self.config
        self.layers = [
            TwoWayAttentionBlock(c, skip_first_layer_pe=(i == 0), dtype=self.dtype) for i in range(c.num_hidden_layers)
        ]
        self.final_attn_token_to_image = Sam2Attention(
            c.hidden_size, c.num_attention_heads, c.attention_downsample_rate, self.dtype
        )
        self.layer_norm_final_attn = LayerNorm(EPS, self.dtype)

    def image_side(self, image_embeddings, image_pe):
        """The first layer's projections of the image side, which do not depend on the prompts: computed once
        per image when every prompt shares the image side (no per-prompt mask) and passed to ``__call__``."""
        return self.layers[0].image_side(image_embeddings, image_pe.astype(self.dtype))

    def __call__(self, point_embeddings, image_embeddings, image_pe, token_mask=None, image_side=None):
        # image_embeddings / image_pe may have a prompt axis of 1, shared by all prompts until layer 0 updates
        # the keys; ``image_side`` then holds layer 0's projections of it, computed once (``image_side()``)
        queries, keys = point_embeddings, image_embeddings
        image_pe = image_pe.astype(self.dtype)
        for i, block in enumerate(self.layers):
            queries, keys = block(
                queries, keys, point_embeddings, image_pe, token_mask, image_side=image_side if i == 0 else None
            )
            self.sow("intermediates", f"layer_{i}", (queries, keys))
        q, k = queries + point_embeddings, keys + image_pe
        queries = self.layer_norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
