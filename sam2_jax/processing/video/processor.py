"""``Sam2VideoProcessor``: transformers' video processor in NumPy (channels-last), making and feeding video sessions.

processor = Sam2VideoProcessor(image_size=S)
processor(images=frame)  -> {"pixel_values": (B, S, S, 3) float32, "original_sizes": (B, 2) int64}  (as
                            ``Sam2Processor``: one streamed frame at a time)
session = processor.init_video_session(video=None | frames)
      frames: an (N, H, W, 3) uint8 array, a list of (H, W, 3) arrays / PIL images (resized and normalised like
      ``processor(images=...)``, lazily, frame by frame), or a ``VideoFrames`` at S px used as is (e.g.
      ``VideoFrames.from_pixel_values``). No video: a streaming session, frames are given to the model one by
      one. transformers' device / dtype arguments (inference_device, inference_state_device, processing_device,
      video_storage_device, dtype) are accepted and do nothing: JAX places arrays itself and the model's dtype
      is chosen when loading it.
processor.add_inputs_to_inference_session(session, frame_idx, obj_ids, input_points=None, input_labels=None,
      input_boxes=None, input_masks=None, original_size=None, clear_old_inputs=True)
      Prompts in original video pixels, nested like transformers': points [image][object][point][x, y],
      labels [image][object][point] (1 positive, 0 negative), boxes [image][box][x1, y1, x2, y2], one image, one
      object (or box) per id in ``obj_ids``; points of objects added in one call are padded to the same count
      with label -10, as transformers pads them. A box comes first as two corner points (labels 2, 3). Masks:
      one (H, W) mask per object id (or leading axes of size 1). ``original_size=(H, W)`` is required on the
      first prompt of a streaming session. Bad input raises a one-line ValueError / TypeError before the
      session is changed.
processor.post_process_masks(masks, original_sizes, binarize=True, ...)  (``Sam2Processor``'s): per-image
      (O, 1, S/4, S/4) logits, e.g. ``[out.pred_masks]``, -> per image (O, 1, H, W)
"""

from __future__ import annotations

import functools
import numbers
import os
from typing import Any

import numpy as np

from ...tracking.session_state import Sam2VideoInferenceSession
from .. import prompts
from ..images import to_rgb_uint8
from ..processor import Sam2Processor, size_pairs
from .frames import VideoFrames
from .mask_inputs import mask_prompt

BOX_LABELS = np.asarray(prompts.BOX_CORNER_LABELS, np.int32)


