"""One batch of the automatic mask generator's point prompts, decoded on the device with masks made only where
one can survive the predicted-IoU threshold, and the survivors' stability scores and boxes computed there too, so
that a batch crosses to the host once.

A prompt's predicted IoUs come from the decoder's IoU token, which needs neither the mask upscaling nor the mask
tokens' final attention (about half of a prompt's decoding on CPU). So:

  decode_survivors(model, params, image_pe, features, points (1, P, N, 2), labels (1, P, N), prompt_mask (1, P, N),
                   n_valid (), iou_thresh ())
      decodes P single-point prompts (the first ``n_valid`` real, the rest padding) with the decoder's
      ``mask_floor`` at ``iou_thresh`` (padding: +inf), so that masks are made only for prompts (per
      ``prompt_chunk``: one on CPU) with a mask above the threshold. Returns a dict of device arrays:
        iou_scores (P, M) float32, the scores of every prompt
        order      (P * M,) int32, the flat indices p * M + m of the masks with iou > iou_thresh, ascending
                   (the generator's record order), then padding
        count      () int32, how many such masks
        masks      (P, M, 4h, 4w) float32 low-res logits, valid where a mask was made, zeros elsewhere
  survivor_stats(masks, order, count, size, mask_threshold, offset)
      stability scores (P * M,) float32 and xyxy boxes (P * M, 4) int32 of the first ``count`` masks of
      ``order``, upsampled to ``size`` = (H, W) (static), ``mask_records.CHUNK`` at a time in a loop of
      ceil(count / CHUNK) steps: ``mask_records.stats``' numbers. Entries past ``count`` are padding.
  predict(predictor, points (P, 2), embedding, iou_thresh, pad_to, stats, image_index) -> ``Survivors``
      ``Sam2ImagePredictor.predict_survivors``: pads the prompts, runs both on the device (``survivor_stats``
      only when ``stats`` = (mask_threshold, offset) is given) and fetches the results to the host at once.

``decode_survivors`` is pure: the model (a Flax module) is bound by the caller (``Sam2ImagePredictor`` jit-compiles
it once per padded batch size, with the params as arguments); ``survivor_stats`` compiles once per batch size and
image size. Whatever survives, nothing recompiles. The answers equal the full decoder's (``Sam2Model.__call__``)
and the host's ``mask_records.stats`` up to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ...modeling.sam2_model import sparse_token_mask, with_precision
from . import mask_records as records


@dataclass(frozen=True)
class Survivors:
    """The masks of a batch of P point prompts (M = 3 each) whose predicted IoU passed the threshold, K of them,
    in the order of their flat index p * M + m (NumPy, on the host):

      scores     (P, M) float32, every (unpadded) prompt's predicted IoUs
      index      (K,) int64, the flat index of each passing mask
      logits     (K, 256, 256) float32 low-res logits (not clamped)
      stability  (K,) float32 stability scores at the image size (NaN for a mask empty at the low threshold),
                 or None when not asked for
      boxes      (K, 4) int64 xyxy boxes (inclusive) at the image size, or None
    """

    scores: np.ndarray
    index: np.ndarray
    logits: np.ndarray
    stability: np.ndarray | None = None
    boxes: np.ndarray | None = None


@with_precision
def _masks_above(module, features, image_pe, points, labels, prompt_mask, floor):
    """(bound ``Sam2Model``) single-point prompts -> masks (1, P, M, 4h, 4w), zeros where no score of the
    prompt's chunk passes its floor (1, P), and iou_scores (1, P, M); under the model's matmul precision.
    One point a prompt leaves no point to mask out but those of padding prompts, whose answers are dropped, so
    no token mask is applied (the same answers for real prompts, without masking the attention logits)."""
    sparse, dense = module.prompt_encoder(points, labels, None, None)
    token_mask = None if points.shape[2] == 1 else sparse_token_mask(prompt_mask, sparse, False)
    masks, iou, _, _ = module.mask_decoder(
        features[-1], image_pe, sparse, dense, features[:-1], True, token_mask=token_mask, mask_floor=floor
    )
    return masks.astype(jnp.float32), iou.astype(jnp.float32)


def decode_survivors(model, params, image_pe, features, points, labels, prompt_mask, n_valid, iou_thresh):
    """See the module docstring."""
    real = jnp.arange(points.shape[1]) < n_valid
    floor = jnp.where(real, iou_thresh, jnp.inf)[None]
    args = (features, image_pe, points, labels, prompt_mask, floor)
    masks, iou = model.apply({"params": params}, *args, method=_masks_above)
    masks, iou = masks[0], iou[0]
    passed = ((iou > iou_thresh) & real[:, None]).reshape(-1)
    (order,) = jnp.nonzero(passed, size=passed.shape[0], fill_value=0)
    return {"iou_scores": iou, "order": order, "count": passed.sum(), "masks": masks}


@jax.jit(static_argnames=("size",))
def survivor_stats(masks, order, count, size, mask_threshold, offset):
    """See the module docstring."""
    c, m, total = records.CHUNK, masks.shape[1], order.shape[0]
    padded = -(-total // c) * c
    order = jnp.pad(order, (0, padded - total))

    def step(i, acc):
        stability, boxes = acc
        idx = jax.lax.dynamic_slice(order, (i * c,), (c,))
        st, bx = records.stats_of(masks[idx // m, idx % m], size, mask_threshold, offset)
        stability = jax.lax.dynamic_update_slice(stability, st, (i * c,))
        return stability, jax.lax.dynamic_update_slice(boxes, bx.astype(jnp.int32), (i * c, 0))

    init = (jnp.full((padded,), jnp.nan, jnp.float32), jnp.zeros((padded, 4), jnp.int32))
    stability, boxes = jax.lax.fori_loop(0, (count + c - 1) // c, step, init)
    return stability[:total], boxes[:total]


def predict(predictor, points, embedding, iou_thresh, pad_to=None, stats=None, image_index=0) -> Survivors:
    """See ``Sam2ImagePredictor.predict_survivors``."""
    points = np.asarray(points, np.float32).reshape(-1, 1, 2)
    labels = np.ones(points.shape[:2], np.int32)
    args, n, _ = predictor._prompt_args(points, labels, None, None, embedding, image_index, True, pad_to)
    features = tuple(f[image_index : image_index + 1] for f in embedding.features)
    prompts = (args["points"], args["labels"], args["prompt_mask"])
    out = predictor._survivors(
        predictor.params, predictor._image_pe, features, *prompts, np.int32(n), np.float32(iou_thresh)
    )
    fetch = {k: out[k] for k in ("iou_scores", "order", "count")}
    if stats is not None:
        size = tuple(int(v) for v in embedding.original_sizes[image_index])
        found = (out["masks"], out["order"], out["count"])
        fetch["stability"], fetch["boxes"] = survivor_stats(*found, size, float(stats[0]), float(stats[1]))
    host = jax.device_get(fetch)  # the one wait for the device; the masks follow only where some passed
    k = int(host["count"])
    index = host["order"][:k].astype(np.int64)
    masks, m = out["masks"], host["iou_scores"].shape[1]
    logits = np.asarray(masks)[index // m, index % m] if k else np.zeros((0, *masks.shape[2:]), np.float32)
    return Survivors(
        scores=host["iou_scores"][:n],
        index=index,
        logits=logits,
        stability=None if stats is None else host["stability"][:k],
        boxes=None if stats is None else host["boxes"][:k].astype(np.int64),
    )
