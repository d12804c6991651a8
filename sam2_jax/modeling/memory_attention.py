"""The memory attention of SAM 2 video: conditions the current frame's image embedding on the memory bank.

transformers ``Sam2VideoMemoryAttention`` / ``Sam2VideoMemoryAttentionLayer`` / ``Sam2VideoRoPEAttention``
(official ``MemoryAttention`` / ``MemoryAttentionLayer`` / ``RoPEAttention``); attribute names are transformers'.

``MemoryAttention(config: VideoConfig)``
In:
  current_vision_features   (B, H, W, C) the frame's 64x64 image embedding (C = 256), channels-last
  current_vision_position_embeddings  broadcastable to (B, H, W, C): its sine position encoding
  memory                    (B, T, M) memory tokens (M = memory_encoder_output_channels = 64): F memory frames of
                            H * W tokens each (frame-major, row-major inside a frame), then P object-pointer tokens
  memory_position_embeddings  (B, T, M): spatial + temporal encodings of the frames, the pointers' encodings
  num_object_pointer_tokens static int P: the last P memory tokens are excluded from RoPE
  memory_mask               (B, T) bool or None: False marks empty slots of a fixed-size memory bank; they are
                            excluded from the cross-attention. All-True gives exactly the unmasked result, and
                            masking padded slots gives the result of the call without them (up to rounding).
Out: (B, H, W, C) memory-conditioned features (after the final LayerNorm).

Each of the ``memory_attention_num_layers`` layers: pre-LN self-attention with 2-D RoPE on queries and keys,
pre-LN cross-attention to the memory (keys = memory + its position encoding, values = memory; RoPE on the queries
and, repeated once per memory frame, on the F * H * W spatial keys), pre-LN ReLU MLP; residuals around each. The
input gets ``0.1 *`` its position encoding (official ``pos_enc_at_input``); the queries of the cross-attention get
none. LayerNorm eps 1e-5. Dropout is ignored (inference).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import VideoConfig
from .attention import Projection, attention, einsum_f32
from .implementation import Implementation
from .layers import ACTIVATIONS, Dense, Dtype, LayerNorm
from .rope import apply_rope, axial_rope

EPS = 1e-5
INPUT_POSITION_SCALE = 0.1  # official MemoryAttention: output = curr + 0.1 * curr_pos


class RoPEAttention(nn.Module):
    """Attention with 2-D RoPE (transformers ``Sam2VideoRoPEAttention``): ``q_proj``, ``k_proj``, ``v_proj``,
    ``o_proj``; keys and values may be narrower than the queries (the 64-channel memories: ``kv_in_dim``)."""

    hidden_size: int
    num_heads: int
    downsample_rate: int = 1
    dtype: Dtype = jnp.float32
    chunk: int | None = None  # queries per chunk (``Implementation.global_attention``)
    kv_in_dim: int | None = None  # width of keys and values (None: hidden_size)
    reassociate_values: bool = False  # attend over the raw values, project after (``Implementation``)

    def setup(self):
        internal = self.hidden_size // self.downsample_rate
        self.q_proj = Dense(internal, dtype=self.dtype)
        self.k_proj = Dense(internal, dtype=self.dtype)
        self.v_proj = Projection(self.kv_in_dim or self.hidden_size, internal, self.dtype)
        self.o_proj = Dense(self.hidden_size, dtype=self.dtype)

    def _split(self, x):  # (B, T, internal) -> (B, heads, T, d)
        return x.reshape(*x.shape[:-1], self.num_heads, -1).swapaxes(-2, -3)

    def __call__(self, query, key, value, rope, num_k_exclude_rope: int = 0, key_mask=None):
        """query (B, Tq, C), key / value (B, Tk, K), rope = (cos, sin) of the Tq query grid."""
        cos, sin = rope
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(key))
        n_rot = k.shape[-2] - num_k_exclude_rope
        if n_rot % cos.shape[0]:
            raise ValueError(f"{n_rot} memory tokens before the pointers are not whole frames of {cos.shape[0]}")
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin, repeat=n_rot // cos.shape[0], num_exclude=num_k_exclude_rope)
        mask = None if key_mask is None else key_mask[..., None, None, :]
        scale = q.shape[-1] ** -0.5
        if self.reassociate_values and value.shape[-1] < q.shape[-1] * q.shape[-3] and not self.is_initializing():
            # the softmax rows sum to one: A (V Wv + bv) = (A V) Wv + bv, with V the narrow memories
            kernel, bias = self.v_proj.weights()
            heads, d = q.shape[-3], q.shape[-1]
            context = attention(q, k, value.astype(q.dtype)[..., None, :, :], scale, mask=mask, chunk=self.chunk)
            wv = kernel.reshape(kernel.shape[0], heads, d).swapaxes(0, 1)  # (heads, kv, d)
            out = einsum_f32("...hqc,hcd->...hqd", context, wv).astype(q.dtype) + bias.reshape(heads, 1, d)
        else:
            v = self._split(self.v_proj(value))
            out = attention(q, k, v, scale, mask=mask, chunk=self.chunk)
        out = out.swapaxes(-2, -3)
        return self.o_proj(out.reshape(*out.shape[:-2], -1))


class MemoryAttentionLayer(nn.Module):
    """One layer (transformers ``Sam2VideoMemoryAttentionLayer``)."""

    config: VideoConfig
    dtype: Dtype = jnp.float32
    chunk: int | None = None
    reassociate: bool = False

    def setup(self):
        c = self.config
        heads, rate = c.memory_attention_num_attention_heads, c.memory_attention_downsample_rate
        width = c.memory_attention_hidden_size
        self.self_attn = RoPEAttention(width, heads, rate, dtype=self.dtype, chunk=self.chunk)
        self.cross_attn_image = RoPEAttention(
            width, heads, rate, self.dtype, self.chunk, c.memory_encoder_output_channels, self.reassociate
        )
        self.linear1 = Dense(c.memory_attention_feed_forward_hidden_size, dtype=self.dtype)
        self.linear2 = Dense(width, dtype=self.dtype)
        self.layer_norm1, self.layer_norm2, self.layer_norm3 = (LayerNorm(EPS, self.dtype) for _ in range(3))

    def __call__(self, queries, keys, key_pos, rope, num_k_exclude_rope: int = 0, key_mask=None):
        q = self.layer_norm1(queries)
        queries = queries + self.self_attn(q, q, q, rope)
        q = self.layer_norm2(queries)
        queries = queries + self.cross_attn_image(q, keys + key_pos, keys, rope, num_k_exclude_rope, key_mask)
        act = ACTIVATIONS[self.config.memory_attention_feed_forward_hidden_act]
        return queries + self.linear2(act(self.linear1(self.layer_norm3(queries))))


class MemoryAttention(nn.Module):
    """transformers ``Sam2VideoMemoryAttention``; see the module docstring."""

    config: VideoConfig
    dtype: Dtype = jnp.float32
    implementation: Implementation = Implementation()

    def setup(self):
        impl = self.implementation
        chunk = impl.attention_chunk if impl.global_attention == "chunked" else None
        self.layers = [
            MemoryAttentionLayer(self.config, self.dtype, chunk, impl.cross_attention == "reassociated")
            for _ in range(self.config.memory_attention_num_layers)
        ]
        self.layer_norm = LayerNorm(EPS, self.dtype)

    def __call__(
        self,
        current_vision_features: jax.Array,
        current_vision_position_embeddings: jax.Array,
        memory: jax.Array,
        memory_position_embeddings: jax.Array,
        num_object_pointer_tokens: int = 0,
        memory_mask: jax.Array | None = None,
    ) -> jax.Array:
        c = self.config
        b, h, w, ch = current_vision_features.shape
        if memory.ndim != 3 or memory.shape[-1] != c.memory_encoder_output_channels:
            raise ValueError(f"memory must be (B, T, {c.memory_encoder_output_channels}), got {memory.shape}")
        if memory_mask is not None and memory_mask.shape != memory.shape[:2]:
            raise ValueError(f"memory_mask must be (B, T) = {memory.shape[:2]}, got {memory_mask.shape}")
        head_dim = c.memory_attention_hidden_size // (
            c.memory_attention_downsample_rate * c.memory_attention_num_attention_heads
        )
        rope = axial_rope(h, w, head_dim, float(c.memory_attention_rope_theta))
        pos = jnp.asarray(current_vision_position_embeddings, self.dtype)
        output = current_vision_features.astype(self.dtype) + INPUT_POSITION_SCALE * pos
        output = output.reshape(b, h * w, ch)
        memory = memory.astype(self.dtype)
        memory_pos = memory_position_embeddings.astype(self.dtype)
        for layer in self.layers:
            output = layer(output, memory, memory_pos, rope, num_object_pointer_tokens, memory_mask)
        return self.layer_norm(output).reshape(b, h, w, ch)
