"""The SAM 2 image model: vision encoder, prompt encoder and mask decoder (transformers ``Sam2Model``).

``Sam2Model(config, dtype)(...)`` mirrors ``Sam2Model.forward``, channels-last:

In:
  pixel_values      (B, 1024, 1024, 3) normalised pixels, or
  image_embeddings  the tuple from ``get_image_embeddings``: (B, 256, 256, 32), (B, 128, 128, 64), (B, 64, 64, 256)
  input_points      (B, P, N, 2) (x, y) in the 1024 frame;  input_labels (B, P, N) int (default: all 1)
  input_boxes       (B, P, 4) (x1, y1, x2, y2) in the 1024 frame
  input_masks       (B, P', H, W) mask logits, P' = 1 (per image, as transformers) or P (per object);
                    resized to 256x256 with antialiased bilinear when needed
  multimask_output  static bool: 3 masks per prompt, or 1 (stability-checked)
  prompt_mask       (B, P, N) bool or None: False marks bucket-padding points; they are masked out of the
                    decoder's attention so the answer equals the unpadded call (transformers' -10 label
                    still means "zero embedding, attends"); a prompt with all points masked and no box
                    keeps no sparse token (the official predictor's mask-only prompt)
  image_positional_embeddings  (1, 64, 64, C) or None: ``get_image_wide_positional_embeddings()``, which
                    depends on the params only; a predictor computes it once instead of per call
  attention_similarity  broadcastable to (B, P, heads, T, 64 * 64) or None, T = 6 output tokens + sparse prompt
                    tokens: added to the logits of the decoder's token-to-image attention (PerSAM)
  target_embedding  broadcastable to (B, P, T, C) or None: added to the decoder's tokens before each layer (PerSAM)
  output_hidden_states  static bool: also return the Hiera hidden states (needs ``pixel_values``)
Out: ``Sam2ImageSegmentationOutput`` with iou_scores (B, P, M), pred_masks (B, P, M, 256, 256) low-resolution
  logits, object_score_logits (B, P, 1), image_embeddings (the tuple above), vision_hidden_states (None, or as
  transformers' with ``output_hidden_states``: the embedded patches, then every Hiera block, each (B, h, w, C_i)).

Module fields: ``dtype`` (computation dtype; params stay float32), ``implementation`` (the evaluation order of
each fast path: "auto", "reference", "fast" or an ``Implementation``, see ``implementation.py``) and
``precision`` (the matmul precision of every product, "highest" by default: GPUs and TPUs otherwise run float32
matmuls in TF32 / bf16 passes; pass "default" or "high" to trade accuracy for speed there).

Params are a plain pytree: ``model.apply({"params": params}, ...)``; see ``init_params``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..config import Sam2Config
from .implementation import Implementation, resolve
from .layers import Dtype
from .mask_decoder import MaskDecoder
from .prompt_encoder import NOT_A_POINT_LABEL, PositionalEmbedding, PromptEncoder
from .vision_encoder import VisionEncoder, VisionEncoderOutput


@flax.struct.dataclass
class Sam2ImageSegmentationOutput:
    iou_scores: jax.Array  # (B, P, M)
    pred_masks: jax.Array  # (B, P, M, 256, 256) low-resolution mask logits
    object_score_logits: jax.Array  # (B, P, 1)
    image_embeddings: tuple[jax.Array, ...]  # (B, 256, 256, 32), (B, 128, 128, 64), (B, 64, 64, 256)
    vision_hidden_states: tuple[jax.Array, ...] | None = None  # every Hiera block, with output_hidden_states


def with_precision(method):
    """Run a model method under the model's matmul precision (it takes effect while tracing)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if self.precision is None:
            return method(self, *args, **kwargs)
        with jax.default_matmul_precision(self.precision):
            return method(self, *args, **kwargs)

    return wrapper


def _check_rank(name: str, x, rank: int, layout: str):
    if x is not None and np.ndim(x) != rank:
        raise ValueError(f"{name} must have shape {layout}, got shape {tuple(np.shape(x))}")


