"""``Sam2Config``: the image model's three sub-configs and the video options, read from and written to a
transformers ``config.json``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .base import ConfigBase, to_lists
from .image import MaskDecoderConfig, PromptEncoderConfig, VisionConfig
from .video import VideoConfig


@dataclass(frozen=True)
class Sam2Config(ConfigBase):
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

    def at_image_size(self, size: int) -> Sam2Config:
        """This model run at ``size`` x ``size`` px input (a multiple of 16): the backbone's image size and
        feature grids (size / 4, / 8, / 16), the prompt encoder's and the video memory's sizes. The parameter
        shapes do not depend on it, so a checkpoint's params load into either."""
        if size == self.prompt_encoder_config.image_size:
            return self
        if size < 16 or size % 16:
            raise ValueError(f"image size must be a positive multiple of 16, got {size}")
        grid, vc = size // 16, self.vision_config
        vision = dataclasses.replace(
            vc,
            backbone_config=dataclasses.replace(vc.backbone_config, image_size=(size, size)),
            backbone_feature_sizes=((grid * 4, grid * 4), (grid * 2, grid * 2), (grid, grid)),
        )
        return dataclasses.replace(
            self,
            vision_config=vision,
            prompt_encoder_config=dataclasses.replace(self.prompt_encoder_config, image_size=size),
            video_config=dataclasses.replace(
                self.video_config, image_size=size, memory_attention_rope_feat_sizes=(grid, grid)
            ),
        )

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
        out = to_lists(dataclasses.asdict(self))
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
