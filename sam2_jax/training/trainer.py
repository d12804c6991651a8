"""Fine-tuning SAM 2 data-parallel over devices: ``Trainer`` (train steps, evaluation, checkpoint and resume).

In: a ``Sam2Model`` and its params (the image tree, or a video checkpoint's full tree: only the image model trains,
every other tensor is written back unchanged), the hyperparameters of ``step.make_optimizer`` /
``step.make_train_step``, and batches as ``training.loader.DataLoader`` (grain) yields them: pixel_values (B, S, S, 3)
float32 normalised, masks (B, P, m, m) bool, valid (B, P) bool, index (B,) int (dataset indices).

Data parallelism: a one-axis ``Mesh`` "data" over ``devices`` (default ``jax.devices()``); params and optimizer
state replicated (``NamedSharding(mesh, P())``), the batch sharded along "data" (``P("data")``), so the loss, a mean
over the global batch, gives gradients averaged over all devices by construction: a run equals the same run on
one device up to float rounding. B must be a multiple of the device count. The jitted functions are ``jitted.py``'s.

Multi-host (after ``jax.distributed.initialize()``, ``devices`` spanning several processes; see ``multihost.py``):
every process builds the same trainer, and feeds only its rows ``process_rows`` of each global batch of B
(``data_loader(dataset, ...)`` reads just those: a ``DataLoader`` with ``rows=``, the same data position on every
process); global arrays are built from the processes' rows, metrics are replicated, evaluation gathered; only the
mesh's lowest process writes ``out`` (the others wait at barriers), which must be on a shared file system for a
resume. The run equals one process with as many devices.

Embedding cache (``trainable`` "decoder" / "prompt+decoder"): the image encoder is frozen, so
``Sam2Model.get_image_embeddings`` runs once per image; its outputs are kept on the host in an
``EmbeddingCache`` keyed by the batch's dataset ``index``, at most ``cache_bytes`` (default 4 GiB; each process
caches its own rows). A batch whose images are all cached (on every process) skips the encoder; otherwise the
whole batch is encoded (one compiled shape) and the missing ones stored. This assumes the loader gives the same
pixels for an index every time (no random augmentation). With "all" the step gets pixel_values, and
``encoder_lr_scale`` / ``layer_decay`` (``lr_scales.py``; official whole-model recipe 0.6 / 0.9) set the image
encoder's lower rate and the Hiera trunk's layer-wise decay (other modes require them 1, their default). ``dtype``
(e.g. ``jnp.bfloat16``) is the computation dtype; params and optimizer state stay float32.

Steps are numbered 1..``steps``; step s uses the key ``fold_in(PRNGKey(seed), s - 1)``, so a resumed run draws
the same prompts. ``fit(loader, out, keep=3)`` writes ``out`` (see ``train_state``, ``checkpoint``): metrics rows,
the model and an orbax checkpoint (async; the last ``keep`` kept) every ``checkpoint_every`` steps and at the end.
``resume(out)`` restores params, optimizer state (onto this trainer's mesh, whatever device count saved them),
step, key and returns the loader's saved state (grain's), for ``DataLoader(..., state=...)``.

``multimask_max_points`` is the step's (1: a lone click decodes 3 masks, as SAM 2 trains; evaluation then decodes 3
and keeps the best by predicted IoU; 0: single masks throughout). ``labels``: "a/b/c" -> "train" / "freeze".
``evaluate(params, data) -> mIoU`` from one centre click per object: ``evaluation.py``.
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from ..modeling.sam2_model import Sam2Model
from ..utils.progress import progress_bar
from . import evaluation, multihost
from .checkpoint import restore_checkpoint, save_checkpoint
from .embedding_cache import EmbeddingCache
from .evaluation import center_clicks
from .jitted import compiled
from .step import trainable_labels
from .train_state import RunDirectory

__all__ = ["Trainer", "EmbeddingCache", "center_clicks"]


def _flat(tree) -> dict[str, object]:
    return {"/".join(k): v for k, v in flatten_dict(tree).items()}


def base_hparams(trainable, lr, steps, warmup, weight_decay, clip, batch_size, dtype, seed, loss_kwargs) -> dict:
    """The hyperparameters every trainer's run records (as JSON values) and a resume must match."""
    return dict(
        trainable=trainable,
        lr=float(lr),
        steps=int(steps),
        warmup=int(warmup),
        weight_decay=float(weight_decay),
        clip=None if clip is None else float(clip),
        batch_size=int(batch_size),
        dtype=None if dtype is None else jnp.dtype(dtype).name,
        seed=int(seed),
        loss_kwargs=loss_kwargs or {},
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
        encoder_lr_scale: float = 1.0,
        layer_decay: float = 1.0,
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
        if not (encoder_lr_scale > 0 and layer_decay > 0):
            raise ValueError(f"encoder_lr_scale and layer_decay must be > 0, got {encoder_lr_scale}, {layer_decay}")
        if trainable != "all" and (encoder_lr_scale != 1 or layer_decay != 1):
            raise ValueError(
                f"encoder_lr_scale and layer_decay scale the image encoder's learning rates: they need "
                f"trainable='all', not {trainable!r}"
            )
        self.trainable, self.steps, self.batch_size = trainable, int(steps), int(batch_size)
        self.hparams = dict(
            **base_hparams(trainable, lr, steps, warmup, weight_decay, clip, batch_size, dtype, seed, loss_kwargs),
            num_correction_steps=int(num_correction_steps),
            use_box=bool(use_box),
            multimask_max_points=int(multimask_max_points),
            encoder_lr_scale=float(encoder_lr_scale),
            layer_decay=float(layer_decay),
        )
        fns = compiled(
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
            float(encoder_lr_scale),
            float(layer_decay),
        )
        self.mesh, self._repl, self._data = fns.mesh, fns.repl, fns.data
        self.optimizer, self._lr, self._train = fns.optimizer, fns.lr, fns.train
        self._step, self._embed, self._eval = fns.step, fns.embed, fns.eval
        self.multihost, self.is_writer = multihost.spans_processes(self.mesh), multihost.is_writer(self.mesh)
        self.rows = multihost.process_rows(self._data, self.batch_size)  # this process's rows of a batch
        self._start(params, image_params(dict(params)), cache_bytes, seed)

    def _start(self, full_params, trained, cache_bytes: int, seed: int) -> None:
        """Step 0: ``trained`` (the tree the step takes, float32) replicated with its optimizer state; the
        ``full_params`` kept for the export; the embedding cache; the key."""
        self.full_params = dict(full_params)
        self.initial = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), trained)
        self.labels = _flat(trainable_labels(self.initial, self.trainable))  # "a/b/c" -> "train" / "freeze"
        self.cache = EmbeddingCache(cache_bytes)
        self.params = self.replicate(self.initial)
        self.opt_state = self.replicate(jax.device_get(self._train.init(self.initial)))
        self.step, self.key, self.elapsed = 0, jax.random.PRNGKey(seed), 0.0

    def replicate(self, tree):
        """A param (or optimizer state) tree onto every device of the mesh, every process's."""
        if not self.multihost:
            return jax.device_put(tree, self._repl)
        return jax.tree_util.tree_map(lambda x: multihost.host_put(x, self._repl), jax.device_get(tree))

    def data_loader(self, dataset, **kwargs):
        """A loader of this trainer's batches over ``dataset`` (``DataLoader`` options in ``kwargs``): a
        ``DataLoader`` of ``batch_size``, in a multi-host run reading only this process's rows of every batch."""
        from .loader import DataLoader

        return DataLoader(dataset, self.batch_size, rows=self.rows if self.multihost else None, **kwargs)

    # -- training --------------------------------------------------------------------------------------------
    def _embeddings(self, batch):
        pixel_values = np.asarray(batch["pixel_values"], np.float32)
        idx = [int(i) for i in np.asarray(batch["index"])] if "index" in batch else None
        rows = [self.cache.get(i) for i in idx] if idx is not None else [None]
        if multihost.all_true(all(r is not None for r in rows), self.multihost):
            return tuple(np.stack([r[k] for r in rows]) for k in range(3))
        emb = self._embed(self.params, multihost.put_rows(pixel_values, self._data, self.batch_size))
        if idx is not None:
            host = [multihost.local_rows(e) for e in emb]
            for b, i in enumerate(idx):
                if rows[b] is None:
                    self.cache.put(i, tuple(np.array(h[b]) for h in host))
        return emb

    def device_batch(self, batch) -> dict:
        """A loader batch (this process's rows) -> the step's batch, global arrays sharded along "data"
        (embeddings from the cache when frozen)."""
        masks = np.asarray(batch["masks"])
        start, stop = self.rows
        if masks.shape[0] != stop - start:
            share = f" (this process's rows {start}:{stop} of {self.batch_size})" if self.multihost else ""
            raise ValueError(f"a batch of {masks.shape[0]} images, the trainer was built for {stop - start}{share}")
        out = {"masks": masks, "valid": np.asarray(batch.get("valid", np.ones(masks.shape[:2], bool)), bool)}
        if self.trainable == "all":
            out["pixel_values"] = np.asarray(batch["pixel_values"], np.float32)
        else:
            out["image_embeddings"] = self._embeddings(batch)
        return multihost.put_rows(out, self._data, self.batch_size)

    def train_step(self, batch) -> dict:
        """One optimizer step on a loader batch; returns the step's metrics (device scalars, replicated)."""
        key = jax.random.fold_in(self.key, self.step)
        if self.multihost:
            key = multihost.host_put(jax.device_get(key), self._repl)
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
        keep: int = 3,
    ) -> list[dict]:
        """Train until ``steps`` from the current step, over ``loader`` (iterated again at each epoch's end).
        With ``out``: metrics rows appended, model + checkpoint saved every ``checkpoint_every`` steps and at the
        end (checkpoints async, the last ``keep`` kept, committed before ``fit`` returns or raises), curves drawn
        (by the writing process only). ``callback(step, metrics)`` runs after each step (and its
        checkpoint); an exception there stops the run. Returns the logged rows (``step``, ``loss``, ``iou``,
        ``lr``, ``grad_norm``, ``time``...), on every process."""
        run = None if out is None else RunDirectory(out, keep)
        logged, pending = [], []
        start, elapsed0 = time.perf_counter(), self.elapsed
        bar = progress_bar(self.steps, enabled=progress and self.is_writer, desc="fine-tuning", unit="step")
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
                            if self.is_writer:
                                run.append_metrics(pending)
                            pending = []
                            state = loader.state() if hasattr(loader, "state") else None
                            save_checkpoint(self, run, state, args, wait=False, metrics=logged[-1] if logged else None)
                        if callback is not None:
                            callback(s, metrics)
                        if s >= self.steps:
                            break
                    if not yielded:
                        raise ValueError("the data loader yielded no batch (fewer images than the batch size?)")
        finally:
            if run is not None:
                run.wait()
                if self.is_writer:
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

    def set_state(self, params, opt_state, info: dict) -> None:
        """Install restored state: ``params`` (the image tree), the optimizer state (of ``optimizer.init``'s
        structure), and ``info``'s step, key and elapsed time."""
        self.params, self.opt_state = self.replicate(params), self.replicate(opt_state)
        self.step, self.elapsed = int(info["step"]), float(info["elapsed"])
        self.key = jnp.asarray(np.asarray(info["key"], np.uint32))

    def save(self, out, loader_state=None, args: dict | None = None, wait: bool = True) -> None:
        """Write the model files, then checkpoint ``step`` (async: committed on return unless not ``wait``),
        then the curves (``checkpoint.save_checkpoint``)."""
        save_checkpoint(self, out, loader_state, args, wait=wait)

    def resume(self, out, args: dict | None = None):
        """Restore ``out``'s latest checkpoint when there is one (else return None and change nothing): params,
        optimizer state, step, key; metrics rows past its step are dropped. Returns the data loader's saved state.
        A checkpoint written with other hyperparameters or ``args`` raises ``ValueError`` naming them."""
        return restore_checkpoint(self, out, args)

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate(
        self, params=None, data=None, *, batch_size: int | None = None, mask_size: int = 256, max_objects: int = 4
    ) -> float:
        """mIoU from one centre click per object (``evaluation.evaluate``). ``data``: batches (an iterable of
        loader-style dicts) or a ``SegmentationDataset`` (read in order, ``mask_size``, ``max_objects`` per image).
        ``params`` default to the current ones."""
        return evaluation.evaluate(
            self, params, data, batch_size=batch_size, mask_size=mask_size, max_objects=max_objects
        )
