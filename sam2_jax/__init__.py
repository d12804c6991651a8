"""sam2-jax: SAM 2 / 2.1 image and video segmentation in JAX/Flax, loaded from the official checkpoints."""

from .checkpoints import load, load_params, save_converted
from .config import (
    CHECKPOINTS,
    MODEL_SIZES,
    HieraConfig,
    MaskDecoderConfig,
    PromptEncoderConfig,
    Sam2Config,
    VideoConfig,
    VisionConfig,
    get_config,
)
from .frontends.image.automatic_mask_generator import Sam2AutomaticMaskGenerator
from .frontends.image.image_predictor import Sam2ImagePredictor
from .frontends.image.streaming import StreamSummary, segment_stream
from .frontends.image.visualize import overlay
from .frontends.video.batch import VideoBatchTracker
from .frontends.video.predictor import Sam2VideoPredictor
from .frontends.video.session import Sam2VideoSessionModel
from .modeling.implementation import Implementation
from .modeling.sam2_model import Sam2ImageSegmentationOutput, Sam2Model, init_params, param_shapes
from .modeling.sam2_video_model import Sam2VideoModel
from .processing.processor import Sam2Processor
from .processing.video.frames import VideoFrames
from .processing.video.processor import Sam2VideoProcessor
from .tracking.session_state import Sam2VideoInferenceSession, Sam2VideoSegmentationOutput

__all__ = [
    "CHECKPOINTS",
    "MODEL_SIZES",
    "HieraConfig",
    "MaskDecoderConfig",
    "PromptEncoderConfig",
    "Sam2Config",
    "VideoConfig",
    "VisionConfig",
    "get_config",
    "Implementation",
    "Sam2VideoModel",
    "Sam2ImageSegmentationOutput",
    "Sam2Model",
    "init_params",
    "param_shapes",
    "load",
    "load_params",
    "save_converted",
    "Sam2ImagePredictor",
    "Sam2VideoPredictor",
    "Sam2VideoProcessor",
    "Sam2VideoSessionModel",
    "Sam2VideoInferenceSession",
    "Sam2VideoSegmentationOutput",
    "VideoBatchTracker",
    "VideoFrames",
    "Sam2AutomaticMaskGenerator",
    "Sam2Processor",
    "overlay",
    "segment_stream",
    "StreamSummary",
]
__version__ = "0.1.0"
