"""Fine-tuning SAM 2 with optax: the official losses (``losses``), training prompt simulation (``prompts``), a
jitted train step (``step``), datasets of instance masks (``data``: PNG directories, ``coco``: COCO JSON) with a
deterministic resumable loader on grain (``loader``), video datasets (``video_data``: DAVIS / YouTube-VOS, SA-V,
the page's video records; read by ``video_sources``) with the official clip sampler (``video_sampling``),
generated shape datasets (``synthetic``; shapes moving over video frames, ``synthetic_video``), per-param
learning-rate scales (``lr_scales``: a lower encoder rate, layer-wise decay over the Hiera trunk), and the
data-parallel ``Trainer`` (``trainer``: its jitted functions ``jitted``, ``embedding_cache``, ``evaluation``,
multi-host ``multihost``) with its resumable run directory (``train_state``, ``checkpoint``: orbax checkpoints)
and its video counterpart ``VideoTrainer`` (``video_trainer``: clips through ``video_step``'s train step)."""

from .data import Example, SegmentationDataset
from .embedding_cache import EmbeddingCache
from .evaluation import center_clicks
from .loader import DataLoader
from .losses import WEIGHTS, StepOutput, dice_loss, focal_loss, iou_loss, multistep_loss, object_score_loss
from .lr_scales import lr_scales, scale_by_lr_scales
from .prompts import append_points, mask_to_box, sample_box, sample_error_points, sample_initial_prompt
from .step import TrainStep, make_optimizer, make_train_step, trainable_labels
from .synthetic import make_shapes_example, write_coco, write_shapes_dataset
from .train_state import RunDirectory
from .trainer import Trainer
from .video_data import VideoClip, VideoDataset
from .video_prompts import ClipPlan, VideoPromptSettings, sample_plan
from .video_sampling import ClipSample, VideoClipSource, sample_clip
from .video_step import make_video_train_step
from .video_trainer import VideoTrainer, clip_loader

__all__ = [
    "EmbeddingCache",
    "RunDirectory",
    "Trainer",
    "center_clicks",
    "DataLoader",
    "Example",
    "SegmentationDataset",
    "make_shapes_example",
    "write_coco",
    "write_shapes_dataset",
    "WEIGHTS",
    "StepOutput",
    "TrainStep",
    "append_points",
    "dice_loss",
    "focal_loss",
    "iou_loss",
    "lr_scales",
    "make_optimizer",
    "make_train_step",
    "mask_to_box",
    "multistep_loss",
    "object_score_loss",
    "sample_box",
    "sample_error_points",
    "sample_initial_prompt",
    "scale_by_lr_scales",
    "trainable_labels",
    "ClipSample",
    "VideoClip",
    "VideoClipSource",
    "VideoDataset",
    "sample_clip",
    "ClipPlan",
    "VideoPromptSettings",
    "make_video_train_step",
    "VideoTrainer",
    "clip_loader",
    "sample_plan",
]
