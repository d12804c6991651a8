"""Reading an official SAM 2 model yaml (``sam2.1_hiera_t.yaml``, MedSAM2's ``sam2.1_hiera_t512.yaml``...).

In: the path of a yaml as the official ``build_sam2`` reads it (a ``model:`` section). Out (``config_from_yaml``):
the ``Sam2Config`` of the size whose Hiera trunk it describes, at its ``image_size``, with the video options it
sets. Keys it leaves out take the official classes' defaults, as ``build_sam2`` would (``SAM2Base``: image size
512, most flags off; ``Hiera``: the base_plus trunk).

Read: the trunk (matched against each size's preset), ``image_size``, the memory attention (width, layers, heads,
feed-forward width and activation, RoPE theta and ``feat_sizes``), the memory encoder's output width and fuser
depth, and every model-level flag. The official RoPE recomputes its table for the actual token grid when
``feat_sizes`` does not fit it (``[64, 64]`` at 512 px runs as ``[32, 32]``), so only a table that has the grid's
number of positions but not its shape is refused. A model-level or trunk key this module does not know, or a value
sam2-jax does not run, raises one ``CheckpointError`` line naming the key. The other module settings (neck,
position encodings, mask downsampler) are not read: those that change a tensor's shape are caught when the
checkpoint is checked against the model. Needs PyYAML (installed with huggingface_hub).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..config import MODEL_SIZES, Sam2Config, VideoConfig
from ..config.base import to_tuple
from .errors import CheckpointError

__all__ = ["YAML_SUFFIXES", "config_from_yaml", "is_yaml"]

YAML_SUFFIXES = (".yaml", ".yml")

# Hiera's defaults (sam2.modeling.backbones.hieradet.Hiera) for the trunk keys that pick the size
_TRUNK_KEYS = {
    "embed_dim": 96,
    "num_heads": 1,
    "stages": (2, 3, 16, 3),
    "global_att_blocks": (12, 16, 20),
    "window_pos_embed_bkg_spatial_size": (14, 14),
    "window_spec": (8, 4, 14, 7),
}
_TRUNK_FIXED = {"q_pool": 3, "q_stride": (2, 2), "dim_mul": 2.0, "head_mul": 2.0, "return_interm_layers": True}
_TRUNK_IGNORED = {"_target_", "drop_path_rate", "weights_path"}  # training only, or replaced by the checkpoint

# model-level key -> (VideoConfig field, SAM2Base's default)
_VIDEO_KEYS = {
    "num_maskmem": ("num_maskmem", 7),
    "sigmoid_scale_for_mem_enc": ("sigmoid_scale_for_mem_enc", 1.0),
    "sigmoid_bias_for_mem_enc": ("sigmoid_bias_for_mem_enc", 0.0),
    "no_obj_embed_spatial": ("enable_occlusion_spatial_embedding", False),
    "multimask_output_in_sam": ("multimask_output_in_sam", False),
    "multimask_min_pt_num": ("multimask_min_pt_num", 1),
    "multimask_max_pt_num": ("multimask_max_pt_num", 1),
    "multimask_output_for_tracking": ("multimask_output_for_tracking", False),
    "use_multimask_token_for_obj_ptr": ("use_multimask_token_for_obj_ptr", False),
    "max_obj_ptrs_in_encoder": ("max_object_pointers_in_encoder", 16),
    "max_cond_frames_in_attn": ("max_cond_frame_num", -1),
    "only_obj_ptrs_in_the_past_for_eval": ("only_obj_ptrs_in_the_past_for_eval", False),
}
# the pointers' temporal encoding: three official switches, one field (on together in sam2.1, off in sam2)
_TPOS_KEYS = {
    "add_tpos_enc_to_obj_ptrs": True,
    "proj_tpos_enc_in_obj_ptrs": False,
    "use_signed_tpos_enc_to_obj_ptrs": False,
}
# settings sam2-jax runs one way only: key -> (the value it runs, SAM2Base's default)
_FIXED = {
    "backbone_stride": (16, 16),
    "use_high_res_features_in_sam": (True, False),
    "iou_prediction_use_sigmoid": (True, False),
    "use_obj_ptrs_in_encoder": (True, False),
    "pred_obj_scores": (True, False),
    "pred_obj_scores_mlp": (True, False),
    "fixed_no_obj_ptr": (True, False),
    "soft_no_obj_ptr": (False, False),
    "use_mlp_for_obj_ptr_proj": (True, False),
    "use_mask_input_as_output_without_sam": (True, False),
    "directly_add_no_mem_embed": (True, False),
    "memory_temporal_stride_for_eval": (1, 1),
    "non_overlap_masks_for_mem_enc": (False, False),
    "sam_mask_decoder_extra_args": (None, None),
}
# read elsewhere here, or without effect on inference (binarize_mask_from_pts_for_mem_enc: the video predictor's
# apply_postprocessing sets it, as build_sam2_video_predictor does)
_MODEL_IGNORED = {"_target_", "image_encoder", "memory_attention", "memory_encoder", "image_size"}
_MODEL_IGNORED |= {"compile_image_encoder", "binarize_mask_from_pts_for_mem_enc"}
_PREDICTOR_KEYS = {"fill_hole_area", "non_overlap_masks", "clear_non_cond_mem_around_input"}
_PREDICTOR_KEYS |= {"add_all_frames_to_correct_as_cond"}


def is_yaml(config: Any) -> bool:
    """Whether a ``config`` argument names a yaml file (by its suffix)."""
    return isinstance(config, (str, os.PathLike)) and str(config).lower().endswith(YAML_SUFFIXES)


def _model_section(path: Path) -> dict:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with huggingface_hub
        raise CheckpointError(f"reading {path} needs PyYAML (pip install pyyaml); or give the image size") from None
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    except yaml.YAMLError as e:
        raise CheckpointError(f"cannot read {path}: not valid YAML ({' '.join(str(e).split())})") from None
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{path} is not a SAM 2 model yaml: it has no 'model:' section")
    return model


def _number(value: Any, where: str) -> float:
    try:  # PyYAML reads 1e4 (no dot) as a string
        return float(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where} must be a number, got {value!r}") from None


def _preset(model: dict, path: Path) -> Sam2Config:
    """The size preset whose trunk the yaml describes."""
    trunk = (model.get("image_encoder") or {}).get("trunk") or {}
    unknown = sorted(set(trunk) - set(_TRUNK_KEYS) - set(_TRUNK_FIXED) - _TRUNK_IGNORED)
    if unknown:
        raise CheckpointError(f"{path}: model.image_encoder.trunk.{unknown[0]} is not a Hiera option sam2-jax reads")
    for key, value in _TRUNK_FIXED.items():
        if key in trunk and to_tuple(trunk[key]) != value:
            raise CheckpointError(f"{path}: model.image_encoder.trunk.{key} {trunk[key]!r} is not supported ({value})")
    want = {k: to_tuple(trunk.get(k, d)) for k, d in _TRUNK_KEYS.items()}
    for cfg in MODEL_SIZES.values():
        hc = cfg.vision_config.backbone_config
        have = (hc.hidden_size, hc.num_attention_heads_per_stage[0], hc.blocks_per_stage, hc.global_attention_blocks,
                hc.window_positional_embedding_background_size, hc.window_size_per_stage)  # fmt: skip
        if tuple(want.values()) == have:
            return cfg
    described = ", ".join(f"{k} {list(v) if isinstance(v, tuple) else v}" for k, v in want.items())
    raise CheckpointError(f"{path}: the trunk ({described}) is none of the SAM 2 sizes {sorted(MODEL_SIZES)}")


def _check_model_keys(model: dict, path: Path) -> None:
    for key in sorted(model):
        if key in _PREDICTOR_KEYS:
            if model[key]:
                raise CheckpointError(f"{path}: model.{key} is a video predictor option, not part of the model: "
                                      f"remove it and pass {key}= to Sam2VideoPredictor.from_pretrained")  # fmt: skip
        elif key in _FIXED:
            if model[key] != _FIXED[key][0]:
                raise CheckpointError(f"{path}: model.{key} {model[key]!r} is not supported ({_FIXED[key][0]!r})")
        elif key not in _VIDEO_KEYS and key not in _TPOS_KEYS and key not in _MODEL_IGNORED:
            raise CheckpointError(f"{path}: model.{key} is not a SAM 2 option sam2-jax reads")
    for key, (value, default) in _FIXED.items():
        if key not in model and default != value:
            raise CheckpointError(f"{path}: model.{key} is not set (official default {default!r}); sam2-jax runs "
                                  f"{value!r} only")  # fmt: skip


def _memory_fields(model: dict, path: Path, grid: int) -> dict[str, Any]:
    """The memory attention's and memory encoder's fields; ``feat_sizes`` checked against the ``grid`` x ``grid``
    token grid."""
    d = VideoConfig()
    attention = model.get("memory_attention") or {}
    layer = attention.get("layer") or {}
    self_attn, cross_attn = layer.get("self_attention") or {}, layer.get("cross_attention") or {}
    where = f"{path}: model.memory_attention.layer"
    for key, default in (("num_heads", 1), ("downsample_rate", 1), ("rope_theta", 10000.0)):
        if self_attn.get(key, default) != cross_attn.get(key, default):
            raise CheckpointError(f"{where}: self_attention.{key} and cross_attention.{key} differ (not supported)")
    for name, attn in (("self_attention", self_attn), ("cross_attention", cross_attn)):
        sizes = to_tuple(attn.get("feat_sizes", (64, 64)))
        if len(sizes) != 2 or (sizes != (grid, grid) and sizes[0] * sizes[1] == grid * grid):
            raise CheckpointError(f"{where}.{name}.feat_sizes {list(sizes)} has the {grid}x{grid} token grid's size "
                                  f"but not its shape: only [{grid}, {grid}] is supported here")  # fmt: skip
    encoder = model.get("memory_encoder") or {}
    return {
        "memory_attention_hidden_size": attention.get("d_model", d.memory_attention_hidden_size),
        "memory_attention_num_layers": attention.get("num_layers", d.memory_attention_num_layers),
        "memory_attention_num_attention_heads": self_attn.get("num_heads", 1),
        "memory_attention_downsample_rate": self_attn.get("downsample_rate", 1),
        "memory_attention_feed_forward_hidden_size": layer.get("dim_feedforward", 2048),
        "memory_attention_feed_forward_hidden_act": layer.get("activation", "relu"),
        "memory_attention_rope_theta": _number(self_attn.get("rope_theta", 10000.0), f"{where}.rope_theta"),
        "memory_encoder_output_channels": encoder.get("out_dim", d.memory_encoder_output_channels),
        "memory_fuser_num_layers": (encoder.get("fuser") or {}).get("num_layers", d.memory_fuser_num_layers),
    }


def config_from_yaml(path: str | os.PathLike) -> Sam2Config:
    """The ``Sam2Config`` an official model yaml describes (see the module docstring)."""
    path = Path(path)
    model = _model_section(path)
    base = _preset(model, path)
    _check_model_keys(model, path)
    size = model.get("image_size", 512)  # SAM2Base's default
    if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 16:
        raise CheckpointError(f"{path}: model.image_size must be a positive multiple of 16, got {size!r}")
    fields = {field: model.get(key, default) for key, (field, default) in _VIDEO_KEYS.items()}
    for key in ("sigmoid_scale_for_mem_enc", "sigmoid_bias_for_mem_enc"):
        fields[key] = _number(fields[key], f"{path}: model.{key}")
    tpos = {bool(model.get(key, default)) for key, default in _TPOS_KEYS.items()}
    if len(tpos) != 1:
        raise CheckpointError(f"{path}: model.{' / '.join(_TPOS_KEYS)} must be all on (sam2.1) or all off (sam2)")
    fields["enable_temporal_pos_encoding_for_object_pointers"] = tpos.pop()
    fields.update(_memory_fields(model, path, size // 16))
    try:
        video = VideoConfig(**fields)
        return dataclasses.replace(base, video_config=video).at_image_size(size)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: {' '.join(str(e).split())}") from None
