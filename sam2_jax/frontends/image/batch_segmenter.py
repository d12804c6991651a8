"""Data-parallel segmentation over all local devices: image encoder + decoder with the batch split by device.

``BatchSegmenter(model, params, mode="sharded")`` uses ``jax.jit`` with a one-axis ``Mesh`` ("data"): the batch
is sharded along "data" and the params replicated (``NamedSharding(mesh, P())``). ``mode="pmap"`` is the classic
TPU recipe: params replicated once along a leading device axis and the batch reshaped to (devices, per-device).

In:  pixel_values (B, 1024, 1024, 3) and per-image prompts already padded to common shapes, as the processor
     returns them: input_points (B, P, N, 2), input_labels (B, P, N), input_boxes (B, P, 4), prompt_mask (B, P, N).
Out: NumPy ``iou_scores`` (B, P, M), ``pred_masks`` (B, P, M, 256, 256), ``object_score_logits`` (B, P, 1).

A batch that does not divide by the device count is padded (by repeating its last image and prompts) and the
padding is dropped from the results. Params are placed on the devices once, at construction, and reused.
Across hosts (``mode="sharded"``) the same code runs unchanged once ``jax.distributed.initialize()`` has been
called on every host: ``jax.devices()`` then lists every host's devices and the mesh spans them. Every host
calls the segmenter with the same global batch; each device takes its rows, and the results are gathered back
to every host. (On CPU, cross-host collectives need ``jax_cpu_collectives_implementation="gloo"``.) Hosts that
each read only their own images can build the global batch with ``global_batch``.

Threads: a ``BatchSegmenter`` holds only what it was built with (model, params on the devices, the compiled
function); calling it from several threads at once is safe.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ...modeling.sam2_model import Sam2Model

PROMPT_KEYS = ("input_points", "input_labels", "input_boxes", "prompt_mask")


def _pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    reps = np.repeat(x[-1:], size - x.shape[0], axis=0)
    return np.concatenate([x, reps], axis=0)


class BatchSegmenter:
    """Segment a batch of images with prompts across all local devices; see the module docstring.

    Thread-safe: a call keeps its state to itself, so threads may share one segmenter."""

    def __init__(
        self,
        model: Sam2Model,
        params: Any,
        mode: str = "sharded",
        devices: list | None = None,
        multimask_output: bool = True,
    ):
        if mode not in ("sharded", "pmap"):
            raise ValueError(f"mode must be 'sharded' or 'pmap', got {mode!r}")
        self.model = model
        self.mode = mode
        self.devices = list(devices or jax.devices())
        self.multimask_output = multimask_output
        forward = functools.partial(self._forward, model, multimask_output)
        if mode == "sharded":
            self.mesh = Mesh(np.array(self.devices), ("data",))
            self._replicated = NamedSharding(self.mesh, P())
            self._batch_sharding = NamedSharding(self.mesh, P("data"))
            self.params = _replicate(params, self._replicated)
            self._fn = jax.jit(forward, out_shardings=self._batch_sharding)
        else:
            # one copy per device along a leading device axis (the pmap layout), sent once
            mesh = Mesh(np.array(self.devices), ("devices",))
            stacked = NamedSharding(mesh, P("devices"))
            n = len(self.devices)
            self.params = jax.tree_util.tree_map(
                lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (n, *np.shape(x))), stacked), params
            )
            self._fn = jax.pmap(forward, devices=self.devices)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @staticmethod
    def _forward(model, multimask_output, params, pixel_values, prompts):
        out = model.apply({"params": params}, pixel_values=pixel_values, multimask_output=multimask_output, **prompts)
        return out.iou_scores, out.pred_masks, out.object_score_logits

    def __call__(self, pixel_values, **prompts) -> dict[str, np.ndarray]:
        unknown = set(prompts) - set(PROMPT_KEYS)
        if unknown:
            raise ValueError(f"unknown prompt arguments {sorted(unknown)}; expected some of {PROMPT_KEYS}")
        pixel_values = np.asarray(pixel_values, np.float32)
        b = pixel_values.shape[0]
        prompts = {k: np.asarray(v) for k, v in prompts.items() if v is not None}
        for k, v in prompts.items():
            if v.shape[0] != b:
                raise ValueError(f"{k} has {v.shape[0]} rows for {b} images")
        n = self.num_devices
        padded = -(-b // n) * n
        pixel_values = _pad_batch(pixel_values, padded)
        prompts = {k: _pad_batch(v, padded) for k, v in prompts.items()}
        if self.mode == "sharded":
            pixel_values = jax.device_put(pixel_values, self._batch_sharding)
            prompts = jax.device_put(prompts, self._batch_sharding)
            iou, masks, obj = self._fn(self.params, pixel_values, prompts)
        else:
            split = functools.partial(_split, n)
            iou, masks, obj = self._fn(self.params, split(pixel_values), jax.tree_util.tree_map(split, prompts))
            iou, masks, obj = (x.reshape(-1, *x.shape[2:]) for x in (iou, masks, obj))
        if jax.process_count() > 1:  # results live on every host's devices: gather the global batch
            from jax.experimental import multihost_utils

            iou, masks, obj = multihost_utils.process_allgather((iou, masks, obj), tiled=True)
        return {
            "iou_scores": np.asarray(iou)[:b],
            "pred_masks": np.asarray(masks)[:b],
            "object_score_logits": np.asarray(obj)[:b],
        }


def _split(n: int, x: np.ndarray) -> np.ndarray:
    return x.reshape(n, x.shape[0] // n, *x.shape[1:])


def global_batch(local_rows: np.ndarray, mesh: Mesh) -> jax.Array:
    """Assemble a batch sharded over a multi-host mesh from the rows this host feeds (its local devices' rows)."""
    sharding = NamedSharding(mesh, P("data"))
    global_shape = (local_rows.shape[0] * jax.process_count(), *local_rows.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)


__all__ = ["BatchSegmenter", "global_batch"]


def _replicate(params, sharding: NamedSharding):
    """Params onto every device of ``sharding``; across processes, each sends only its own devices' copies
    (``device_put`` of host arrays to devices of several processes first all-gathers them to compare)."""
    if sharding.is_fully_addressable:
        return jax.device_put(params, sharding)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, jax.device_get(params))
