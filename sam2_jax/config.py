"""Frozen configuration dataclasses for the SAM 2 image model, with one preset per checkpoint.

Field names follow transformers' ``Sam2HieraDetConfig`` / ``Sam2VisionConfig`` / ``Sam2PromptEncoderConfig`` /
``Sam2MaskDecoderConfig`` so that a transformers ``config.json`` reads field for field. Lists become tuples
so that every config is hashable and can be a static argument of ``jax.jit``.

``CHECKPOINTS`` is the single registry from a checkpoint name (``facebook/sam2.1-hiera-tiny``...) to its
config; ``get_config`` looks names up in it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "HieraConfig",
    "VisionConfig",
    "PromptEncoderConfig",
    "MaskDecoderConfig",
    "Sam2Config",
    "CHECKPOINTS",
    "MODEL_SIZES",
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
class Sam2Config(_ConfigBase):
    """The SAM 2 image model: vision encoder, prompt encoder and mask decoder."""

    vision_config: VisionConfig = field(default_factory=VisionConfig)
    prompt_encoder_config: PromptEncoderConfig = field(default_factory=PromptEncoderConfig)
    mask_decoder_config: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)

    def __post_init__(self):
        vc, pc, mc = self.vision_config, self.prompt_encoder_config, self.mask_decoder_config
        if not (vc.fpn_hidden_size == pc.hidden_size == mc.hidden_size):
            raise ValueError("fpn_hidden_size, prompt encoder and mask decoder hidden sizes must agree")
        if vc.backbone_config.image_size != (pc.image_size, pc.image_size):
            raise ValueError("the backbone and the prompt encoder must use the same square image size")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sam2Config:
        """Read a transformers ``config.json`` (``sam2`` or ``sam2_video``) or our own ``to_dict`` output."""
        model_type = data.get("model_type", "sam2")
        if model_type not in ("sam2", "sam2_video"):
            raise ValueError(f"not a SAM 2 config: model_type {model_type!r}")
        missing = [k for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config") if k not in data]
        if missing:
            raise ValueError(f"SAM 2 config lacks {missing}")
        return cls(
            vision_config=VisionConfig.from_dict(data["vision_config"]),
            prompt_encoder_config=PromptEncoderConfig.from_dict(data["prompt_encoder_config"]),
            mask_decoder_config=MaskDecoderConfig.from_dict(data["mask_decoder_config"]),
        )

    @classmethod
    def from_json_file(cls, path) -> Sam2Config:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        """A transformers-style ``config.json`` dict (lists, ``model_type`` on every sub-config)."""
        out = _lists(dataclasses.asdict(self))
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


# The image path of sam2 and sam2.1 is the same architecture; the releases differ in weights only.
MODEL_SIZES: dict[str, Sam2Config] = {
    "tiny": _preset((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 7, 2), (5, 7, 9)),
    "small": _preset((96, 192, 384, 768), (1, 2, 4, 8), (1, 2, 11, 2), (7, 10, 13)),
    "base_plus": _preset((112, 224, 448, 896), (2, 4, 8, 16), (2, 3, 16, 3), (12, 16, 20), background=(14, 14)),
    "large": _preset((144, 288, 576, 1152), (2, 4, 8, 16), (2, 6, 36, 4), (23, 33, 43), windows=(8, 4, 16, 8)),
}

_HUB_SIZE_NAMES = {"tiny": "tiny", "small": "small", "base_plus": "base-plus", "large": "large"}

# Registry: checkpoint name -> config. Hub repo ids and the short names of the original .pt files.
CHECKPOINTS: dict[str, Sam2Config] = {}
for _size, _cfg in MODEL_SIZES.items():
    for _release in ("sam2", "sam2.1"):
        CHECKPOINTS[f"facebook/{_release}-hiera-{_HUB_SIZE_NAMES[_size]}"] = _cfg
        CHECKPOINTS[f"{_release}_hiera_{_size}"] = _cfg


def get_config(name: str) -> Sam2Config:
    """The config of a checkpoint name (``facebook/sam2.1-hiera-tiny``, ``sam2.1_hiera_tiny``) or a size (``tiny``)."""
    if name in MODEL_SIZES:
        return MODEL_SIZES[name]
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    raise KeyError(f"unknown SAM 2 checkpoint {name!r}; known: {sorted(CHECKPOINTS)} or a size {sorted(MODEL_SIZES)}")
