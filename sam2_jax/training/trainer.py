"""Fine-tuning SAM 2 data-parallel over devices: ``Trainer`` (train steps, evaluation, checkpoint and resume).

In: a ``Sam2Model`` and its params (the image tree, or a video checkpoint's full tree: only the image model trains,
every other tensor is written back unchanged), the hyperparameters of ``step.make_optimizer`` /
``step.make_train_step``, and batches as ``training.data.DataLoader`` yields them: pixel_values (B, S, S, 3)
float32 normalised, masks (B, P, m, m) bool, valid (B, P) bool, index (B,) int (dataset indices).

Data parallelism: a one-axis ``Mesh`` "data" over ``devices`` (default ``jax.devices()``); params and optimizer
state replicated (``NamedSharding(mesh, P())``), the batch sharded along "data" (``P("data")``), so the loss, a mean
over the global batch, gives gradients averaged over all devices by construction: a run equals the same run on
one device up to float rounding. B must be a multiple of the device count.

Embedding cache (``trainable`` "decoder" / "prompt+decoder"): the image encoder is frozen, so
``Sam2Model.get_image_embeddings`` runs once per image; its three outputs (feat_s0, feat_s1, image_embedding of
one image) are kept on the host in an LRU keyed by the batch's dataset ``index``, at most ``cache_bytes`` in all
(default 4 GiB; one 1024-px image takes 16 MiB in float32, 8 MiB in bfloat16). A batch whose images are all cached
skips the encoder; otherwise the whole batch is encoded (one compiled shape) and the missing ones stored. This
assumes the loader gives the same pixels for an index every time (no random augmentation). With "all" the step
gets pixel_values. ``dtype`` (e.g. ``jnp.bfloat16``) is the computation dtype; params and optimizer state stay
float32.

Steps are numbered 1..``steps``; step s uses the key ``fold_in(PRNGKey(seed), s - 1)``, so a resumed run draws
the same prompts. ``fit(loader, out)`` writes ``out`` (see ``train_state``): metrics rows, the model and the state
every ``checkpoint_every`` steps and at the end. ``resume(out)`` restores params, optimizer state, step, key and
returns the loader's saved state, for ``DataLoader(..., state=...)``.

``multimask_max_points`` is the step's (1: a lone click decodes 3 masks, as SAM 2 trains; evaluation then decodes 3
and keeps the best by predicted IoU; 0: single masks throughout). ``labels``: "a/b/c" -> "train" / "freeze".

``evaluate(params, data) -> mIoU``: one positive click per object at its centre (``center_clicks``: the mask pixel
farthest from the mask's border, ties to the one nearest the centroid), 3 masks decoded, the one with the highest
predicted IoU kept (empty when the object score is <= 0), IoU with the target at the masks' resolution, averaged
over the objects with a non-empty target.
"""

from __future__ import annotations

import functools
import json
import time
from collections import OrderedDict
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..modeling.sam2_model import Sam2Model
from ..utils.progress import progress_bar
from .losses import mask_iou
from .step import make_optimizer, make_schedule, make_train_step, trainable_labels
from .train_state import RunDirectory, restore_checkpoint, save_checkpoint

__all__ = ["Trainer", "EmbeddingCache", "center_clicks"]


def _flat(tree) -> dict[str, object]:
    return {"/".join(k): v for k, v in flatten_dict(tree).items()}


