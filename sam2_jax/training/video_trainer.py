"""Fine-tuning SAM 2's video model on clips: ``VideoTrainer`` (a ``Trainer`` whose step is ``video_step``'s).

In: a ``Sam2VideoModel`` and its full param tree (image and video tensors), the hyperparameters of
``step.make_optimizer`` and ``video_step.make_video_train_step`` (``trainable`` "memory" (default),
"decoder+memory" or "all"; ``num_frames`` T; the official ``VideoPromptSettings`` by name in ``official``), and
batches of B clips as ``clip_loader`` yields them (grain, through ``loader.DataLoader`` with ``ClipBatches``):
  pixel_values   (T, B, S, S, 3) float32 (``Sam2Processor(S).preprocess_image`` of each frame)
  masks          (T, B, O, S, S) bool (``loader.resize_masks`` of each frame's objects to S, O = max_objects,
                 padding objects all-False); valid (B, O) bool
  video (B,) int64 (dataset indices), frame_indices (T, B) int64
Clips are ``video_sampling.VideoClipSource``'s: the k-th batch of epoch e (grain's order, ``batches_per_epoch``
a pass over the videos) samples clip ``e * len(source) + i`` of video i, so every epoch draws new clips.

Frozen image encoder ("memory", "decoder+memory"): ``Sam2VideoModel.frame_features`` runs once per (video, frame);
the three levels are kept on the host in an ``EmbeddingCache`` keyed by (video, frame) (``cache_bytes``); a batch
whose frames are all cached skips the encoder, otherwise the whole clip batch is encoded and the missing frames
stored. With "all" the step encodes pixel_values itself. One device (``jax.devices()[0]``; no data parallelism).

Out: what ``Trainer`` writes (``fit``, ``save``, ``resume``, ``checkpoint.py``): OUT/config.json +
flax_params.safetensors (the FULL video param tree, every tensor kept: ``sam2_jax.load(OUT)``,
``Sam2VideoPredictor.from_pretrained(OUT)``), metrics.jsonl, curves.png, orbax checkpoints of the trained leaves,
optimizer state, loader state and settings (a resume with other settings raises ``ValueError`` naming them; a
resumed run ends with the uninterrupted run's params). Step s uses the key ``fold_in(PRNGKey(seed), s - 1)``.
``evaluate(params, loader) -> mIoU``: the training forward with one click on frame 0 (no box, no correction, no
other conditioning frame), the masks of frames 1.. tracked from memory; IoU of each frame's mask (logits > 0) at
S x S, mean over frames and valid objects, then over clips.
"""

from __future__ import annotations

import dataclasses
import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .step import make_optimizer, make_schedule
from .trainer import Trainer, base_hparams
from .video_prompts import VideoPromptSettings, sample_plan
from .video_step import MOSE_LOSS, Caller, clip_frame_features, clip_loss, make_video_train_step, video_training_model

VIDEO_TRAINABLE = ("memory", "decoder+memory", "all")
EVAL_SETTINGS = dict(prob_to_use_pt_input_for_train=1.0, prob_to_use_box_input_for_train=0.0,
                     num_frames_to_correct_for_train=1, rand_frames_to_correct_for_train=False,
                     num_init_cond_frames_for_train=1, rand_init_cond_frames_for_train=False,
                     add_all_frames_to_correct_as_cond=False, num_correction_pt_per_frame=0)  # fmt: skip
__all__ = ["ClipBatches", "EVAL_SETTINGS", "VIDEO_TRAINABLE", "VideoTrainer", "clip_loader"]


