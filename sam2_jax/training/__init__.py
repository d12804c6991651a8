"""Fine-tuning SAM 2 with optax: the official losses (``losses``), training prompt simulation (``prompts``) and a
jitted train step (``step``)."""

from .losses import WEIGHTS, StepOutput, dice_loss, focal_loss, iou_loss, multistep_loss, object_score_loss
from .prompts import append_points, mask_to_box, sample_box, sample_error_points, sample_initial_prompt
from .step import TrainStep, make_optimizer, make_train_step, trainable_labels

__all__ = [
    "WEIGHTS",
    "StepOutput",
    "TrainStep",
    "append_points",
    "dice_loss",
    "focal_loss",
    "iou_loss",
    "make_optimizer",
    "make_train_step",
    "mask_to_box",
    "multistep_loss",
    "object_score_loss",
    "sample_box",
    "sample_error_points",
    "sample_initial_prompt",
    "trainable_labels",
]
