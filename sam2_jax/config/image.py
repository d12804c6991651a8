"""The image model's sub-configs, field for field transformers' ``Sam2HieraDetConfig``, ``Sam2VisionConfig``,
``Sam2PromptEncoderConfig`` and ``Sam2MaskDecoderConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .base import ConfigBase, as_pair, to_tuple


@dataclass(frozen=True)
class HieraConfig(ConfigBase):
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
            object.__setattr__(self, name, as_pair(getattr(self, name)))
        for name in (
            "window_positional_embedding_background_size",
            "blocks_per_stage",
            "embed_dim_per_stage",
            "num_attention_heads_per_stage",
            "window_size_per_stage",
            "global_attention_blocks",
        ):
            object.__setattr__(self, name, to_tuple(getattr(self, name)))
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
class VisionConfig(ConfigBase):
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
            object.__setattr__(self, name, to_tuple(getattr(self, name)))
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
class PromptEncoderConfig(ConfigBase):
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
class MaskDecoderConfig(ConfigBase):
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