class ClipBatches:
    """(k, the k-th batch's video indices) -> a clip batch (module docstring); picklable for loader workers."""

    def __init__(self, source, image_size: int, max_objects: int, batches_per_epoch: int):
        from ..processing.processor import Sam2Processor

        self.source, self.size, self.max_objects, self.per_epoch = source, image_size, max_objects, batches_per_epoch
        self.processor = Sam2Processor(image_size)

    def clip(self, j: int):
        from .loader import resize_masks

        video, s = self.source.sample(j)
        c = self.source.ds.clip(video, s.frame_indices, s.obj_ids[: self.max_objects])
        pixels = np.stack([self.processor.preprocess_image(f, f"{c.name} frame {t}")[0]
                           for f, t in zip(c.frames, c.frame_indices, strict=True)])  # fmt: skip
        masks = np.zeros((len(c.frames), self.max_objects, self.size, self.size), bool)
        k = c.masks.shape[1]
        for t, m in enumerate(c.masks):
            masks[t, :k] = resize_masks(m, self.size)
        return pixels, masks, np.arange(self.max_objects) < k, video, c.frame_indices

    def __call__(self, k: int, indices) -> dict:
        epoch = k // max(self.per_epoch, 1)
        rows = [self.clip(epoch * len(self.source) + int(i)) for i in indices]
        pixels, masks, valid, video, frames = zip(*rows, strict=True)
        return {
            "pixel_values": np.stack(pixels, axis=1),
            "masks": np.stack(masks, axis=1),
            "valid": np.stack(valid),
            "video": np.asarray(video, np.int64),
            "frame_indices": np.stack(frames, axis=1).astype(np.int64),
        }