@functools.lru_cache(maxsize=16)
def _fixed_point_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, int]:
    """torchvision's antialiased bilinear taps for one axis: (n_out, K) input indices, (n_out, K) int32 weights
    scaled by 2**precision (rounded half away from zero), and the precision (the most bits keeping weights in int16).
    The weights of a row sum to about 2**precision <= 2**22, so 255 times them fits in int32. Cached per size."""
    scale = n_in / n_out
    support, inv = (scale, 1.0 / scale) if scale >= 1.0 else (1.0, 1.0)
    rows = []
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        k = np.clip(1.0 - np.abs((np.arange(lo, hi) - center + 0.5) * inv), 0.0, None)
        rows.append((lo, k / k.sum() if k.sum() != 0.0 else k))
    width = max(len(k) for _, k in rows)
    index = np.zeros((n_out, width), np.int64)
    weight = np.zeros((n_out, width))
    for i, (lo, k) in enumerate(rows):
        index[i] = np.minimum(lo + np.arange(width), n_in - 1)
        weight[i, : len(k)] = k
    precision = 0
    while precision < 22 and int(0.5 + weight.max() * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    v = weight * (1 << precision)
    return index, np.where(v < 0, v - 0.5, v + 0.5).astype(np.int32), precision


def _resize_axis(x: np.ndarray, n_out: int, axis: int) -> np.ndarray:
    index, weight, precision = _fixed_point_taps(x.shape[axis], n_out)
    x = np.moveaxis(x, axis, 0).astype(np.int32)  # (n_in, ..., C)
    acc = np.full((n_out, *x.shape[1:]), 1 << (precision - 1), np.int32)
    for k in range(index.shape[1]):
        acc += x[index[:, k]] * weight[:, k].reshape(-1, *([1] * (x.ndim - 1)))
    return np.moveaxis(np.clip(acc >> precision, 0, 255).astype(np.uint8), 0, axis)


def resize_like_torchvision(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, as torchvision's antialiased bilinear resize of a uint8 image."""
    out = rgb if rgb.shape[1] == size else _resize_axis(rgb, size, 1)
    return out if rgb.shape[0] == size else _resize_axis(out, size, 0)


class Sam2VideoProcessor(Sam2Processor):
    """See the module docstring."""

    def preprocess_image(self, image: Any, where: str = "images[0]") -> tuple[np.ndarray, tuple[int, int]]:
        """One image -> ((S, S, 3) float32 pixels equal to transformers', (height, width))."""
        rgb = to_rgb_uint8(image, where)
        resized = resize_like_torchvision(rgb, self.image_size).astype(np.float32)
        return (resized - self.mean255) / self.std255, rgb.shape[:2]

    def _video(self, video: Any) -> VideoFrames:
        if isinstance(video, VideoFrames):
            if video.image_size != self.image_size:
                raise ValueError(f"the video's frames are prepared at {video.image_size} px, not {self.image_size}")
            return video
        if isinstance(video, (str, bytes, os.PathLike)):
            raise TypeError(
                "video must be decoded frames (an (N, H, W, 3) array or a list of images); for a directory of JPEG "
                "frames pass VideoFrames.from_directory(path, image_size) (the official predictor's resize)"
            )
        items = list(video) if not isinstance(video, np.ndarray) else video
        if isinstance(items, np.ndarray) and (items.ndim != 4 or items.shape[-1] != 3):
            raise ValueError(f"video must be an (N, H, W, 3) array of frames, got shape {items.shape}")
        if len(items) == 0:
            raise ValueError("the video has no frames")
        sizes = [self._frame_size(f, i) for i, f in enumerate(items[:1] if isinstance(items, np.ndarray) else items)]
        if len(set(sizes)) > 1:
            i = next(i for i, sz in enumerate(sizes) if sz != sizes[0])
            raise ValueError(f"video frame {i} is {sizes[i][1]}x{sizes[i][0]} (WxH) but frame 0 is "
                             f"{sizes[0][1]}x{sizes[0][0]}: all frames must have one size")  # fmt: skip
        height, width = sizes[0]

        def decode(i: int) -> np.ndarray:
            return self.preprocess_image(items[i], f"video frame {i}")[0]

        return VideoFrames(num_frames=len(items), video_height=height, video_width=width,
                           image_size=self.image_size, decode=decode)  # fmt: skip

    @staticmethod
    def _frame_size(frame, i: int) -> tuple[int, int]:
        if hasattr(frame, "size") and hasattr(frame, "mode"):  # PIL
            return frame.size[1], frame.size[0]
        shape = np.shape(frame)
        if len(shape) not in (2, 3):
            raise ValueError(f"video frame {i} must be an (H, W, 3) image, got shape {shape}")
        return int(shape[0]), int(shape[1])

    def init_video_session(
        self,
        video=None,
        inference_device=None,
        inference_state_device=None,
        processing_device=None,
        video_storage_device=None,
        max_vision_features_cache_size: int = 1,
        dtype=None,
    ):
        """A session for a whole video, or with ``video=None`` for frames streamed one by one (see the module
        docstring; the device and dtype arguments are transformers' and have no effect)."""
        frames = None if video is None else self._video(video)
        session = Sam2VideoInferenceSession(frames, max_vision_features_cache_size)
        session.image_size = self.image_size
        return session

    # ---- prompts --------------------------------------------------------------------------------------------------
    def add_inputs_to_inference_session(
        self,
        inference_session,
        frame_idx,
        obj_ids,
        input_points=None,
        input_labels=None,
        input_boxes=None,
        input_masks=None,
        original_size=None,
        clear_old_inputs: bool = True,
    ):
        """Store prompts for ``obj_ids`` on ``frame_idx``; the next model call on that frame consumes them."""
        s = inference_session
        if not isinstance(s, Sam2VideoInferenceSession):
            raise TypeError(f"expected a session from init_video_session(), got {type(s).__name__}")
        if s.image_size is not None and s.image_size != self.image_size:
            raise ValueError(f"the session's frames are {s.image_size} px but this processor makes {self.image_size}")
        t = s.check_frame(frame_idx)
        ids = [obj_ids] if isinstance(obj_ids, numbers.Integral) and not isinstance(obj_ids, bool) else obj_ids
        if not isinstance(ids, (list, tuple)) or not ids:
            raise TypeError(f"obj_ids must be an int or a non-empty list of ints, got {obj_ids!r}")
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                raise TypeError(f"obj_ids must be ints, got {i!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"obj_ids has repeated ids: {list(ids)}")
        if (input_points is None) != (input_labels is None):
            raise ValueError("points and labels must be provided together")
        if input_points is None and input_boxes is None and input_masks is None:
            raise ValueError("at least one of points, boxes, or masks must be provided as input")
        if input_masks is not None and (input_points is not None or input_boxes is not None):
            raise ValueError("masks cannot be provided together with points or boxes")
        if input_boxes is not None and not clear_old_inputs:
            raise ValueError("cannot add a box without clearing old inputs (a box must come before any point); "
                             "use clear_old_inputs=True")  # fmt: skip
        if original_size is not None:
            size = tuple(int(x) for x in size_pairs(original_size)[0])
        elif s.video_height is None:
            raise ValueError("original_size=(height, width) must be provided with the first prompts of a streaming "
                             "session")  # fmt: skip
        else:
            size = (int(s.video_height), int(s.video_width))

        if input_masks is not None:
            masks = input_masks if isinstance(input_masks, list) else [input_masks]
            if len(masks) != len(ids):
                raise ValueError(f"Number of object ids ({len(ids)}) does not match number of masks ({len(masks)})")
            prepared = []
            for j, m in enumerate(masks):
                m = np.asarray(m)
                if not 2 <= m.ndim <= 4 or any(d != 1 for d in m.shape[:-2]):
                    raise ValueError(f"input_masks[{j}] must be an (H, W) mask (leading axes of size 1), "
                                     f"got shape {m.shape}")  # fmt: skip
                prepared.append(mask_prompt(m.reshape(m.shape[-2:]), self.image_size))
            new_points = None
        else:
            new_points = self._point_inputs(size, ids, input_points, input_labels, input_boxes)

        # everything is checked: change the session
        s.video_height, s.video_width = size
        for j, obj_id in enumerate(ids):
            track = s.objects[s.obj_id_to_idx(obj_id)]
            if new_points is None:
                track.masks[t] = prepared[j]
                track.points.pop(t, None)
                continue
            coords, labels = new_points[j]
            if not clear_old_inputs and t in track.points:
                old_c, old_l = track.points[t]
                coords, labels = np.concatenate([old_c, coords]), np.concatenate([old_l, labels])
            track.points[t] = (coords, labels)
            track.masks.pop(t, None)
        s.obj_with_new_inputs = list(ids)
        return s

    def _point_inputs(self, size, ids, input_points, input_labels, input_boxes) -> list:
        """Per object (coords (N, 2) float32 in the model frame, labels (N,) int32), -10-padded across objects."""
        out = self.process_prompts([size], input_points, input_labels, input_boxes)
        n = len(ids)
        for key, what in (("input_points", "points"), ("input_labels", "labels"), ("input_boxes", "boxes")):
            if key in out and out[key].shape[1] != n:
                raise ValueError(f"Number of object ids ({n}) does not match number of {what} ({out[key].shape[1]})")
        coords = out.get("input_points", np.zeros((1, n, 0, 2), np.float32))[0]
        labels = out.get("input_labels", np.zeros((1, n, 0), np.int64))[0].astype(np.int32)
        real = labels != self.point_pad_value
        if not np.isin(labels[real], (0, 1)).all():
            raise ValueError(f"input_labels must be 1 (positive) or 0 (negative), got {sorted(set(labels[real]))}")
        if "input_boxes" in out:
            corners = out["input_boxes"][0].reshape(n, 2, 2)
            coords = np.concatenate([corners, coords], axis=1)
            labels = np.concatenate([np.broadcast_to(BOX_LABELS, (n, 2)), labels], axis=1)
        return [(coords[j].astype(np.float32), labels[j].astype(np.int32)) for j in range(n)]
