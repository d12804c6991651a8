"""Hiera, the hierarchical image backbone of SAM 2 (Ryali et al. 2023, as used by Ravi et al. 2024).

In:  pixel values (B, H, W, 3), normalised, H = W = ``image_size`` (1024).
Out: (stages, hidden_states): the output of every stage, highest resolution first, channels-last:
     (B, H/4, W/4, C0), (B, H/8, W/8, C1), (B, H/16, W/16, C2), (B, H/32, W/32, C3); and transformers'
     ``hidden_states`` of ``output_hidden_states=True``: the embedded patches (plus positions), then the output
     of every block. Under jit the ones nobody returns cost nothing.

A 7x7 stride-4 patch embedding, plus a positional embedding made of a bicubically resized background
embedding and a tiled per-window embedding, feeds a stack of multi-scale blocks. Each block is pre-norm
windowed (or global) attention plus an MLP. The first block of stages 2-4 widens the channels and max-pools
its queries 2x2, so each stage halves the resolution. Padded window tokens are not masked (as in the
reference). Global blocks attend in query chunks when ``global_attention="chunked"`` (see ``implementation``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import HieraConfig
from .attention import attention
from .implementation import Implementation
from .layers import Dense, Dtype, FeedForward, LayerNorm, max_pool, resize_bicubic


def window_partition(x: jax.Array, window: int) -> tuple[jax.Array, tuple[int, int]]:
    """(B, H, W, C) -> (B * nH * nW, window, window, C), zero-padding H and W up to multiples of ``window``."""
    b, h, w, c = x.shape
    ph, pw = (-h) % window, (-w) % window
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    hp, wp = h + ph, w + pw
    x = x.reshape(b, hp // window, window, wp // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(x: jax.Array, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]) -> jax.Array:
    """Inverse of :func:`window_partition`, dropping the padding."""
    hp, wp = padded_hw
    nh, nw = hp // window, wp // window
    b = x.shape[0] // (nh * nw)
    x = x.reshape(b, nh, nw, window, window, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1], :]


class MultiScaleAttention(nn.Module):
    """Attention over (N, h, w, dim) tokens, with optional 2x2 max pooling of the queries."""

    dim_out: int
    num_heads: int
    query_stride: tuple[int, int] | None = None
    dtype: Dtype = jnp.float32
    chunk: int | None = None  # queries per chunk for long sequences; None: in one piece

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, _ = x.shape
        head_dim = self.dim_out // self.num_heads
        qkv = Dense(3 * self.dim_out, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(n, h * w, 3, self.num_heads, head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.query_stride:
            q = max_pool(q.reshape(n, h, w, self.dim_out), self.query_stride)
            h, w = q.shape[1:3]
            q = q.reshape(n, h * w, self.num_heads, head_dim)
        q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # (N, heads, tokens, head_dim)
        out = attention(q, k, v, head_dim**-0.5, chunk=self.chunk).transpose(0, 2, 1, 3).reshape(n, h, w, self.dim_out)
        return Dense(self.dim_out, dtype=self.dtype, name="proj")(out)


class MultiScaleBlock(nn.Module):
    """One Hiera block (transformers ``Sam2MultiScaleBlock``): (B, H, W, dim) -> (B, H', W', dim_out)."""

    dim: int
    dim_out: int
    num_heads: int
    window_size: int  # 0 means global attention
    query_stride: tuple[int, int] | None
    mlp_ratio: float
    epsilon: float
    dtype: Dtype = jnp.float32
    chunk: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shortcut = x
        x = LayerNorm(self.epsilon, self.dtype, name="layer_norm1")(x)
        if self.dim != self.dim_out:
            shortcut = Dense(self.dim_out, dtype=self.dtype, name="proj")(x)
            if self.query_stride:
                shortcut = max_pool(shortcut, self.query_stride)

        window = self.window_size
        h, w = x.shape[1:3]
        if window > 0:
            x, padded_hw = window_partition(x, window)
        x = MultiScaleAttention(self.dim_out, self.num_heads, self.query_stride, self.dtype, self.chunk, name="attn")(x)
        if self.query_stride:
            window = self.window_size // self.query_stride[0]
            h, w = shortcut.shape[1:3]
            padded_hw = (h + (-h) % window, w + (-w) % window)
        if self.window_size > 0:
            x = window_unpartition(x, window, padded_hw, (h, w))

        x = shortcut + x
        y = LayerNorm(self.epsilon, self.dtype, name="layer_norm2")(x)
        mlp = FeedForward(int(self.dim_out * self.mlp_ratio), self.dim_out, 2, "gelu", dtype=self.dtype, name="mlp")
        return x + mlp(y)


class PatchEmbeddings(nn.Module):
    """7x7 stride-4 convolution with explicit symmetric padding ("SAME" would pad asymmetrically)."""

    config: HieraConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c = self.config
        pad = tuple((p, p) for p in c.patch_padding)
        conv = nn.Conv(c.hidden_size, c.patch_kernel_size, c.patch_stride, pad, dtype=self.dtype, name="projection")
        return conv(pixel_values)


class Hiera(nn.Module):
    """The Hiera backbone (transformers ``Sam2HieraDetModel``); see the module docstring."""

    config: HieraConfig
    dtype: Dtype = jnp.float32
    implementation: Implementation = Implementation()

    def block_specs(self) -> list[dict]:
        """Static description of every block: widths, heads, window size and query stride."""
        c = self.config
        specs = []
        for stage, n_blocks in enumerate(c.blocks_per_stage):
            for j in range(n_blocks):
                first = stage > 0 and j == 0
                window = c.window_size_per_stage[stage - 1 if first else stage]
                specs.append(
                    dict(
                        dim=c.embed_dim_per_stage[stage - 1 if first else stage],
                        dim_out=c.embed_dim_per_stage[stage],
                        num_heads=c.num_attention_heads_per_stage[stage],
                        window_size=0 if len(specs) in c.global_attention_blocks else window,
                        query_stride=c.query_stride if (first and stage <= c.num_query_pool_stages) else None,
                    )
                )
        return specs

    def _pos_embed(self, hw: tuple[int, int]) -> jax.Array:
        c = self.config
        window = c.window_size_per_stage[0]
        pos_embed = self.param(
            "pos_embed", nn.initializers.zeros, (1, *c.window_positional_embedding_background_size, c.hidden_size)
        )
        pos_embed_window = self.param("pos_embed_window", nn.initializers.zeros, (1, window, window, c.hidden_size))
        pos = resize_bicubic(pos_embed.astype(jnp.float32), hw)
        pos = pos + jnp.tile(pos_embed_window.astype(jnp.float32), (1, hw[0] // window, hw[1] // window, 1))
        return pos

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        c, impl = self.config, self.implementation
        chunk = impl.attention_chunk if impl.global_attention == "chunked" else None
        x = PatchEmbeddings(c, self.dtype, name="patch_embed")(pixel_values.astype(self.dtype))
        x = (x.astype(jnp.float32) + self._pos_embed(x.shape[1:3])).astype(self.dtype)
        stage_ends = set(int(sum(c.blocks_per_stage[: s + 1])) - 1 for s in range(len(c.blocks_per_stage)))
        outputs, hidden_states = [], [x]
        for i, spec in enumerate(self.block_specs()):
            block = MultiScaleBlock(
                **spec,
                mlp_ratio=c.mlp_ratio,
                epsilon=c.layer_norm_eps,
                dtype=self.dtype,
                chunk=chunk,
                name=f"blocks_{i}",
            )
            x = block(x)
            hidden_states.append(x)
            if i in stage_ends:
                outputs.append(x)
        return tuple(outputs), tuple(hidden_states)
