"""One preset per model size and release, and ``CHECKPOINTS``, the one registry from a checkpoint name to its
config."""

from __future__ import annotations

import dataclasses

from .image import HieraConfig, VisionConfig
from .sam2 import Sam2Config
from .video import VideoConfig


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
