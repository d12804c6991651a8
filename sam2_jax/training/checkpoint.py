"""A ``Trainer``'s checkpoints in its run directory (``train_state.RunDirectory``): ``Trainer.save`` /
``Trainer.resume``.

  save_checkpoint(trainer, out, loader_state=None, args=None): the model files (the full param tree, float32), then
        ``train_state`` (the trained leaves, the optimizer state, step / loader state / key / elapsed / args), then
        the curves
  restore_checkpoint(trainer, out, args=None) -> the loader state, or None (nothing changed) when ``out`` holds no
        state: params (the frozen leaves from the trainer's initial params, the source), optimizer state, step,
        key; metrics rows past the step dropped, the model files rewritten if they are not of that step. A state
        written with other settings (``trainer.run_args(args)`` differs) raises ``ValueError`` naming them.

Multi-host (a trainer whose mesh spans processes): only the mesh's lowest process writes; every process calls
both functions (they end at a barrier). A resume reads ``out`` on every process, so ``out`` must be on a file
system they share; processes that find different steps raise ``ValueError``.
"""

from __future__ import annotations

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from . import multihost
from .train_state import RunDirectory, unflatten_onto

__all__ = ["save_checkpoint", "restore_checkpoint"]


def _settings_diff(saved: dict, expected: dict) -> list[str]:
    """The keys whose values differ (those of the trainer's hyperparameters by their own names)."""
    keys = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
    if "trainer" in keys:
        keys.remove("trainer")
        t0, t1 = saved.get("trainer") or {}, expected.get("trainer") or {}
        keys += sorted(k for k in set(t0) | set(t1) if t0.get(k) != t1.get(k))
    return keys


def save_checkpoint(trainer, out, loader_state=None, args: dict | None = None) -> None:
    """See the module docstring."""
    run = out if isinstance(out, RunDirectory) else RunDirectory(out)
    if trainer.is_writer:
        host = {"/".join(k): v for k, v in flatten_dict(jax.device_get(trainer.params)).items()}
        run.write_model(trainer.config, trainer.export_params(), trainer.step)
        trained = {k: np.asarray(v) for k, v in host.items() if trainer.labels[k] == "train"}
        info = {
            "step": trainer.step,
            "steps": trainer.steps,
            "complete": trainer.complete,
            "loader": loader_state,
            "key": np.asarray(trainer.key).tolist(),
            "elapsed": trainer.elapsed,
            "args": trainer.run_args(args),
        }
        run.save_state(trained, jax.device_get(trainer.opt_state), info)
        run.write_curves()
    multihost.barrier(f"sam2_jax checkpoint {run.out} {trainer.step}", trainer.multihost)


def restore_checkpoint(trainer, out, args: dict | None = None):
    """See the module docstring."""
    run, multi = RunDirectory(out), trainer.multihost
    if multi:  # the writer puts back an interrupted save's state before anyone reads
        if trainer.is_writer:
            run.has_state()
        multihost.barrier(f"sam2_jax resume {run.out}", multi)
    loaded = run.load_state() if run.has_state() else None
    step = -1 if loaded is None else int(loaded[2].get("step", -1))
    if not multihost.all_true(step == _writer_value(step, multi), multi):
        raise ValueError(f"the processes find different states in {out}: it must be on a file system they share")
    if loaded is None:
        return None
    trained, opt_flat, info = loaded
    expected = trainer.run_args(args)
    if info.get("args") != expected:
        keys = _settings_diff(info.get("args") or {}, expected)
        raise ValueError(
            f"{out} holds a run with other settings ({', '.join(keys)}): rerun with the same "
            "arguments to resume it, or choose another output directory"
        )
    flat = {"/".join(k): v for k, v in flatten_dict(trainer.initial).items()}
    if set(trained) != {k for k, v in trainer.labels.items() if v == "train"}:
        raise ValueError(f"{run.state_dir}: the saved params are not this run's trained params")
    flat.update({k: unflatten_onto(flat[k], {"": v}, f"param {k}") for k, v in trained.items()})
    params = unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    trainer.set_state(params, lambda template: unflatten_onto(template, opt_flat, "optimizer state"), info)
    if trainer.is_writer:
        run.truncate_metrics(trainer.step)
        if run.model_step() != trainer.step:  # the model files do not match the state: rewrite them
            run.write_model(trainer.config, trainer.export_params(), trainer.step)
    multihost.barrier(f"sam2_jax resumed {run.out}", multi)
    return info.get("loader")


def _writer_value(value: int, multi: bool) -> int:
    """``value`` as the lowest process has it (itself with one process)."""
    if not multi:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int64)))