class EmbeddingCache:
    """An LRU of dataset index -> the embeddings of one image (NumPy arrays), ``max_bytes`` in all at most."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.nbytes, self.hits, self.misses = int(max_bytes), 0, 0, 0
        self._items: OrderedDict = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, index: int):
        value = self._items.get(index)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self._items.move_to_end(index)
        return value

    def put(self, index: int, value: tuple) -> None:
        size = sum(a.nbytes for a in value)
        if size > self.max_bytes or index in self._items:
            return
        self._items[index] = value
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.nbytes -= sum(a.nbytes for a in old)


def center_clicks(masks) -> np.ndarray:
    """(..., H, W) bool -> (..., 2) float32 (x, y): the pixel farthest from the mask's border (repeated 4-neighbour
    erosion, the image edge counting as border), the one nearest the centroid of those; (0, 0) for an empty mask."""
    masks = np.asarray(masks, bool)
    h, w = masks.shape[-2:]
    cur, last = masks.copy(), masks.copy()
    while cur.any():
        last = np.where(cur.any(axis=(-2, -1), keepdims=True), cur, last)
        pad = np.pad(cur, [(0, 0)] * (cur.ndim - 2) + [(1, 1), (1, 1)])
        cur = cur & pad[..., :-2, 1:-1] & pad[..., 2:, 1:-1] & pad[..., 1:-1, :-2] & pad[..., 1:-1, 2:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    n = np.maximum(last.sum(axis=(-2, -1)), 1)[..., None, None]
    cx, cy = (last * xs).sum(axis=(-2, -1), keepdims=True) / n, (last * ys).sum(axis=(-2, -1), keepdims=True) / n
    dist = np.where(last, (xs - cx) ** 2 + (ys - cy) ** 2, np.inf).reshape(*masks.shape[:-2], h * w)
    best = np.argmin(dist, axis=-1)
    return np.stack([best % w, best // w], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _compiled(
    model, trainable, lr, steps, warmup, weight_decay, clip, corrections, use_box, dtype, loss_items, multimask, devices
) -> SimpleNamespace:
    """The optimizer and the jitted functions of a configuration, shared by the trainers built with it (a new
    ``Trainer`` of the same run, e.g. to resume, does not compile again)."""
    mesh = Mesh(np.array(devices), ("data",))
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    optimizer = make_optimizer(lr, steps, warmup, weight_decay, clip)
    lr_at = make_schedule(lr, steps, warmup)
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
        lr=lr_at,
        train=train,
        step=step,
        embed=jax.jit(embed, in_shardings=(repl, data), out_shardings=data),
        eval=jax.jit(evaluate, in_shardings=(repl, data, data, data), out_shardings=data),
    )


class Trainer:
    """See the module docstring. ``params`` may hold NumPy or JAX arrays; ``Trainer.params`` is the image tree."""

    def __init__(
        self,
        model: Sam2Model,
        params,
        *,
        trainable: str = "decoder",
        lr: float = 1e-4,
        steps: int = 1000,
        warmup: int = 0,
        weight_decay: float = 0.1,
        clip: float | None = 1.0,
        batch_size: int = 8,
        num_correction_steps: int = 0,
        use_box: bool = False,
        dtype=None,
        devices=None,
        seed: int = 0,
        cache_bytes: int = 4 << 30,
        loss_kwargs: dict | None = None,
        multimask_max_points: int = 1,
    ):
        from ..modeling.sam2_video_model import image_params

        self.model, self.config = model, model.config
        self.devices = list(jax.devices() if devices is None else devices)
        n = len(self.devices)
        if batch_size < 1 or batch_size % n:
            raise ValueError(
                f"the batch size ({batch_size}) must be a positive multiple of the number of devices "
                f"({n}): each device takes an equal share of the batch"
            )
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.trainable, self.steps, self.batch_size = trainable, int(steps), int(batch_size)
        self.hparams = dict(
            trainable=trainable,
            lr=float(lr),
            steps=int(steps),
            warmup=int(warmup),
            weight_decay=float(weight_decay),
            clip=None if clip is None else float(clip),
            batch_size=int(batch_size),
            num_correction_steps=int(num_correction_steps),
            use_box=bool(use_box),
            dtype=None if dtype is None else jnp.dtype(dtype).name,
            seed=int(seed),
            loss_kwargs=loss_kwargs or {},
            multimask_max_points=int(multimask_max_points),
        )
        fns = _compiled(
            model,
            trainable,
            float(lr),
            int(steps),
            int(warmup),
            float(weight_decay),
            None if clip is None else float(clip),
            int(num_correction_steps),
            bool(use_box),
            None if dtype is None else jnp.dtype(dtype),
            tuple(sorted((loss_kwargs or {}).items())),
            int(multimask_max_points),
            tuple(self.devices),
        )
        self.mesh, self._repl, self._data = fns.mesh, fns.repl, fns.data
        self.optimizer, self._lr, self._train = fns.optimizer, fns.lr, fns.train
        self._step, self._embed, self._eval = fns.step, fns.embed, fns.eval
        self.full_params = dict(params)
        self.initial = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), image_params(self.full_params))
        self.labels = _flat(trainable_labels(self.initial, trainable))  # "a/b/c" -> "train" / "freeze"
        self.cache = EmbeddingCache(cache_bytes)
        self.params = jax.device_put(self.initial, self._repl)
        self.opt_state = jax.device_put(self._train.init(self.params), self._repl)
        self.step, self.key, self.elapsed = 0, jax.random.PRNGKey(seed), 0.0

    # -- training --------------------------------------------------------------------------------------------
    def _embeddings(self, batch):
        pixel_values = np.asarray(batch["pixel_values"], np.float32)
        idx = [int(i) for i in np.asarray(batch["index"])] if "index" in batch else None
        rows = [self.cache.get(i) for i in idx] if idx is not None else [None]
        if all(r is not None for r in rows):
            return tuple(np.stack([r[k] for r in rows]) for k in range(3))
        emb = self._embed(self.params, jax.device_put(pixel_values, self._data))
        if idx is not None:
            host = [np.asarray(e) for e in emb]
            for b, i in enumerate(idx):
                if rows[b] is None:
                    self.cache.put(i, tuple(np.array(h[b]) for h in host))
        return emb

    def device_batch(self, batch) -> dict:
        """A loader batch -> the step's batch, sharded along "data" (embeddings from the cache when frozen)."""
        masks = np.asarray(batch["masks"])
        if masks.shape[0] != self.batch_size:
            raise ValueError(f"a batch of {masks.shape[0]} images, the trainer was built for {self.batch_size}")
        out = {"masks": masks, "valid": np.asarray(batch.get("valid", np.ones(masks.shape[:2], bool)), bool)}
        if self.trainable == "all":
            out["pixel_values"] = np.asarray(batch["pixel_values"], np.float32)
        else:
            out["image_embeddings"] = self._embeddings(batch)
        return jax.device_put(out, self._data)

    def train_step(self, batch) -> dict:
        """One optimizer step on a loader batch; returns the step's metrics (device scalars)."""
        key = jax.random.fold_in(self.key, self.step)
        self.params, self.opt_state, metrics = self._step(self.params, self.opt_state, self.device_batch(batch), key)
        self.step += 1
        return metrics

    def fit(
        self,
        loader,
        out=None,
        *,
        checkpoint_every: int = 100,
        log_every: int = 10,
        progress: bool = False,
        callback=None,
        args: dict | None = None,
    ) -> list[dict]:
        """Train until ``steps`` from the current step, over ``loader`` (iterated again at each epoch's end).
        With ``out``: metrics rows appended, model + state saved every ``checkpoint_every`` steps and at the end,
        curves drawn. ``callback(step, metrics)`` runs after each step (and its checkpoint); an exception there
        stops the run. Returns the logged rows (``step``, ``loss``, ``iou``, ``lr``, ``grad_norm``, ``time``...)."""
        run = None if out is None else RunDirectory(out)
        logged, pending = [], []
        start, elapsed0 = time.perf_counter(), self.elapsed
        bar = progress_bar(self.steps, enabled=progress, desc="fine-tuning", unit="step")
        bar.update(self.step)
        try:
            with bar:
                while self.step < self.steps:
                    yielded = False
                    for batch in loader:
                        yielded = True
                        metrics = self.train_step(batch)
                        s, self.elapsed = self.step, elapsed0 + time.perf_counter() - start
                        if s % log_every == 0 or s == self.steps:
                            row = {"step": s, **{k: float(v) for k, v in jax.device_get(metrics).items()}}
                            row.update(lr=float(self._lr(s - 1)), time=round(self.elapsed, 3))
                            logged.append(row)
                            pending.append(row)
                            bar.set_postfix_str(f"loss {row['loss']:.4f} iou {row['iou']:.3f}")
                        bar.update(1)
                        if run is not None and (s % checkpoint_every == 0 or s == self.steps):
                            run.append_metrics(pending)
                            pending = []
                            self.save(run, loader.state() if hasattr(loader, "state") else None, args)
                        if callback is not None:
                            callback(s, metrics)
                        if s >= self.steps:
                            break
                    if not yielded:
                        raise ValueError("the data loader yielded no batch (fewer images than the batch size?)")
        finally:
            if run is not None:
                run.append_metrics(pending)  # past the checkpoint: dropped again by a resume
        return logged

    # -- checkpoints -----------------------------------------------------------------------------------------
    def run_args(self, args: dict | None = None) -> dict:
        """What a resume must match: the trainer's hyperparameters and the caller's ``args`` (as JSON)."""
        return json.loads(json.dumps({"trainer": self.hparams, **(args or {})}))

    def export_params(self) -> dict:
        """The full param tree given to the constructor with the image model's trained values (NumPy)."""
        return {**self.full_params, **jax.device_get(self.params)}

    @property
    def complete(self) -> bool:
        return self.step >= self.steps

    def set_state(self, params, opt_state_from_template, info: dict) -> None:
        """Install restored state: ``params`` (the image tree), the optimizer state built from ``optimizer.init``'s
        structure by ``opt_state_from_template(template)``, and ``info``'s step, key and elapsed time."""
        self.params = jax.device_put(params, self._repl)
        template = jax.device_get(self._train.init(self.params))
        self.opt_state = jax.device_put(opt_state_from_template(template), self._repl)
        self.step, self.elapsed = int(info["step"]), float(info["elapsed"])
        self.key = jnp.asarray(np.asarray(info["key"], np.uint32))

    def save(self, out, loader_state=None, args: dict | None = None) -> None:
        """Write the model files, then ``train_state``, then the curves (``train_state.save_checkpoint``)."""
        save_checkpoint(self, out, loader_state, args)

    def resume(self, out, args: dict | None = None):
        """Restore ``out/train_state`` when there is one (else return None and change nothing): params, optimizer
        state, step, key; metrics rows past its step are dropped. Returns the data loader's saved state. A state
        written with other hyperparameters or ``args`` raises ``ValueError`` naming them."""
        return restore_checkpoint(self, out, args)

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate(
        self, params=None, data=None, *, batch_size: int | None = None, mask_size: int = 256, max_objects: int = 4
    ) -> float:
        """mIoU from one centre click per object (see the module docstring). ``data``: batches (an iterable of
        loader-style dicts) or a ``SegmentationDataset`` (read through a ``DataLoader`` in order, ``mask_size``,
        ``max_objects`` per image). ``params`` default to the current ones."""
        params = self.params if params is None else jax.device_put(params, self._repl)
        loader = None
        if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not isinstance(data, (list, tuple)):
            from .loader import DataLoader

            size = self.config.prompt_encoder_config.image_size
            loader = data = DataLoader(
                data,
                batch_size or self.batch_size,
                image_size=size,
                mask_size=mask_size,
                max_objects=max_objects,
                shuffle=False,
                drop_last=False,
                epochs=1,
            )
        n, ious = len(self.devices), []
        try:
            for batch in data:
                masks = np.asarray(batch["masks"], bool)
                valid = np.asarray(batch.get("valid", np.ones(masks.shape[:2], bool)), bool) & masks.any((-2, -1))
                pixels = np.asarray(batch["pixel_values"], np.float32)
                scale = pixels.shape[-2] / masks.shape[-1]
                points = (center_clicks(masks) * scale)[:, :, None]
                pad = -len(masks) % n
                if pad:
                    pixels, points, masks = (
                        np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in (pixels, points, masks)
                    )  # noqa: E501
                iou = np.asarray(self._eval(params, pixels, points, masks))[: len(valid)]
                ious.extend(iou[valid].tolist())
        finally:
            if loader is not None and hasattr(loader, "close"):
                loader.close()
        return float(np.mean(ious)) if ious else float("nan")
