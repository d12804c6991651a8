"""Softmax attention, and the mask decoder's multi-head attention with its two evaluation orders.

``attention(q, k, v, scale, mask=None, bias=None, chunk=None)``
  In:  q (..., heads, Tq, d), k and v (..., heads, Tk, d); ``mask`` broadcastable to (..., heads, Tq, Tk), True
       where a key may be attended to; ``bias`` added to the scaled logits (transformers' float attention mask).
  Out: (..., heads, Tq, d). Logits and softmax in float32. ``chunk``: evaluate ``chunk`` queries at a time (the
       "chunked" global attention of ``Implementation``); None is the plain one-piece formulation.

``Sam2Attention`` (transformers ``Sam2Attention``: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` with an optional
down-projection of the internal width)
  In:  query (..., Tq, C), key (..., Tk, C), value (..., Tk, C), key_mask (..., Tk) bool or None, bias
       broadcastable to (..., heads, Tq, Tk) or None.
  Out: (..., Tq, C).
  ``reassociate=False``: project, attend, project back. ``reassociate=True``: between a few tokens and the 4096
  image tokens, where the static shapes say it is cheaper (``folding_is_cheaper``), the image side's projections
  move to the few tokens' side, so the image tokens are never projected. Token -> image: logits =
  (q_h Wk_h^T) x^T (the q.bk term is constant along the softmax axis and dropped), output = (A x) Wv_h + bv_h.
  Image -> token: logits = x (Wq_h k_h^T) + bq_h k_h^T, output = sum_h A_h (v_h Wo_h) + bo. Same result up to
  float32 rounding, about half the FLOPs. ``projected`` passes in projections of the image side computed once for
  many prompts (``image_side``): {"query"} or {"key", "value"}, (..., N, internal).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from . import mixed_precision as mp
from .layers import Dtype
from .mixed_precision import einsum_f32

NEG_INF = float(jnp.finfo(jnp.float32).min)


def attention(q, k, v, scale: float, mask=None, bias=None, chunk: int | None = None) -> jax.Array:
    """Softmax attention over (..., heads, tokens, d); see the module docstring."""
    q = q * jnp.asarray(scale, q.dtype)
    n_q, n_k = q.shape[-2], k.shape[-2]
    key_only = mask is None or mask.shape[-2] == 1  # a mask of keys (empty memory slots) chunks along the queries
    if chunk and key_only and bias is None and n_q >= 2 * chunk and n_k >= 2 * chunk and n_q % chunk == 0:
        chunks = jnp.moveaxis(q.reshape(*q.shape[:-2], n_q // chunk, chunk, q.shape[-1]), -3, 0)
        out = jax.lax.map(lambda qc: _deferred_softmax_attention(qc, k, v, mask), chunks)
        return jnp.moveaxis(out, 0, -3).reshape(*q.shape[:-1], v.shape[-1])
    logits = einsum_f32("...qd,...kd->...qk", q, k)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, NEG_INF)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return einsum_f32("...qk,...kd->...qd", weights, v).astype(v.dtype)


def _deferred_softmax_attention(q, k, v, key_mask=None):
    """One chunk of queries: exp(logits - max) times v, divided by the sum afterwards (one pass fewer)."""
    logits = einsum_f32("...qd,...kd->...qk", q, k)
    if key_mask is not None:
        logits = jnp.where(key_mask, logits, NEG_INF)
    weights = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    denom = jnp.sum(weights, axis=-1, keepdims=True)
    out = einsum_f32("...qk,...kd->...qd", weights.astype(v.dtype), v)
    return (out / denom).astype(v.dtype)


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
        return mp.einsum("...i,io->...o", x.astype(self.dtype), kernel) + bias


class Sam2Attention(nn.Module):
    """Multi-head attention of the two-way transformer; see the module docstring."""

    hidden_size: int
    num_heads: int
    downsample_rate: int = 1
    dtype: Dtype = jnp.float32
    reassociate: bool = False

    def setup(self):
        c, internal = self.hidden_size, self.hidden_size // self.downsample_rate
        self.q_proj = Projection(c, internal, self.dtype)
        self.k_proj = Projection(c, internal, self.dtype)
        self.v_proj = Projection(c, internal, self.dtype)
        self.o_proj = Projection(internal, c, self.dtype)

    def __call__(self, query, key, value, key_mask=None, projected=None, bias=None):
        c, heads = self.hidden_size, self.num_heads
        internal = c // self.downsample_rate
        scale = (internal // heads) ** -0.5
        projected = projected or {}
        if self.reassociate and bias is None:
            n_q, n_k = query.shape[-2], key.shape[-2]
            batch_q, batch_k = math.prod(query.shape[:-2]), math.prod(key.shape[:-2])
            batch = math.prod(np.broadcast_shapes(query.shape[:-2], key.shape[:-2]))
            few_queries = n_k > c and heads * n_q < internal
            if few_queries and not projected and folding_is_cheaper(batch, heads, n_q, batch_k, internal):
                return self._few_queries(query, key, value, key_mask, scale)
            if n_q > c and heads * n_k < internal:
                fold_query = folding_is_cheaper(batch, heads, n_k, batch_q, internal) and "query" not in projected
                return self._few_keys(query, key, value, key_mask, scale, fold_query, projected.get("query"))
        return self._plain(query, key, value, key_mask, scale, projected, bias)

    def _split(self, x):
        return x.reshape(*x.shape[:-1], self.num_heads, -1).swapaxes(-2, -3)  # (..., heads, T, d)

    def _plain(self, query, key, value, key_mask, scale, projected, bias):
        """Project queries, keys and values, attend, project back (transformers' order)."""
        q = projected["query"] if "query" in projected else self.q_proj(query)
        k = projected["key"] if "key" in projected else self.k_proj(key)
        v = projected["value"] if "value" in projected else self.v_proj(value)
        mask = None if key_mask is None else key_mask[..., None, None, :]
        out = attention(self._split(q), self._split(k), self._split(v), scale, mask, bias).swapaxes(-2, -3)
        return self.o_proj(out.reshape(*out.shape[:-2], -1))

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
        q_folded = mp.einsum("...thd,chd->...htc", q, wk.reshape(wk.shape[0], heads, -1))
        # logits laid out (..., n, heads, Tq): the many keys stay the row operand of both products (no transpose)
        logits = einsum_f32("...nc,...htc->...nht", key.astype(self.dtype), q_folded)
        if key_mask is not None:
            logits = jnp.where(key_mask[..., :, None, None], logits, NEG_INF)
        weights = jax.nn.softmax(logits, axis=-3).astype(self.dtype)
        context = einsum_f32("...nht,...nc->...htc", weights, value.astype(self.dtype)).astype(self.dtype)
        out = mp.einsum("...htc,chd->...thd", context, wv.reshape(wv.shape[0], heads, -1))
        return self.o_proj(out.reshape(*out.shape[:-2], -1) + bv)

    def _few_keys(self, query, key, value, key_mask, scale, fold_query, q=None):
        """Many queries attend to few keys: the output projection (and, if cheaper, the queries') move there."""
        heads = self.num_heads
        k = self.k_proj(key) * jnp.asarray(scale, self.dtype)
        k = k.reshape(*k.shape[:-1], heads, -1)  # (..., Tk, heads, d)
        if fold_query:
            wq, bq = self.q_proj.weights()
            k_folded = mp.einsum("...thd,chd->...cht", k, wq.reshape(wq.shape[0], heads, -1))
            logits = einsum_f32("...nc,...cht->...nht", query.astype(self.dtype), k_folded)
            logits = logits + einsum_f32("hd,...thd->...ht", bq.reshape(heads, -1), k)[..., None, :, :]
        else:
            q = self.q_proj(query) if q is None else q
            logits = einsum_f32("...nhd,...thd->...nht", q.reshape(*q.shape[:-1], heads, -1), k)
        if key_mask is not None:
            logits = jnp.where(key_mask[..., None, None, :], logits, NEG_INF)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        v = self.v_proj(value)
        wo, bo = self.o_proj.weights()
        v_folded = mp.einsum(
            "...thd,hdc->...htc", v.reshape(*v.shape[:-1], heads, -1), wo.reshape(heads, -1, wo.shape[-1])
        )
        return einsum_f32("...nht,...htc->...nc", weights, v_folded).astype(self.dtype) + bo
