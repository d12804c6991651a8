"""The key-mapping tables: SAM 2 state-dict keys -> the Flax param tree of ``Sam2VideoModel`` / ``Sam2Model``.

In: a state dict ``{key: np.ndarray}`` of one source layout and a ``Sam2Config``. Out: the nested Flax param
dict (float32 NumPy), every tensor used once, every leaf filled, every shape checked; otherwise one
``CheckpointError`` listing all missing, unexpected and mis-shaped keys. This module is the one place for key
names; reading files is ``readers``' job, checking shapes ``validation``'s.

A state dict with video tensors (the Hub's ``Sam2VideoModel`` layout, every original ``.pt``) converts into the
video model's tree (``Sam2VideoModel``: every tensor used, nothing skipped); one without (transformers
``Sam2Model``) into the image model's tree. The image model's params are the video tree without its video-only
subtrees (``sam2_video_model.image_params``), so one converted directory serves both models.

Source layouts (``LAYOUTS``):

* ``"transformers"`` (``Sam2Model`` and ``Sam2VideoModel``): ``TRANSFORMERS_RULES`` maps every key to a Flax
  path and a layout transform.
* ``"official"`` (the facebookresearch ``.pt`` state dict): ``OFFICIAL_RENAMES`` rewrites its key names to
  transformers' (``OFFICIAL_MERGES`` stacks the four point embeddings, ``OFFICIAL_COPIES`` sends the one Fourier
  matrix to both of its destinations), then the transformers rules apply.

A layout's ``unused`` list (full-match patterns skipped before any rule) is the place for tensors a model
deliberately ignores; it is empty for every known layout, since the video model uses every tensor. Keys matching
no rule are reported, never skipped silently.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from flax.traverse_util import unflatten_dict

from ..config import MODEL_SIZES, VIDEO_RELEASES, Sam2Config
from .errors import CheckpointError
from .validation import check_params

Rule = tuple[str, str, Callable[[np.ndarray], np.ndarray]]


# ---- layout transforms (torch layout -> Flax layout) ---------------------------------------------------------
def _identity(w: np.ndarray) -> np.ndarray:
    return w


def _linear(w: np.ndarray) -> np.ndarray:  # (out, in) -> (in, out)
    return w.T


def _conv(w: np.ndarray) -> np.ndarray:  # (out, in, kh, kw) -> (kh, kw, in, out)
    return w.transpose(2, 3, 1, 0)


def _deconv(w: np.ndarray) -> np.ndarray:  # ConvTranspose (in, out, kh, kw) -> (kh, kw, in, out)
    return w.transpose(2, 3, 0, 1)


def _nchw(w: np.ndarray) -> np.ndarray:  # (1, C, h, w) -> (1, h, w, C)
    return w.transpose(0, 2, 3, 1)


IDENTITY, LINEAR, CONV, DECONV, NCHW = _identity, _linear, _conv, _deconv, _nchw

# ---- the transformers table: (key regex, Flax path template, transform of the weight) --------------------------
# Paths use "." like the source; numeric components become Flax list names (``blocks.3`` -> ``blocks_3``).
# Biases are never transformed. The first matching rule wins, so specific rules come before generic ones.
TRANSFORMERS_RULES: list[Rule] = [
    (r"vision_encoder\.backbone\.(pos_embed|pos_embed_window)", r"vision_encoder.backbone.\1", NCHW),
    (r"(vision_encoder\.backbone\.patch_embed\.projection)\.weight", r"\1.kernel", CONV),
    (r"(vision_encoder\.neck\.convs\.\d+)\.weight", r"\1.kernel", CONV),
    (r"(prompt_encoder\.mask_embed\.conv[123])\.weight", r"\1.kernel", CONV),
    (r"(mask_decoder\.conv_s[01])\.weight", r"\1.kernel", CONV),
    (r"(mask_decoder\.upscale_conv[12])\.weight", r"\1.kernel", DECONV),
    (r"(prompt_encoder\.(?:no_mask_embed|point_embed|not_a_point_embed))\.weight", r"\1.embedding", IDENTITY),
    (r"(mask_decoder\.(?:iou_token|mask_tokens|obj_score_token))\.weight", r"\1.embedding", IDENTITY),
    (r"((?:prompt_encoder\.shared_embedding|shared_image_embedding)\.positional_embedding)", r"\1", IDENTITY),
    (r"no_memory_embedding", r"no_memory_embedding", IDENTITY),
    # video model: learned embeddings stored as parameters, convolutions
    (
        r"(no_memory_positional_encoding|memory_temporal_positional_encoding|no_object_pointer"
        r"|occlusion_spatial_embedding_parameter)",
        r"\1",
        IDENTITY,
    ),
    (r"(memory_encoder\.memory_fuser\.layers\.\d+)\.scale", r"\1.scale", IDENTITY),  # layer scale (gamma)
    (
        r"(memory_encoder\.(?:mask_downsampler\.layers\.\d+\.conv|mask_downsampler\.final_conv|feature_projection"
        r"|memory_fuser\.layers\.\d+\.depthwise_conv|projection))\.weight",
        r"\1.kernel",
        CONV,
    ),
    (r"mask_downsample\.weight", r"mask_downsample.kernel", CONV),
    (r"(.*\.(?:layer_norm\d?|upscale_layer_norm|layer_norm_final_attn))\.weight", r"\1.scale", IDENTITY),
    (r"(.*)\.weight", r"\1.kernel", LINEAR),  # every remaining weight is an nn.Linear
    (r"(.*)\.bias", r"\1.bias", IDENTITY),
]

# ---- the official (.pt) key names -> transformers key names ----------------------------------------------------
# Every rule is tried in order on the (already rewritten) name; a key that no rule touches is unexpected.
_HEAD3 = r"(sam_mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+|pred_obj_score_head))"
OFFICIAL_RENAMES: list[tuple[str, str]] = [
    (r"image_encoder\.trunk\.patch_embed\.proj\.(.*)", r"vision_encoder.backbone.patch_embed.projection.\1"),
    (r"image_encoder\.trunk\.blocks\.(\d+)\.norm([12])\.(.*)", r"vision_encoder.backbone.blocks.\1.layer_norm\2.\3"),
    (r"image_encoder\.trunk\.blocks\.(\d+)\.mlp\.layers\.0\.(.*)", r"vision_encoder.backbone.blocks.\1.mlp.proj_in.\2"),
    (
        r"image_encoder\.trunk\.blocks\.(\d+)\.mlp\.layers\.1\.(.*)",
        r"vision_encoder.backbone.blocks.\1.mlp.proj_out.\2",
    ),
    (r"image_encoder\.trunk\.(.*)", r"vision_encoder.backbone.\1"),
    (r"image_encoder\.neck\.convs\.(\d+)\.conv\.(.*)", r"vision_encoder.neck.convs.\1.\2"),
    (r"sam_prompt_encoder\.not_a_point_embed\.(.*)", r"prompt_encoder.not_a_point_embed.\1"),
    (r"sam_prompt_encoder\.no_mask_embed\.(.*)", r"prompt_encoder.no_mask_embed.\1"),
    (r"sam_prompt_encoder\.mask_downscaling\.0\.(.*)", r"prompt_encoder.mask_embed.conv1.\1"),
    (r"sam_prompt_encoder\.mask_downscaling\.1\.(.*)", r"prompt_encoder.mask_embed.layer_norm1.\1"),
    (r"sam_prompt_encoder\.mask_downscaling\.3\.(.*)", r"prompt_encoder.mask_embed.conv2.\1"),
    (r"sam_prompt_encoder\.mask_downscaling\.4\.(.*)", r"prompt_encoder.mask_embed.layer_norm2.\1"),
    (r"sam_prompt_encoder\.mask_downscaling\.6\.(.*)", r"prompt_encoder.mask_embed.conv3.\1"),
    (
        r"(sam_mask_decoder\.transformer\.(?:layers\.\d+\.\w+|final_attn_token_to_image))\.out_proj\.(.*)",
        r"\1.o_proj.\2",
    ),
    (
        r"sam_mask_decoder\.transformer\.layers\.(\d+)\.norm([1-4])\.(.*)",
        r"mask_decoder.transformer.layers.\1.layer_norm\2.\3",
    ),
    (
        r"sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.0\.(.*)",
        r"mask_decoder.transformer.layers.\1.mlp.proj_in.\2",
    ),
    (
        r"sam_mask_decoder\.transformer\.layers\.(\d+)\.mlp\.layers\.1\.(.*)",
        r"mask_decoder.transformer.layers.\1.mlp.proj_out.\2",
    ),
    (r"sam_mask_decoder\.transformer\.norm_final_attn\.(.*)", r"mask_decoder.transformer.layer_norm_final_attn.\1"),
    (_HEAD3 + r"\.layers\.0\.(.*)", r"\1.proj_in.\2"),
    (_HEAD3 + r"\.layers\.1\.(.*)", r"\1.layers.0.\2"),
    (_HEAD3 + r"\.layers\.2\.(.*)", r"\1.proj_out.\2"),
    (r"sam_mask_decoder\.output_upscaling\.0\.(.*)", r"mask_decoder.upscale_conv1.\1"),
    (r"sam_mask_decoder\.output_upscaling\.1\.(.*)", r"mask_decoder.upscale_layer_norm.\1"),
    (r"sam_mask_decoder\.output_upscaling\.3\.(.*)", r"mask_decoder.upscale_conv2.\1"),
    (r"sam_mask_decoder\.(.*)", r"mask_decoder.\1"),
    (r"no_mem_embed", r"no_memory_embedding"),
    # video model
    (r"no_mem_pos_enc", r"no_memory_positional_encoding"),
    (r"maskmem_tpos_enc", r"memory_temporal_positional_encoding"),
    (r"no_obj_ptr", r"no_object_pointer"),
    (r"no_obj_embed_spatial", r"occlusion_spatial_embedding_parameter"),
    (r"mask_downsample\.(weight|bias)", r"mask_downsample.\1"),
    (r"obj_ptr_proj\.layers\.0\.(.*)", r"object_pointer_proj.proj_in.\1"),
    (r"obj_ptr_proj\.layers\.1\.(.*)", r"object_pointer_proj.layers.0.\1"),
    (r"obj_ptr_proj\.layers\.2\.(.*)", r"object_pointer_proj.proj_out.\1"),
    (r"obj_ptr_tpos_proj\.(.*)", r"temporal_positional_encoding_projection_layer.\1"),
    (r"(memory_attention\.layers\.\d+\.(?:self_attn|cross_attn_image))\.out_proj\.(.*)", r"\1.o_proj.\2"),
    (r"(memory_attention\.layers\.\d+\.(?:self_attn|cross_attn_image)\.[qkv]_proj\..*)", r"\1"),
    (r"(memory_attention\.layers\.\d+)\.norm([123])\.(.*)", r"\1.layer_norm\2.\3"),
    (r"(memory_attention\.layers\.\d+\.linear[12]\..*)", r"\1"),
    (r"memory_attention\.norm\.(.*)", r"memory_attention.layer_norm.\1"),
    # MaskDownSampler.encoder is a Sequential of (conv, LayerNorm2d, GELU) x 4 and the final 1x1 conv
    *(
        (
            rf"memory_encoder\.mask_downsampler\.encoder\.{3 * i + j}\.(.*)",
            rf"memory_encoder.mask_downsampler.layers.{i}.{part}.\1",
        )
        for i in range(4)
        for j, part in ((0, "conv"), (1, "layer_norm"))
    ),
    (r"memory_encoder\.mask_downsampler\.encoder\.12\.(.*)", r"memory_encoder.mask_downsampler.final_conv.\1"),
    (r"memory_encoder\.pix_feat_proj\.(.*)", r"memory_encoder.feature_projection.\1"),
    (r"memory_encoder\.out_proj\.(.*)", r"memory_encoder.projection.\1"),
    (r"(memory_encoder)\.fuser\.layers\.(\d+)\.gamma", r"\1.memory_fuser.layers.\2.scale"),
    (r"(memory_encoder)\.fuser\.layers\.(\d+)\.dwconv\.(.*)", r"\1.memory_fuser.layers.\2.depthwise_conv.\3"),
    (r"(memory_encoder)\.fuser\.layers\.(\d+)\.norm\.(.*)", r"\1.memory_fuser.layers.\2.layer_norm.\3"),
    (r"(memory_encoder)\.fuser\.layers\.(\d+)\.pwconv([12])\.(.*)", r"\1.memory_fuser.layers.\2.pointwise_conv\3.\4"),
]
# Several official tensors -> one transformers tensor (concatenated along axis 0).
OFFICIAL_MERGES: dict[str, list[str]] = {
    "prompt_encoder.point_embed.weight": [f"sam_prompt_encoder.point_embeddings.{i}.weight" for i in range(4)],
}
# One official tensor -> several transformers tensors.
OFFICIAL_COPIES: dict[str, list[str]] = {
    "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": [
        "prompt_encoder.shared_embedding.positional_embedding",
        "shared_image_embedding.positional_embedding",
    ],
}


@dataclass(frozen=True)
class Layout:
    """One source layout: the keys it deliberately leaves unused, whether it is renamed, what tells its size."""

    unused: tuple[str, ...]  # full-match patterns of keys the model does not use: an explicit list, never "unknown"
    patch_embed: str  # the patch-embedding weight: its width picks the model size
    blocks: str  # group 1 numbers the backbone blocks: their count picks the depth
    official: bool = False  # renamed by the OFFICIAL_* tables to transformers' names before the rules apply
    video_marker: str = ""  # a tensor of every video checkpoint: its presence means the video model's tree
    sam2_1_marker: str = ""  # a video tensor of the sam2.1 release only: its absence means the sam2 options


LAYOUTS: dict[str, Layout] = {
    "transformers": Layout(
        unused=(),
        patch_embed="vision_encoder.backbone.patch_embed.projection.weight",
        blocks=r"vision_encoder\.backbone\.blocks\.(\d+)\.",
        video_marker="memory_attention.layer_norm.weight",
        sam2_1_marker="occlusion_spatial_embedding_parameter",
    ),
    "official": Layout(
        unused=(),
        patch_embed="image_encoder.trunk.patch_embed.proj.weight",
        blocks=r"image_encoder\.trunk\.blocks\.(\d+)\.",
        official=True,
        video_marker="memory_attention.norm.weight",
        sam2_1_marker="no_obj_embed_spatial",
    ),
}


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise ValueError(f"unknown checkpoint layout {name!r} (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[name]


def full_pattern(pattern: str) -> re.Pattern:  # compiled on use (re caches them), so the tables stay plain data
    """A mapping rule's regex anchored to match a whole key (``^pattern$``)."""
    return re.compile(rf"^{pattern}$")


