"""Frozen configuration dataclasses for the SAM 2 image and video models, with one preset per checkpoint.

Field names follow transformers' ``Sam2HieraDetConfig`` / ``Sam2VisionConfig`` / ``Sam2PromptEncoderConfig`` /
``Sam2MaskDecoderConfig`` and the top-level fields of ``Sam2VideoConfig`` (``VideoConfig``, held as
``Sam2Config.video_config`` and written back at the top level) so that a transformers ``config.json`` reads field
for field. Lists become tuples so that every config is hashable and can be a static argument of ``jax.jit``.

``CHECKPOINTS`` is the single registry from a checkpoint name (``facebook/sam2.1-hiera-tiny``...) to its
config; ``get_config`` looks names up in it.
"""

from .image import HieraConfig, MaskDecoderConfig, PromptEncoderConfig, VisionConfig
from .presets import CHECKPOINTS, MODEL_SIZES, VIDEO_RELEASES, get_config
from .sam2 import Sam2Config
from .video import VideoConfig

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
