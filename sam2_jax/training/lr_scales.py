"""Per-parameter learning-rate multipliers for fine-tuning the whole model: the image encoder at a lower rate,
the Hiera trunk with layer-wise decay, as SAM 2's official fine-tuning recipe sets them.

  hiera_layer_id(name, depth) -> int: the layer id of a trunk param ("blocks_3/attn/qkv/kernel", ...)
  lr_scales(params, encoder_lr_scale=1.0, layer_decay=1.0, depth=None) -> a tree like ``params`` of Python floats
  scale_by_lr_scales(encoder_lr_scale=1.0, layer_decay=1.0, depth=None) -> an optax transformation multiplying
        each update by its param's scale; chained after AdamW (``step.make_optimizer``) it is AdamW with that
        param's learning rate multiplied by the scale (the decoupled weight decay too, as in torch's param groups)

The rule (reproducing, in our own code, sam2/configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml with
training/optimizer.py ``layer_decay_param_modifier`` and sam2/modeling/backbones/hieradet.py ``Hiera.get_layer_id``
of facebookresearch/sam2):
  * every ``vision_encoder`` param (their ``image_encoder.*``: trunk and FPN neck) is scaled by
    ``encoder_lr_scale``: the config trains it at ``vision_lr`` 3e-6 against ``base_lr`` 5e-6 for the rest, both
    cosine-decayed to a tenth, so at every step the ratio is 0.6;
  * a trunk (``vision_encoder/backbone``) param is further scaled by ``layer_decay ** (depth + 1 - layer_id)``,
    ``depth`` the trunk's block count (``Hiera.get_num_layers()``, ``len(blocks)``). Layer ids: the patch
    embedding 0, block ``i`` ``i + 1``, anything else in the trunk ``depth + 1`` (scale 1). So the last block
    gets ``layer_decay``, the first ``layer_decay ** depth``, the patch embedding ``layer_decay ** (depth + 1)``.
    ``get_layer_id`` also puts ``pos_embed`` (and ``pos_embed_window``) at layer 0, but the config overrides every
    ``*pos_embed*`` param to scale 1.0; that override is reproduced: both positional embeddings get scale 1;
  * everything else (neck, prompt encoder, mask decoder with its ``conv_s0`` / ``conv_s1``, ``no_memory_embedding``
    ...) gets scale 1 from the decay (the modifier's layer ``depth + 1`` outside ``image_encoder.trunk``).
Defaults (1.0, 1.0) make every scale 1. Not reproduced: the config's weight decay groups (``make_optimizer`` decays
matrices only, not biases and norm scales, as before).
"""

from __future__ import annotations

import re

import jax
import optax

ENCODER = "vision_encoder"
TRUNK = ("vision_encoder", "backbone")
_BLOCK = re.compile(r"blocks_(\d+)$")
__all__ = ["hiera_layer_id", "lr_scales", "scale_by_lr_scales", "trunk_depth"]


def _keys(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def hiera_layer_id(name: str, depth: int) -> int:
    """The official layer id of a trunk param named relative to the trunk ("patch_embed/projection/kernel",
    "blocks_3/mlp/proj_in/bias", "pos_embed"): 0 for the patch embedding and the positional embeddings, ``i + 1``
    for block ``i``, ``depth + 1`` for anything else."""
    first = name.split("/")[0]
    if "pos_embed" in first or first == "patch_embed":
        return 0
    block = _BLOCK.match(first)
    return int(block.group(1)) + 1 if block else depth + 1


def trunk_depth(params) -> int:
    """The number of Hiera blocks in a param tree (the highest ``vision_encoder/backbone/blocks_<i>`` plus one; 0
    when the tree has no trunk)."""
    depth = 0
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = _keys(path)
        if keys[:2] == TRUNK and len(keys) > 2 and (m := _BLOCK.match(keys[2])):
            depth = max(depth, int(m.group(1)) + 1)
    return depth


def lr_scales(params, encoder_lr_scale: float = 1.0, layer_decay: float = 1.0, depth: int | None = None):
    """A tree like ``params`` (any leaves; ``optax.MaskedNode`` subtrees are kept as they are) of Python floats:
    each param's learning-rate multiplier (module docstring). ``depth``: the trunk's block count, by default
    ``trunk_depth(params)`` (give it when ``params`` may lack the last blocks)."""
    depth = trunk_depth(params) if depth is None else int(depth)

    def scale(path, _) -> float:
        keys = _keys(path)
        if keys[:1] != (ENCODER,):
            return 1.0
        if keys[:2] != TRUNK:
            return float(encoder_lr_scale)
        name = "/".join(keys[2:])
        if "pos_embed" in name:  # the config's override of get_layer_id's layer 0
            return float(encoder_lr_scale)
        return float(encoder_lr_scale) * float(layer_decay) ** (depth + 1 - hiera_layer_id(name, depth))

    return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_lr_scales(
    encoder_lr_scale: float = 1.0, layer_decay: float = 1.0, depth: int | None = None
) -> optax.GradientTransformation:
    """Updates (a param tree, or part of one under ``optax.multi_transform``) multiplied leaf by leaf by
    ``lr_scales(updates, ...)``; the scales depend only on the leaves' paths, so they are constants of the jitted
    step. No state."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        scales = lr_scales(updates, encoder_lr_scale, layer_decay, depth)
        return jax.tree_util.tree_map(lambda u, s: u if s == 1.0 else u * s, updates, scales), state

    return optax.GradientTransformation(init, update)