def _matches_any(key: str, patterns) -> bool:
    return any(full_pattern(p).match(key) for p in patterns)


def flax_path(dotted: str) -> tuple[str, ...]:
    """A dotted transformers-layout name -> its Flax parameter path: ``blocks.3.attn`` -> ("blocks_3", "attn")."""
    return tuple(re.sub(r"\.(\d+)(?=\.|$)", r"_\1", dotted).split("."))


def official_to_transformers(state: Mapping[str, np.ndarray], unused: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Rename an official SAM 2 state dict to transformers' keys (keys matching ``unused`` dropped by list)."""
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    merged = {src for srcs in OFFICIAL_MERGES.values() for src in srcs}
    for dst, srcs in OFFICIAL_MERGES.items():
        if all(s in state for s in srcs):
            out[dst] = np.concatenate([np.asarray(state[s]) for s in srcs], axis=0)
        else:
            unknown.extend(f"missing {s}" for s in srcs if s not in state)
    for key, value in state.items():
        if key in merged or _matches_any(key, unused):
            continue
        if key in OFFICIAL_COPIES:
            for dst in OFFICIAL_COPIES[key]:
                out[dst] = np.asarray(value)
            continue
        name, renamed = key, False
        for pattern, template in OFFICIAL_RENAMES:  # applied in order, like a sed script
            if full_pattern(pattern).match(name):
                name, renamed = full_pattern(pattern).sub(template, name), True
        if renamed:
            out[name] = np.asarray(value)
        else:
            unknown.append(f"unexpected {key}")
    if unknown:
        raise CheckpointError("not a SAM 2 checkpoint of the official layout:\n  " + "\n  ".join(sorted(unknown)))
    return out


def _map_transformers(state: Mapping[str, np.ndarray], unused: tuple[str, ...]) -> tuple[dict, list[str]]:
    params, unexpected = {}, []
    for key, value in state.items():
        if _matches_any(key, unused):
            continue
        for pattern, template, transform in TRANSFORMERS_RULES:
            if full_pattern(pattern).match(key):
                value = np.asarray(value)
                value = value if key.endswith(".bias") else transform(value)
                path = flax_path(full_pattern(pattern).sub(template, key))
                if path in params:
                    unexpected.append(f"{key} (a second tensor for {'/'.join(path)})")
                params[path] = np.ascontiguousarray(value)
                break
        else:
            unexpected.append(key)
    return params, unexpected


def convert_state_dict(state: Mapping[str, np.ndarray], config: Sam2Config, layout: str = "transformers") -> dict:
    """Convert a state dict of ``layout`` (a key of ``LAYOUTS``) into the nested Flax param dict.

    Strict: every tensor is used exactly once, every Flax leaf is filled, every shape matches the model built from
    ``config``: the video model (``Sam2VideoModel``) when the state dict holds video tensors, the image model
    otherwise. Otherwise a ``CheckpointError`` lists all missing, unexpected and mis-shaped keys.
    """
    spec = _layout(layout)
    unused = spec.unused
    if spec.official:
        state, unused = official_to_transformers(state, spec.unused), ()
    params, unexpected = _map_transformers(state, unused)
    check_params(params, config, unexpected)
    return unflatten_dict({k: v.astype(np.float32) for k, v in params.items()})


def infer_config(state: Mapping[str, np.ndarray], layout: str = "transformers") -> Sam2Config:
    """Pick the model size whose backbone width and depth match the tensors, and for a video checkpoint the
    release whose video options match them (sam2.1 has ``sam2_1_marker``, sam2 does not)."""
    spec = _layout(layout)
    if spec.patch_embed not in state:
        raise CheckpointError(f"not a SAM 2 checkpoint: no {spec.patch_embed}")
    width = np.shape(state[spec.patch_embed])[0]
    blocks = {int(m.group(1)) for k in state if (m := re.match(spec.blocks, k))}
    for cfg in MODEL_SIZES.values():
        hc = cfg.vision_config.backbone_config
        if hc.hidden_size == width and sum(hc.blocks_per_stage) == len(blocks):
            if spec.video_marker in state and spec.sam2_1_marker not in state:
                return dataclasses.replace(cfg, video_config=VIDEO_RELEASES["sam2"])
            return cfg
    raise CheckpointError(f"no SAM 2 size has a {width}-wide, {len(blocks)}-block backbone; pass the size explicitly")
