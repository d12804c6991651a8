"""The jitted functions of a ``Trainer`` configuration, built once per configuration and shared by every trainer of
it (a new ``Trainer`` of the same run, e.g. to resume, does not compile again).

  compiled(model, trainable, lr, steps, warmup, weight_decay, clip, corrections, use_box, dtype, loss_items,
           multimask, devices, encoder_lr_scale=1.0, layer_decay=1.0) -> SimpleNamespace:
    mesh       a one-axis ``Mesh`` "data" over ``devices`` (every process's, in a multi-host run)
    repl, data ``NamedSharding(mesh, P())`` (params, optimizer state, key, metrics) and ``P("data")`` (batches)
    optimizer  ``step.make_optimizer(lr, steps, warmup, weight_decay, clip, encoder_lr_scale=, layer_decay=)``
    lr         the schedule: step (0-based) -> the base learning rate
    train      ``step.make_train_step``'s ``TrainStep`` (``init`` for the optimizer state)
    step       (params, opt_state, batch, key) -> (params, opt_state, metrics): ``train.step`` jitted with those
               shardings (params and state donated off CPU)
    embed      (params, pixel_values (B, S, S, 3)) -> ``Sam2Model.get_image_embeddings``'s three arrays (B, ...)
    eval       (params, pixel_values (B, S, S, 3), points (B, P, 1, 2), masks (B, P, m, m) bool) -> (B, P) IoU
               of the mask decoded from one positive click (the best of 3 by predicted IoU when ``multimask``
               >= 1; empty when the object score is <= 0), upsampled bilinearly to m x m
All arguments are hashable (``loss_items`` a sorted tuple of the loss kwargs, ``devices`` a tuple, ``dtype`` a
NumPy dtype or None), the cache key.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..modeling.sam2_model import Sam2Model
from .losses import mask_iou
from .step import make_optimizer, make_schedule, make_train_step

__all__ = ["compiled"]


@functools.lru_cache(maxsize=8)
def compiled(
    model,
    trainable,
    lr,
    steps,
    warmup,
    weight_decay,
    clip,
    corrections,
    use_box,
    dtype,
    loss_items,
    multimask,
    devices,
    encoder_lr_scale=1.0,
    layer_decay=1.0,
) -> SimpleNamespace:
    """See the module docstring."""
    mesh = Mesh(np.array(devices), ("data",))
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    optimizer = make_optimizer(
        lr, steps, warmup, weight_decay, clip, encoder_lr_scale=encoder_lr_scale, layer_decay=layer_decay
    )
    train = make_train_step(
        model,
        optimizer,
        trainable,
        corrections,
        use_box=use_box,
        dtype=dtype,
        loss_kwargs=dict(loss_items),
        multimask_max_points=multimask,
    )
    donate = {} if devices[0].platform == "cpu" else {"donate_argnums": (0, 1)}
    step = jax.jit(train.step, in_shardings=(repl, repl, data, repl), out_shardings=repl, **donate)
    net = Sam2Model(model.config, model.dtype if dtype is None else dtype, model.implementation, model.precision)

    def embed(params, pixel_values):
        return net.apply({"params": params}, pixel_values, method=Sam2Model.get_image_embeddings)

    def evaluate(params, pixel_values, points, masks):
        labels = jnp.ones(points.shape[:-1], jnp.int32)
        out = net.apply(
            {"params": params},
            pixel_values=pixel_values,
            input_points=points,
            input_labels=labels,
            multimask_output=multimask >= 1,
        )
        best = jnp.argmax(out.iou_scores, axis=-1)[..., None, None, None]
        low = jnp.take_along_axis(out.pred_masks, best, axis=2)[:, :, 0].astype(jnp.float32)
        high = jax.image.resize(low, (*low.shape[:-2], *masks.shape[-2:]), "linear", antialias=False)
        pred = (high > 0) & (out.object_score_logits[..., :1, None] > 0)
        return mask_iou(pred, masks)

    return SimpleNamespace(
        mesh=mesh,
        repl=repl,
        data=data,
        optimizer=optimizer,
        lr=make_schedule(lr, steps, warmup),
        train=train,
        step=step,
        embed=jax.jit(embed, in_shardings=(repl, data), out_shardings=data),
        eval=jax.jit(evaluate, in_shardings=(repl, data, data, data), out_shardings=data),
    )
