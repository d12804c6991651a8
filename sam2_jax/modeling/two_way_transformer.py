"""The two-way transformer of the SAM mask decoder (Kirillov et al. 2023).

In:
  point_embeddings (B, P, T, C): output tokens followed by the sparse prompt tokens (also their "query PE")
  image_embeddings (B, P or 1, HW, C): flattened 64x64 image embedding (plus dense prompt)
  image_pe         broadcastable to image_embeddings: the image-wide positional encoding
  token_mask       (B, P, T) bool or None: False marks tokens that must not be attended to (bucket padding)
  attention_similarity  None or broadcastable to (B, P, heads, T, HW): added to the logits of every layer's
                   token-to-image attention (PerSAM's target-guided attention; transformers' float attention mask)
  target_embedding None or broadcastable to (B, P, T, C): added to the tokens before every layer (PerSAM's
                   target-semantic prompting). As in transformers, whose in-place ``queries += target_embedding``
                   on the first layer also changes the point embeddings, the tokens' positional encoding
                   becomes ``point_embeddings + target_embedding``.
Out:
  queries (B, P, T, C) and keys (B, P, HW, C) after ``num_hidden_layers`` blocks of: token self-attention,
  token-to-image cross-attention, MLP, image-to-token cross-attention; then a final token-to-image attention
  and LayerNorm. LayerNorm eps is 1e-5 here (plain ``nn.LayerNorm`` in the reference). Each block's
  (queries, keys) is sown under ``intermediates`` as ``layer_{i}``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ..config import MaskDecoderConfig
from .attention import Sam2Attention
from .layers import Dtype, FeedForward, LayerNorm

EPS = 1e-5


class TwoWayAttentionBlock(nn.Module):
    config: MaskDecoderConfig
    skip_first_layer_pe: bool = False
    dtype: Dtype = jnp.float32
    reassociate: bool = False

    def setup(self):
        c = self.config

        def attn(rate):
            return Sam2Attention(c.hidden_size, c.num_attention_heads, rate, self.dtype, self.reassociate)

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

    def __call__(self, queries, keys, query_pe, key_pe, token_mask=None, image_side=None, attention_similarity=None):
        to_image, to_token = image_side or (None, None)
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, token_mask)
        queries = self.layer_norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = queries + self.cross_attn_token_to_image(q, k, keys, projected=to_image, bias=attention_similarity)
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
    reassociate: bool = False  # the reassociated cross-attention order (``Implementation.cross_attention``)

    def setup(self):
        c = self.config
        self.layers = [
            TwoWayAttentionBlock(c, skip_first_layer_pe=(i == 0), dtype=self.dtype, reassociate=self.reassociate)
            for i in range(c.num_hidden_layers)
        ]
        self.final_attn_token_to_image = Sam2Attention(
            c.hidden_size, c.num_attention_heads, c.attention_downsample_rate, self.dtype, self.reassociate
        )
        self.layer_norm_final_attn = LayerNorm(EPS, self.dtype)

    def image_side(self, image_embeddings, image_pe):
        """The first layer's projections of the image side, which do not depend on the prompts: computed once
        per image when every prompt shares the image side (no per-prompt mask) and passed to ``__call__``."""
        return self.layers[0].image_side(image_embeddings, image_pe.astype(self.dtype))

    def __call__(
        self,
        point_embeddings,
        image_embeddings,
        image_pe,
        token_mask=None,
        image_side=None,
        attention_similarity=None,
        target_embedding=None,
    ):
        # image_embeddings / image_pe may have a prompt axis of 1, shared by all prompts until layer 0 updates
        # the keys; ``image_side`` then holds layer 0's projections of it, computed once (``image_side()``)
        if target_embedding is not None:  # see the module docstring: the tokens' PE changes too
            point_embeddings = point_embeddings + target_embedding.astype(self.dtype)
        queries, keys = self.blocks(
            point_embeddings, image_embeddings, image_pe, token_mask, image_side, attention_similarity, target_embedding
        )
        return self.final_attention(queries, keys, point_embeddings, image_pe), keys

    def blocks(
        self,
        point_embeddings,
        image_embeddings,
        image_pe,
        token_mask=None,
        image_side=None,
        attention_similarity=None,
        target_embedding=None,
    ):
        """``__call__`` without the final attention: (queries, keys) after the two-way blocks, with
        ``point_embeddings`` already holding ``target_embedding`` when it is given."""
        queries, keys = point_embeddings, image_embeddings
        image_pe = image_pe.astype(self.dtype)
        for i, block in enumerate(self.layers):
            if target_embedding is not None and i > 0:
                queries = queries + target_embedding.astype(self.dtype)
            queries, keys = block(
                queries,
                keys,
                point_embeddings,
                image_pe,
                token_mask,
                image_side=image_side if i == 0 else None,
                attention_similarity=attention_similarity,
            )
            self.sow("intermediates", f"layer_{i}", (queries, keys))
        return queries, keys

    def final_attention(self, queries, keys, point_embeddings, image_pe):
        """The final token-to-image attention and its norm. Each token attends on its own, so ``queries`` and
        ``point_embeddings`` (B, P, T', C) may be any subset of the tokens (the mask decoder's ``mask_floor``)."""
        image_pe = image_pe.astype(self.dtype)
        attn = self.final_attn_token_to_image(queries + point_embeddings, keys + image_pe, keys)
        return self.layer_norm_final_attn(queries + attn)