def clip_loader(source, batch_size: int, image_size: int, max_objects: int = 3, seed: int = 0, state=None,
                shuffle: bool = True, epochs=None, **kwargs):  # fmt: skip
    """A ``DataLoader`` of clip batches of ``source`` (a ``VideoClipSource``); ``kwargs``: its other options."""
    from .loader import DataLoader

    prepare = ClipBatches(source, image_size, max_objects, len(source) // batch_size)
    return DataLoader(source, batch_size, seed=seed, state=state, shuffle=shuffle, epochs=epochs, prepare=prepare,
                      **kwargs)  # fmt: skip


@functools.lru_cache(maxsize=4)
def _compiled(model, trainable, lr, steps, warmup, weight_decay, clip, num_frames, settings, dtype, loss_items, remat):
    """The jitted functions of a configuration, shared by its trainers (a resuming one does not compile again)."""
    optimizer = make_optimizer(lr, steps, warmup, weight_decay, clip)
    loss_kwargs = dict(loss_items)
    train = make_video_train_step(model, optimizer, trainable, num_frames, settings, dtype, loss_kwargs, remat)
    call = Caller(video_training_model(model, dtype))
    eval_settings = dataclasses.replace(VideoPromptSettings(), **EVAL_SETTINGS)

    def evaluate(params, features, masks, valid):
        t, b, o = masks.shape[:3]
        plan = sample_plan(jax.random.PRNGKey(0), t, eval_settings)
        gt = masks.reshape(t, b * o, *masks.shape[3:])
        _, iou = clip_loss(call, params, features, gt, valid.reshape(-1), plan, eval_settings,
                           {**MOSE_LOSS, **loss_kwargs}, False)  # fmt: skip
        return iou

    return SimpleNamespace(
        optimizer=optimizer,
        lr=make_schedule(lr, steps, warmup),
        train=train,
        features=jax.jit(lambda p, x: clip_frame_features(call.net, p, x)),
        eval=jax.jit(evaluate),
    )


class VideoTrainer(Trainer):
    """See the module docstring. ``VideoTrainer.params`` is the full video param tree."""

    def __init__(self, model, params, *, trainable: str = "memory", lr: float = 5e-6, steps: int = 1000,
                 warmup: int = 0, weight_decay: float = 0.1, clip: float | None = 0.1, batch_size: int = 1,
                 num_frames: int = 8, dtype=None, seed: int = 0, cache_bytes: int = 4 << 30,
                 loss_kwargs: dict | None = None, remat: bool = True, device=None, **official):  # fmt: skip
        if trainable not in VIDEO_TRAINABLE:
            raise ValueError(f"trainable must be one of {VIDEO_TRAINABLE} for the video model, got {trainable!r}")
        if steps < 1 or batch_size < 1 or num_frames < 1:
            raise ValueError(f"steps, batch_size and num_frames must be >= 1, got {steps}, {batch_size}, {num_frames}")
        settings = dataclasses.replace(VideoPromptSettings(), **official)
        self.model, self.config = model, model.config
        self.devices = [device or jax.devices()[0]]
        self.mesh = Mesh(np.array(self.devices), ("data",))
        self._repl = self._data = NamedSharding(self.mesh, P())
        self.multihost, self.is_writer, self.rows = False, True, (0, int(batch_size))
        self.trainable, self.steps, self.batch_size = trainable, int(steps), int(batch_size)
        self.num_frames = int(num_frames)
        self.hparams = dict(
            **base_hparams(trainable, lr, steps, warmup, weight_decay, clip, batch_size, dtype, seed, loss_kwargs),
            num_frames=int(num_frames),
            remat=bool(remat),
            settings=dataclasses.asdict(settings),
        )
        fns = _compiled(model, trainable, float(lr), int(steps), int(warmup), float(weight_decay),
                        None if clip is None else float(clip), int(num_frames), settings,
                        None if dtype is None else jnp.dtype(dtype), tuple(sorted((loss_kwargs or {}).items())),
                        bool(remat))  # fmt: skip
        self.optimizer, self._lr, self._train, self._step = fns.optimizer, fns.lr, fns.train, fns.train.step
        self._features, self._eval = fns.features, fns.eval
        self._start(params, params, cache_bytes, seed)  # the whole video tree trains (its frozen part masked)

    def data_loader(self, source, image_size: int | None = None, max_objects: int = 3, **kwargs):
        """``clip_loader`` of this trainer's batch size over ``source`` (a ``VideoClipSource``)."""
        size = image_size or self.config.prompt_encoder_config.image_size
        return clip_loader(source, self.batch_size, size, max_objects, **kwargs)

    def frame_features(self, batch, params=None, cache: bool = True) -> tuple:
        """The batch's three (T, B, ...) feature levels, from the cache where every frame is there."""
        keys = None
        if cache and "video" in batch:
            video, frames = np.asarray(batch["video"]), np.asarray(batch["frame_indices"])
            keys = [[(int(video[b]), int(frames[t, b])) for b in range(len(video))] for t in range(len(frames))]
            rows = [[self.cache.get(k) for k in row] for row in keys]
            if all(r is not None for row in rows for r in row):
                return tuple(np.stack([np.stack([r[i] for r in row]) for row in rows]) for i in range(3))
        pixels = jnp.asarray(np.asarray(batch["pixel_values"], np.float32))
        feats = self._features(self.params if params is None else params, pixels)
        if keys is not None:
            host = [np.asarray(f) for f in jax.device_get(feats)]
            for t, row in enumerate(keys):
                for b, k in enumerate(row):
                    self.cache.put(k, tuple(h[t, b] for h in host))
        return feats

    def device_batch(self, batch) -> dict:
        masks = np.asarray(batch["masks"])
        if masks.shape[:2] != (self.num_frames, self.batch_size):
            raise ValueError(f"a batch of {masks.shape[1]} clips of {masks.shape[0]} frames, the trainer was built "
                             f"for {self.batch_size} of {self.num_frames}")  # fmt: skip
        out = {"masks": masks, "valid": np.asarray(batch.get("valid", np.ones(masks.shape[1:3], bool)), bool)}
        if self.trainable == "all":
            out["pixel_values"] = np.asarray(batch["pixel_values"], np.float32)
        else:
            out["frame_features"] = self.frame_features(batch)
        return jax.device_put(out, self._repl)

    def evaluate(self, params=None, data=None, **_) -> float:
        """mIoU over ``data``'s clips (batches as ``clip_loader`` yields) from one click on frame 0 (module
        docstring); features not cached (another dataset's indices)."""
        params = self.params if params is None else params
        total, count = 0.0, 0
        for batch in data:
            feats = self.frame_features(batch, params, cache=False)
            masks, valid = jnp.asarray(batch["masks"]), jnp.asarray(batch["valid"], bool)
            total += float(self._eval(params, feats, masks, valid)) * masks.shape[1]
            count += masks.shape[1]
        if not count:
            raise ValueError("no clip to evaluate")
        return total / count
