"""Frozen configuration dataclasses for the SAM 2 image and video models, with one preset per checkpoint.

Field names follow transformers' ``Sam2HieraDetConfig`` / ``Sam2VisionConfig`` / ``Sam2PromptEncoderConfig`` /
``Sam2MaskDecoderConfig`` and the top-level fields of ``Sam2VideoConfig`` (``VideoConfig``, held as
``Sam2Config.video_config`` and written back at the top level) so that a transformers ``config.json`` reads field
for field. Lists become tuples so that every config is hashable and can be a static argument of ``jax.jit``.

``CHECKPOINTS`` is the single registry from a checkpoint name (``facebook/sam2.1-hiera-tiny``...) to its
config; ``get_config`` looks names up in it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "HieraConfig",
    "VideoConfig",
    "VisionConfig",
    "PromptEncoderConfig",
    "MaskDecoderConfig",
    "Sam2Config",
    "CHECKPOINTS",
    "MODEL_SIZES",
    "VIDEO_RELEASES",
    "get_config",
]


def _tuple(value):
    if isinstance(value, (list, tuple)):
        return tuple(_tuple(v) for v in value)
    return value


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _pair(value) -> tuple[int, int]:
    value = _tuple(value)
    return value if isinstance(value, tuple) else (value, value)


class _ConfigBase:
    """Shared helpers: build from a dict of known fields, refuse unknown ones."""

    # transformers' PreTrainedConfig bookkeeping that carries no architecture information.
    _IGNORED_KEYS = frozenset(
        {
            "model_type",
            "initializer_range",
            "_name_or_path",
            "architectures",
            "torch_dtype",
            "dtype",
            "transformers_version",
            "return_dict",
            "output_hidden_states",
            "output_attentions",
            "torchscript",
            "use_bfloat16",
            "tie_word_embeddings",
            "chunk_size_feed_forward",
            "is_encoder_decoder",
            "is_decoder",
            "add_cross_attention",
            "tie_encoder_decoder",
            "pruned_heads",
            "id2label",
            "label2id",
            "problem_type",
            "tokenizer_class",
            "prefix",
            "bos_token_id",
            "pad_token_id",
            "eos_token_id",
            "sep_token_id",
            "decoder_start_token_id",
            "task_specific_params",
            "finetuning_task",
            "cross_attention_hidden_size",
            "_attn_implementation_autoset",
        }
    )

    @classmethod
    def _known(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in names and k not in cls._IGNORED_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown config keys {unknown}")
        return {k: _tuple(v) for k, v in data.items() if k in names}

    def to_dict(self) -> dict[str, Any]:
        return _lists(dataclasses.asdict(self))


@dataclass(frozen=True)
class HieraConfig(_ConfigBase):
    """Hiera backbone (transformers ``Sam2HieraDetConfig``)."""

    hidden_size: int = 96
    num_channels: int = 3
    image_size: tuple[int, int] = (1024, 1024)
    patch_kernel_size: tuple[int, int] = (7, 7)
    patch_stride: tuple[int, int] = (4, 4)
    patch_padding: tuple[int, int] = (3, 3)
    query_stride: tuple[int, int] = (2, 2)
    window_positional_embedding_background_size: tuple[int, int] = (7, 7)
    num_query_pool_stages: int = 3
    blocks_per_stage: tuple[int, ...] = (1, 2, 7, 2)
    embed_dim_per_stage: tuple[int, ...] = (96, 192, 384, 768)
    num_attention_heads_per_stage: tuple[int, ...] = (1, 2, 4, 8)
    window_size_per_stage: tuple[int, ...] = (8, 4, 14, 7)
    global_attention_blocks: tuple[int, ...] = (5, 7, 9)
    mlp_ratio: float = 4.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        for name in ("image_size", "patch_kernel_size", "patch_stride", "patch_padding", "query_stride"):
            object.__setattr__(self, name, _pair(getattr(self, name)))
        for name in (
            "window_positional_embedding_background_size",
            "blocks_per_stage",
            "embed_dim_per_stage",
            "num_attention_heads_per_stage",
            "window_size_per_stage",
            "global_attention_blocks",
        ):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        n = len(self.blocks_per_stage)
        for name in ("embed_dim_per_stage", "num_attention_heads_per_stage", "window_size_per_stage"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"HieraConfig.{name} needs {n} entries, one per stage")
        if self.embed_dim_per_stage[0] != self.hidden_size:
            raise ValueError("HieraConfig.hidden_size must equal embed_dim_per_stage[0]")
        if self.hidden_act != "gelu":
            raise ValueError(f"HieraConfig.hidden_act {self.hidden_act!r} is not supported (only 'gelu')")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HieraConfig:
        data = {k: v for k, v in data.items() if k != "num_attention_heads"}  # unused by the model
        return cls(**cls._known(data, "backbone_config"))


@dataclass(frozen=True)
class VisionConfig(_ConfigBase):
    """Image encoder: Hiera backbone plus FPN neck (transformers ``Sam2VisionConfig``)."""

    backbone_config: HieraConfig = field(default_factory=HieraConfig)
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
    backbone_feature_sizes: tuple[tuple[int, int], ...] = ((256, 256), (128, 128), (64, 64))
    fpn_hidden_size: int = 256
    fpn_kernel_size: int = 1
    fpn_stride: int = 1
    fpn_padding: int = 0
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    num_feature_levels: int = 3
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        for name in ("backbone_channel_list", "backbone_feature_sizes", "fpn_top_down_levels"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        if tuple(reversed(self.backbone_channel_list)) != self.backbone_config.embed_dim_per_stage:
            raise ValueError("VisionConfig.backbone_channel_list must be the backbone's stage widths, deepest first")
        if (self.fpn_kernel_size, self.fpn_stride, self.fpn_padding) != (1, 1, 0):
            raise ValueError("only 1x1 FPN lateral convolutions (kernel 1, stride 1, padding 0) are supported")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VisionConfig:
        data = dict(data)
        backbone = HieraConfig.from_dict(data.pop("backbone_config", None) or {})
        return cls(backbone_config=backbone, **cls._known(data, "vision_config"))


@dataclass(frozen=True)
class PromptEncoderConfig(_ConfigBase):
    """Prompt encoder (transformers ``Sam2PromptEncoderConfig``)."""

    hidden_size: int = 256
    image_size: int = 1024
    patch_size: int = 16
    mask_input_channels: int = 16
    num_point_embeddings: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    scale: int = 1

    @property
    def image_embedding_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        return 4 * self.image_embedding_size

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptEncoderConfig:
        return cls(**cls._known(data, "prompt_encoder_config"))


@dataclass(frozen=True)
class MaskDecoderConfig(_ConfigBase):
    """Mask decoder and its two-way transformer (transformers ``Sam2MaskDecoderConfig``)."""

    hidden_size: int = 256
    hidden_act: str = "gelu"
    mlp_dim: int = 2048
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskDecoderConfig:
        return cls(**cls._known(data, "mask_decoder_config"))


@dataclass(frozen=True)
class VideoConfig(_ConfigBase):
    """The video model's memory modules and tracking options (the top-level fields of transformers'
    ``Sam2VideoConfig``, same names), plus the official options transformers hard-codes.

    The official yaml names are properties (``no_obj_embed_spatial``, ``proj_tpos_enc_in_obj_ptrs``...), so that
    one field drives both spellings. sam2 and sam2.1 differ only in ``enable_occlusion_spatial_embedding``
    (official ``no_obj_embed_spatial``) and ``enable_temporal_pos_encoding_for_object_pointers`` (official
    ``add_tpos_enc_to_obj_ptrs``, ``proj_tpos_enc_in_obj_ptrs`` and ``use_signed_tpos_enc_to_obj_ptrs``, all on in
    sam2.1 and off in sam2); see ``VIDEO_RELEASES``. Dropout rates are kept for the round trip and ignored
    (inference only).
    """

    num_maskmem: int = 7
    image_size: int = 1024
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    enable_occlusion_spatial_embedding: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    max_object_pointers_in_encoder: int = 16
    max_cond_frame_num: int = -1
    enable_temporal_pos_encoding_for_object_pointers: bool = True
    # memory attention
    memory_attention_hidden_size: int = 256
    memory_attention_num_layers: int = 4
    memory_attention_num_attention_heads: int = 1
    memory_attention_downsample_rate: int = 1
    memory_attention_feed_forward_hidden_size: int = 2048
    memory_attention_feed_forward_hidden_act: str = "relu"
    memory_attention_dropout: float = 0.1
    memory_attention_rope_feat_sizes: tuple[int, int] = (64, 64)
    memory_attention_rope_dropout: float = 0.1
    memory_attention_rope_theta: float = 10000.0  # transformers: rope_parameters["rope_theta"]
    # memory encoder
    memory_encoder_hidden_size: int = 256
    memory_encoder_output_channels: int = 64
    mask_downsampler_embed_dim: int = 256
    mask_downsampler_kernel_size: int = 3
    mask_downsampler_stride: int = 2
    mask_downsampler_padding: int = 1
    mask_downsampler_total_stride: int = 16
    mask_downsampler_hidden_act: str = "gelu"
    memory_fuser_num_layers: int = 2
    memory_fuser_embed_dim: int = 256
    memory_fuser_intermediate_dim: int = 1024
    memory_fuser_kernel_size: int = 7
    memory_fuser_padding: int = 3
    memory_fuser_layer_scale_init_value: float = 1e-6
    memory_fuser_hidden_act: str = "gelu"
    # official options that transformers' Sam2VideoModel hard-codes (the official video predictor's values)
    binarize_mask_from_pts_for_mem_enc: bool = True  # yaml False; build_sam2_video_predictor turns it on
    use_mask_input_as_output_without_sam: bool = True
    directly_add_no_mem_embed: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True

    # the official options above that transformers' config does not have (it hard-codes their values)
    OFFICIAL_ONLY_FIELDS: ClassVar[tuple[str, ...]] = (
        "binarize_mask_from_pts_for_mem_enc",
        "use_mask_input_as_output_without_sam",
        "directly_add_no_mem_embed",
        "use_multimask_token_for_obj_ptr",
        "only_obj_ptrs_in_the_past_for_eval",
    )

    def __post_init__(self):
        object.__setattr__(self, "memory_attention_rope_feat_sizes", _pair(self.memory_attention_rope_feat_sizes))
        for name in (
            "memory_attention_feed_forward_hidden_act",
            "mask_downsampler_hidden_act",
            "memory_fuser_hidden_act",
        ):
            if getattr(self, name) not in ("gelu", "relu"):
                raise ValueError(f"VideoConfig.{name} {getattr(self, name)!r} is not supported ('gelu' or 'relu')")
        stride, total = self.mask_downsampler_stride, self.mask_downsampler_total_stride
        if stride**self.mask_downsampler_num_layers != total:
            raise ValueError("VideoConfig.mask_downsampler_total_stride must be a power of mask_downsampler_stride")
        if self.memory_attention_hidden_size % (
            self.memory_attention_downsample_rate * self.memory_attention_num_attention_heads * 4
        ):
            raise ValueError("the memory attention's head width must be a multiple of 4 (2-D axial RoPE)")
        if self.num_maskmem < 1:
            raise ValueError("VideoConfig.num_maskmem must be at least 1")

    @property
    def mask_downsampler_num_layers(self) -> int:
        stride, total, n = self.mask_downsampler_stride, self.mask_downsampler_total_stride, 0
        while stride > 1 and total % stride == 0 and total > 1:
            total, n = total // stride, n + 1
        return n

    # ---- the official yaml names of the same settings ----------------------------------------------------------
    @property
    def no_obj_embed_spatial(self) -> bool:
        return self.enable_occlusion_spatial_embedding

    @property
    def add_tpos_enc_to_obj_ptrs(self) -> bool:
        return self.enable_temporal_pos_encoding_for_object_pointers

    @property
    def proj_tpos_enc_in_obj_ptrs(self) -> bool:
        return self.enable_temporal_pos_encoding_for_object_pointers

    @property
    def use_signed_tpos_enc_to_obj_ptrs(self) -> bool:
        return self.enable_temporal_pos_encoding_for_object_pointers

    @property
    def max_obj_ptrs_in_encoder(self) -> int:
        return self.max_object_pointers_in_encoder

    @property
    def max_cond_frames_in_attn(self) -> int:
        return self.max_cond_frame_num

    @property
    def mem_dim(self) -> int:
        return self.memory_encoder_output_channels

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoConfig:
        """The top-level video fields of a transformers ``sam2_video`` config.json (other keys must be removed)."""
        data = dict(data)
        rope = data.pop("rope_parameters", None) or {}
        if rope.get("rope_type", "axial") != "axial":
            raise ValueError(f"only axial RoPE is supported, got rope_type {rope.get('rope_type')!r}")
        if "rope_theta" in rope:
            data.setdefault("memory_attention_rope_theta", rope["rope_theta"])
        return cls(**cls._known(data, "sam2_video config"))

    def to_dict(self) -> dict[str, Any]:
        out = _lists(dataclasses.asdict(self))
        out["rope_parameters"] = {"rope_type": "axial", "rope_theta": out.pop("memory_attention_rope_theta")}
        return out


@dataclass(frozen=True)
class Sam2Config(_ConfigBase):
    """The SAM 2 image model: vision encoder, prompt encoder and mask decoder."""

    vision_config: VisionConfig = field(default_factory=VisionConfig)
    prompt_encoder_config: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    mask_decoder_config: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    video_config: VideoConfig = field(default_factory=VideoConfig)  # used by Sam2VideoModel only

    def __post_init__(self):
        vc, pc, mc = self.vision_config, self.prompt_encoder_config, self.mask_decoder_config
        if not (vc.fpn_hidden_size == pc.hidden_size == mc.hidden_size):
            raise ValueError("fpn_hidden_size, prompt encoder and mask decoder hidden sizes must agree")
        if vc.backbone_config.image_size != (pc.image_size, pc.image_size):
            raise ValueError("the backbone and the prompt encoder must use the same square image size")

    def check_video(self) -> None:
        """Raise if ``video_config`` does not fit the image model (checked when a video model is built: the image
        model ignores ``video_config``, so an image-only config may keep the full-size defaults)."""
        vc, v = self.vision_config, self.video_config
        if v.image_size != self.prompt_encoder_config.image_size:
            raise ValueError("video_config.image_size must equal the prompt encoder's image_size")
        widths = {
            "memory_attention_hidden_size": v.memory_attention_hidden_size,
            "memory_encoder_hidden_size": v.memory_encoder_hidden_size,
            "mask_downsampler_embed_dim": v.mask_downsampler_embed_dim,
            "memory_fuser_embed_dim": v.memory_fuser_embed_dim,
        }
        wrong = sorted(k for k, w in widths.items() if w != vc.fpn_hidden_size)
        if wrong:
            raise ValueError(f"video_config {wrong} must equal fpn_hidden_size {vc.fpn_hidden_size}")
        grid = self.prompt_encoder_config.image_embedding_size
        if v.memory_attention_rope_feat_sizes != (grid, grid):
            raise ValueError(f"video_config.memory_attention_rope_feat_sizes must be the {grid}x{grid} embedding grid")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sam2Config:
        """Read a transformers ``config.json`` (``sam2`` or ``sam2_video``) or our own ``to_dict`` output."""
        model_type = data.get("model_type", "sam2")
        if model_type not in ("sam2", "sam2_video"):
            raise ValueError(f"not a SAM 2 config: model_type {model_type!r}")
        missing = [k for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config") if k not in data]
        if missing:
            raise ValueError(f"SAM 2 config lacks {missing}")
        subs = ("vision_config", "prompt_encoder_config", "mask_decoder_config")
        video = {k: v for k, v in data.items() if k not in subs and k not in cls._IGNORED_KEYS}
        return cls(  # an image model's config.json has no video fields: the defaults (sam2.1, 1024 px) then
            vision_config=VisionConfig.from_dict(data["vision_config"]),
            prompt_encoder_config=PromptEncoderConfig.from_dict(data["prompt_encoder_config"]),
            mask_decoder_config=MaskDecoderConfig.from_dict(data["mask_decoder_config"]),
            video_config=VideoConfig.from_dict(video),
        )

    @classmethod
    def from_json_file(cls, path) -> Sam2Config:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """A transformers-style ``config.json`` dict (lists, ``model_type`` on every sub-config, the video fields at
        the top level as in ``Sam2VideoConfig``)."""
        out = _lists(dataclasses.asdict(self))
        del out["video_config"]
        out.update(self.video_config.to_dict())  # transformers keeps the video fields at the top level
        out["model_type"] = "sam2"
        out["vision_config"]["model_type"] = "sam2_vision_model"
        out["vision_config"]["backbone_config"]["model_type"] = "sam2_hiera_det_model"
        out["prompt_encoder_config"]["model_type"] = "sam2_prompt_encoder"
        out["mask_decoder_config"]["model_type"] = "sam2_mask_decoder"
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _preset(
    embed_dims: tuple[int, int, int, int],
    heads: tuple[int, int, int, int],
    blocks: tuple[int, int, int, int],
    global_blocks: tuple[int, int, int],
    windows: tuple[int, int, int, int] = (8, 4, 14, 7),
    background: tuple[int, int] = (7, 7),
) -> Sam2Config:
    backbone = HieraConfig(
        hidden_size=embed_dims[0],
        embed_dim_per_stage=embed_dims,
        num_attention_heads_per_stage=heads,
        blocks_per_stage=blocks,
        global_attention_blocks=global_blocks,
        window_size_per_stage=windows,
        window_positional_embedding_background_size=background,
    )
    return Sam2Config(
        vision_config=VisionConfig(backbone_config=backbone, backbone_channel_list=tuple(reversed(embed_dims)))
    )


# The image path of sam2 and sam2.1 is the same architecture; the releases differ in weights and in two video
# options (``VIDEO_RELEASES``). A size's preset is the sam2.1 one.
MODEL_SIZES: dict[str, Sam2Config] = {
    "tiny": _preset((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 7, 2), (5, 7, 9)),
    "small": _preset((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 11, 2), (7, 10, 13)),
    "base_plus": _preset((112, 224, 448, 896), (2, 4, 8, 16), (2, 3, 16, 3), (12, 16, 20), background=(14, 14)),
    "large": _preset((144, 288, 576, 1152), (2, 4, 8, 16), (2, 6, 36, 4), (23, 33, 43), windows=(8, 4, 16, 8)),
}

# The video options of each release (official yaml: sam2.1 turns on no_obj_embed_spatial, add_tpos_enc_to_obj_ptrs,
# proj_tpos_enc_in_obj_ptrs and use_signed_tpos_enc_to_obj_ptrs; sam2 has them off). Every size shares them.
VIDEO_RELEASES: dict[str, VideoConfig] = {
    "sam2": VideoConfig(
        enable_occlusion_spatial_embedding=False, enable_temporal_pos_encoding_for_object_pointers=False
    ),
    "sam2.1": VideoConfig(),
}

_HUB_SIZE_NAMES = {"tiny": "tiny", "small": "small", "base_plus": "base-plus", "large": "large"}

# Registry: checkpoint name -> config. Hub repo ids and the short names of the original .pt files.
CHECKPOINTS: dict[str, Sam2Config] = {}
for _size, _cfg in MODEL_SIZES.items():
    for _release, _video in VIDEO_RELEASES.items():
        _release_cfg = _cfg if _video == _cfg.video_config else dataclasses.replace(_cfg, video_config=_video)
        CHECKPOINTS[f"facebook/{_release}-hiera-{_HUB_SIZE_NAMES[_size]}"] = _release_cfg
        CHECKPOINTS[f"{_release}_hiera_{_size}"] = _release_cfg


def get_config(name: str) -> Sam2Config:
    """The config of a checkpoint name (``facebook/sam2.1-hiera-tiny``, ``sam2.1_hiera_tiny``) or a size (``tiny``,
    the sam2.1 release)."""
    if name in MODEL_SIZES:
        return MODEL_SIZES[name]
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    raise KeyError(f"unknown SAM 2 checkpoint {name!r}; known: {sorted(CHECKPOINTS)} or a size {sorted(MODEL_SIZES)}")
