"""The memory encoder of SAM 2 video: a frame's image embedding fused with its predicted mask into a memory.

transformers ``Sam2VideoMemoryEncoder`` / ``Sam2VideoMaskDownSampler`` / ``Sam2VideoMemoryFuser`` /
``Sam2VideoMemoryFuserCXBlock`` (official ``MemoryEncoder`` / ``MaskDownSampler`` / ``Fuser`` / ``CXBlock``);
attribute names are transformers'.

``MemoryEncoder(config: VideoConfig)``
In:
  vision_features (B, H, W, C): the frame's image embedding (64x64x256 at 1024 px, before memory conditioning)
  masks           (B, 16H, 16W, 1) or (B, 16H, 16W): the mask *already* mapped for the memory, i.e.
                  sigmoid(logits) (or the binarised mask) * sigmoid_scale_for_mem_enc + sigmoid_bias_for_mem_enc,
                  at the image resolution (the official encoder is called with ``skip_mask_sigmoid=True``)
Out: (features (B, H, W, M), position encoding (B, H, W, M)), M = memory_encoder_output_channels (64).

Mask downsampler: ``log_stride(total_stride)`` layers of conv (kernel 3, stride 2, padding 1; channels x4 each),
LayerNorm over channels (eps 1e-6), GELU; then a 1x1 ``final_conv`` to C. Added to the 1x1-projected features
(``feature_projection``), fused by ConvNeXt blocks (7x7 depthwise conv, LayerNorm, Linear x4 width, GELU, Linear,
times the layer scale ``scale``, residual), projected to M by a 1x1 conv (``projection``). The position encoding
is ``vision_encoder.sine_position_encoding`` with M / 2 features per axis.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..config import VideoConfig
from .layers import ACTIVATIONS, Dense, Dtype, LayerNorm
from .vision_encoder import sine_position_encoding

LN_EPS = 1e-6


class MaskDownSamplerLayer(nn.Module):
    """conv -> LayerNorm (channels) -> activation (transformers ``Sam2VideoMaskDownSamplerLayer``)."""

    config: VideoConfig
    out_channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        k, s, p = c.mask_downsampler_kernel_size, c.mask_downsampler_stride, c.mask_downsampler_padding
        x = nn.Conv(self.out_channels, (k, k), (s, s), ((p, p), (p, p)), dtype=self.dtype, name="conv")(x)
        return ACTIVATIONS[c.mask_downsampler_hidden_act](LayerNorm(LN_EPS, self.dtype, name="layer_norm")(x))


class MaskDownSampler(nn.Module):
    """transformers ``Sam2VideoMaskDownSampler``: (B, S, S, 1) -> (B, S / total_stride, S / total_stride, C)."""

    config: VideoConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        channels = 1
        for i in range(c.mask_downsampler_num_layers):
            channels *= c.mask_downsampler_stride**2
            x = MaskDownSamplerLayer(c, channels, self.dtype, name=f"layers_{i}")(x)
        return nn.Conv(c.mask_downsampler_embed_dim, (1, 1), dtype=self.dtype, name="final_conv")(x)


class MemoryFuserCXBlock(nn.Module):
    """ConvNeXt block with layer scale (transformers ``Sam2VideoMemoryFuserCXBlock``)."""

    config: VideoConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.config
        dim, k, p = c.memory_fuser_embed_dim, c.memory_fuser_kernel_size, c.memory_fuser_padding
        scale = self.param(
            "scale", nn.initializers.constant(c.memory_fuser_layer_scale_init_value), (dim,), jnp.float32
        )
        y = nn.Conv(dim, (k, k), padding=((p, p), (p, p)), feature_group_count=dim, dtype=self.dtype,
                    name="depthwise_conv")(x)  # fmt: skip
        y = LayerNorm(LN_EPS, self.dtype, name="layer_norm")(y)
        y = Dense(c.memory_fuser_intermediate_dim, dtype=self.dtype, name="pointwise_conv1")(y)
        y = ACTIVATIONS[c.memory_fuser_hidden_act](y)
        y = Dense(dim, dtype=self.dtype, name="pointwise_conv2")(y)
        return x + scale.astype(self.dtype) * y


class MemoryFuser(nn.Module):
    """transformers ``Sam2VideoMemoryFuser``: ``memory_fuser_num_layers`` CX blocks."""

    config: VideoConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.config.memory_fuser_num_layers):
            x = MemoryFuserCXBlock(self.config, self.dtype, name=f"layers_{i}")(x)
        return x


class MemoryEncoder(nn.Module):
    """transformers ``Sam2VideoMemoryEncoder``; see the module docstring."""

    config: VideoConfig
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, vision_features: jax.Array, masks: jax.Array) -> tuple[jax.Array, jax.Array]:
        c = self.config
        if masks.ndim == 3:
            masks = masks[..., None]
        b, h, w, _ = vision_features.shape
        stride = c.mask_downsampler_total_stride
        if masks.shape != (b, h * stride, w * stride, 1):
            raise ValueError(
                f"masks must be (B, {h * stride}, {w * stride}, 1) for {h}x{w} features, got {masks.shape}"
            )
        masks = MaskDownSampler(c, self.dtype, name="mask_downsampler")(masks.astype(self.dtype))
        hidden = c.memory_encoder_hidden_size
        x = nn.Conv(hidden, (1, 1), dtype=self.dtype, name="feature_projection")(vision_features.astype(self.dtype))
        x = MemoryFuser(c, self.dtype, name="memory_fuser")(x + masks)
        x = nn.Conv(c.memory_encoder_output_channels, (1, 1), dtype=self.dtype, name="projection")(x)
        pos = sine_position_encoding(h, w, c.memory_encoder_output_channels // 2)
        return x, jnp.broadcast_to(jnp.asarray(pos, self.dtype), x.shape)