def sparse_token_mask(prompt_mask: jax.Array | None, sparse: jax.Array, has_boxes: bool) -> jax.Array | None:
    """The decoder's (B, P, T) token mask from the points' (B, P, N) ``prompt_mask`` (None: every token attends).

    Box tokens always take part; without a box, the "not a point" pad token takes part when at least one of the
    prompt's points does, so a prompt with every point masked has no sparse tokens at all (the official
    predictor's mask-only prompt)."""
    if prompt_mask is None:
        return None
    prompt_mask = prompt_mask.astype(bool)
    extra = sparse.shape[2] - prompt_mask.shape[2]
    keep = jnp.ones_like(prompt_mask[..., :1]) if has_boxes else prompt_mask.any(-1, keepdims=True)
    return jnp.concatenate([prompt_mask, jnp.broadcast_to(keep, (*keep.shape[:2], extra))], axis=-1)


class Sam2Model(nn.Module):
    config: Sam2Config
    dtype: Dtype = jnp.float32
    implementation: Implementation | str = "auto"
    precision: str | None = "highest"

    def setup(self):
        c = self.config
        impl = resolve(self.implementation)
        self.shared_image_embedding = PositionalEmbedding(c.prompt_encoder_config.hidden_size // 2)
        self.vision_encoder = VisionEncoder(c.vision_config, self.dtype, impl)
        self.prompt_encoder = PromptEncoder(c.prompt_encoder_config, self.dtype)
        self.mask_decoder = MaskDecoder(c.mask_decoder_config, self.dtype, impl)
        self.no_memory_embedding = self.param(
            "no_memory_embedding", nn.initializers.zeros, (1, 1, c.vision_config.fpn_hidden_size)
        )

    @with_precision
    def get_image_wide_positional_embeddings(self) -> jax.Array:
        """(1, 64, 64, C) positional encoding of the embedding grid at cell centres."""
        return self.shared_image_embedding.grid(self.config.prompt_encoder_config.image_embedding_size)[None]

    @with_precision
    def get_image_features(self, pixel_values: jax.Array) -> VisionEncoderOutput:
        """Vision encoder output with the two high-resolution levels projected by ``conv_s0`` / ``conv_s1``."""
        _check_rank("pixel_values", pixel_values, 4, "(B, H, W, 3)")
        size = self.config.prompt_encoder_config.image_size
        if pixel_values.shape[1:] != (size, size, 3):
            raise ValueError(f"pixel_values must have shape (B, {size}, {size}, 3), got {pixel_values.shape}")
        out = self.vision_encoder(pixel_values)
        fpn = list(out.fpn_hidden_states)
        fpn[0], fpn[1] = self.mask_decoder.project_high_resolution(fpn[0], fpn[1])
        return out.replace(fpn_hidden_states=tuple(fpn))

    def get_image_embeddings(self, pixel_values: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(feat_s0, feat_s1, image_embedding): everything the decoder needs from an image, computed once."""
        return self._embeddings(self.get_image_features(pixel_values))

    def _embeddings(self, features: VisionEncoderOutput) -> tuple[jax.Array, jax.Array, jax.Array]:
        feat_s0, feat_s1, embed = features.fpn_hidden_states
        return feat_s0, feat_s1, embed + self.no_memory_embedding.astype(embed.dtype)

    @with_precision
    def __call__(
        self,
        pixel_values: jax.Array | None = None,
        input_points: jax.Array | None = None,
        input_labels: jax.Array | None = None,
        input_boxes: jax.Array | None = None,
        input_masks: jax.Array | None = None,
        image_embeddings: tuple[jax.Array, ...] | None = None,
        multimask_output: bool = True,
        prompt_mask: jax.Array | None = None,
        image_positional_embeddings: jax.Array | None = None,
        attention_similarity: jax.Array | None = None,
        target_embedding: jax.Array | None = None,
        output_hidden_states: bool = False,
    ) -> Sam2ImageSegmentationOutput:
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("Exactly one of pixel_values or image_embeddings must be provided.")
        _check_rank("input_points", input_points, 4, "(batch, objects, points, 2)")
        _check_rank("input_labels", input_labels, 3, "(batch, objects, points)")
        _check_rank("input_boxes", input_boxes, 3, "(batch, objects, 4)")
        if input_points is not None and input_points.shape[-1] != 2:
            raise ValueError(f"input_points must end in (x, y) pairs, got shape {input_points.shape}")
        if input_boxes is not None and input_boxes.shape[-1] != 4:
            raise ValueError(f"input_boxes must end in (x1, y1, x2, y2), got shape {input_boxes.shape}")
        if input_points is not None and input_labels is not None and input_labels.shape != input_points.shape[:3]:
            raise ValueError(
                f"input_labels shape {input_labels.shape} does not match input_points shape {input_points.shape}"
            )
        if input_points is not None and input_boxes is not None and input_points.shape[:2] != input_boxes.shape[:2]:
            raise ValueError(
                "You should provide as many bounding boxes as input points per box. "
                f"Got {input_points.shape[:2]} and {input_boxes.shape[:2]}."
            )
        if prompt_mask is not None and (input_points is None or prompt_mask.shape != input_points.shape[:3]):
            raise ValueError("prompt_mask must have the shape of input_labels (batch, objects, points)")

        if output_hidden_states and pixel_values is None:
            raise ValueError("output_hidden_states needs pixel_values: image_embeddings carry no vision hidden states")
        _check_rank("attention_similarity", attention_similarity, 5, "(batch, objects, heads, tokens, 64 * 64)")
        _check_rank("target_embedding", target_embedding, 4, "(batch, objects, tokens, hidden_size)")

        hidden_states = None
        if pixel_values is not None:
            features = self.get_image_features(pixel_values)
            image_embeddings = self._embeddings(features)
            hidden_states = features.hidden_states if output_hidden_states else None
        image_embeddings = tuple(image_embeddings)
        batch = image_embeddings[-1].shape[0]

        if input_points is not None and input_labels is None:
            input_labels = jnp.ones(input_points.shape[:3], jnp.int32)
        if input_points is None and input_boxes is None:
            input_points = jnp.zeros((batch, 1, 1, 2), jnp.float32)
            input_labels = jnp.full((batch, 1, 1), NOT_A_POINT_LABEL, jnp.int32)

        if input_masks is not None:
            _check_rank("input_masks", input_masks, 4, "(batch, 1 or objects, H, W)")
            s = self.config.prompt_encoder_config.mask_input_size
            if input_masks.shape[-2:] != (s, s):
                shape = (*input_masks.shape[:2], s, s)
                input_masks = jax.image.resize(input_masks.astype(jnp.float32), shape, "linear", antialias=True)

        sparse, dense = self.prompt_encoder(input_points, input_labels, input_boxes, input_masks)
        token_mask = sparse_token_mask(prompt_mask, sparse, input_boxes is not None)

        masks, iou_scores, object_score_logits, _ = self.mask_decoder(
            image_embeddings[-1],
            self.get_image_wide_positional_embeddings()
            if image_positional_embeddings is None
            else image_positional_embeddings,
            sparse,
            dense,
            image_embeddings[:-1],
            multimask_output=multimask_output,
            token_mask=token_mask,
            attention_similarity=attention_similarity,
            target_embedding=target_embedding,
        )
        return Sam2ImageSegmentationOutput(
            iou_scores=iou_scores.astype(jnp.float32),
            pred_masks=masks.astype(jnp.float32),
            object_score_logits=object_score_logits.astype(jnp.float32),
            image_embeddings=image_embeddings,
            vision_hidden_states=hidden_states,
        )

    def init_all(self):
        """Touch every submodule once (boxes, masks, points) so that ``init`` creates the full param tree."""
        size = self.config.prompt_encoder_config.image_size
        m = self.config.prompt_encoder_config.mask_input_size
        out = self(
            pixel_values=jnp.zeros((1, size, size, 3), jnp.float32),
            input_points=jnp.zeros((1, 1, 1, 2), jnp.float32),
            input_labels=jnp.ones((1, 1, 1), jnp.int32),
            input_boxes=jnp.zeros((1, 1, 4), jnp.float32),
            input_masks=jnp.zeros((1, 1, m, m), jnp.float32),
        )
        return self(image_embeddings=out.image_embeddings)  # the no-mask path creates ``no_mask_embed``


def init_params(config: Sam2Config, rng: jax.Array | None = None, dtype: Dtype = jnp.float32):
    """Randomly initialised params of the full model (use ``param_shapes`` for shapes only)."""
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return Sam2Model(config, dtype, "reference").init(rng, method=Sam2Model.init_all)["params"]


def param_shapes(config: Sam2Config):
    """The param tree as ``jax.ShapeDtypeStruct`` leaves, without computing anything."""
    return jax.eval_shape(lambda: init_params(config))
