"""A ``Trainer``'s checkpoints in its run directory (``train_state.RunDirectory``: orbax): ``Trainer.save`` /
``Trainer.resume``.

  save_checkpoint(trainer, out, loader_state=None, args=None, wait=True): the model files (the full param tree,
        float32; the writing process), then checkpoint ``trainer.step`` (the trained leaves, the optimizer state,
        the loader state, step / key / elapsed / args / the last metrics row), saved asynchronously (``wait``
        blocks until it is committed), then the curves. ``out`` a path or a ``RunDirectory`` (its ``keep``).
  restore_checkpoint(trainer, out, args=None) -> the loader state, or None (nothing changed) when ``out`` holds no
        checkpoint: from the latest one, params (the frozen leaves from the trainer's initial params, the source)
        and optimizer state onto the trainer's mesh (whatever device count wrote them), step, key; metrics rows
        past the step dropped, the model files rewritten if they are not of that step. A checkpoint written with
        other settings (``trainer.run_args(args)`` differs) raises ``ValueError`` naming them, before any array
        is read.

Multi-host (a trainer whose mesh spans processes): every process calls both functions (orbax saves and restores
collectively, each array written once); only the mesh's lowest process writes the model, metrics and curves. A
resume reads ``out`` on every process, so ``out`` must be on a file system they share; processes that find
different steps raise ``ValueError``.
"""

from __future__ import annotations

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from . import multihost
from .train_state import RunDirectory

__all__ = ["save_checkpoint", "restore_checkpoint"]


def _settings_diff(saved: dict, expected: dict) -> list[str]:
    """The keys whose values differ (those of the trainer's hyperparameters by their own names)."""
    keys = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
    if "trainer" in keys:
        keys.remove("trainer")
        t0, t1 = saved.get("trainer") or {}, expected.get("trainer") or {}
        keys += sorted(k for k in set(t0) | set(t1) if t0.get(k) != t1.get(k))
    return keys


def _trained(trainer, tree) -> dict:
    """The trained leaves of an image param tree, nested."""
    flat = flatten_dict(tree)
    return unflatten_dict({k: v for k, v in flat.items() if trainer.labels["/".join(k)] == "train"})


def save_checkpoint(trainer, out, loader_state=None, args: dict | None = None, wait: bool = True, metrics=None):
    """See the module docstring."""
    run = out if isinstance(out, RunDirectory) else RunDirectory(out)
    if trainer.is_writer:
        run.write_model(trainer.config, trainer.export_params(), trainer.step)
    info = {
        "step": trainer.step,
        "steps": trainer.steps,
        "complete": trainer.complete,
        "key": np.asarray(jax.device_get(trainer.key)).tolist(),
        "elapsed": trainer.elapsed,
        "args": trainer.run_args(args),
        "metrics": metrics,
    }
    run.save_state(trainer.step, _trained(trainer, trainer.params), trainer.opt_state, loader_state, info)
    if wait:
        run.wait()
    if trainer.is_writer:
        run.write_curves()
    multihost.barrier(f"sam2_jax checkpoint {run.out} {trainer.step}", trainer.multihost)


def restore_checkpoint(trainer, out, args: dict | None = None):
    """See the module docstring."""
    run, multi = (out if isinstance(out, RunDirectory) else RunDirectory(out)), trainer.multihost
    latest = run.latest_step()
    step = -1 if latest is None else latest
    if not multihost.all_true(step == _writer_value(step, multi), multi):
        raise ValueError(f"the processes find different states in {out}: it must be on a file system they share")
    if latest is None:
        return None
    expected, saved = trainer.run_args(args), run.read_info(latest).get("args")
    if saved != expected:
        keys = _settings_diff(saved or {}, expected)
        raise ValueError(
            f"{out} holds a run with other settings ({', '.join(keys)}): rerun with the same "
            "arguments to resume it, or choose another output directory"
        )

    def target(tree):
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=trainer._repl), tree
        )

    template = jax.eval_shape(trainer._train.init, trainer.initial)
    try:
        trained, opt_state, loader_state, info = run.restore_state(
            latest, target(_trained(trainer, trainer.initial)), target(template)
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{run.checkpoint_dir}/{latest} does not fit this run's params or optimizer: {e}") from e
    flat = flatten_dict(trainer.initial)
    flat.update(flatten_dict(jax.device_get(trained)))
    trainer.set_state(unflatten_dict(flat), opt_state, info)
    if trainer.is_writer:
        run.truncate_metrics(trainer.step)
        if run.model_step() != trainer.step:  # the model files do not match the state: rewrite them
            run.write_model(trainer.config, trainer.export_params(), trainer.step)
    multihost.barrier(f"sam2_jax resumed {run.out}", multi)
    return loader_state


def _writer_value(value: int, multi: bool) -> int:
    """``value`` as the lowest process has it (itself with one process)."""
    if not multi:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int64)))
