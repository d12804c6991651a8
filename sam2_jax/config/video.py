"""The video model's options (``VideoConfig``): the top-level fields of transformers' ``Sam2VideoConfig`` plus the
official-only options transformers hard-codes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import ConfigBase, as_pair, to_lists


@dataclass(frozen=True)
class VideoConfig(ConfigBase):
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
        object.__setattr__(self, "memory_attention_rope_feat_sizes", as_pair(self.memory_attention_rope_feat_sizes))
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
        out = to_lists(dataclasses.asdict(self))
        out["rope_parameters"] = {"rope_type": "axial", "rope_theta": out.pop("memory_attention_rope_theta")}
        return out
