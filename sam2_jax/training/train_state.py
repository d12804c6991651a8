"""A fine-tuning run's output directory: the model, the metrics, and the resumable state as orbax checkpoints.

``OUT`` (``RunDirectory(out, keep=3)``) is a converted directory plus the run's records:

  OUT/config.json, OUT/flax_params.safetensors   the fine-tuned model (``sam2_jax.load(OUT)``): the FULL param tree
                        of the source (video tensors included when it had them), the trained leaves replaced; the
                        file names and layout of ``checkpoints.converted.save_converted``; metadata ``step``
  OUT/metrics.jsonl     one JSON object per logged step (``step``, ``loss``, ``iou``, ``lr``, ``grad_norm``,
                        ``time``...); lines past the checkpoint's step are dropped on resume (``truncate_metrics``)
  OUT/curves.png        loss and IoU against the step (Pillow)
  OUT/checkpoints/      an ``orbax.checkpoint.CheckpointManager`` directory, one ``<step>/`` per checkpoint, the
                        last ``keep`` kept, each with the items ``params`` (the trained leaves of the image param
                        tree, nested; ``StandardSave``), ``opt_state`` (the optax state), ``data_iter`` (the data
                        loader's state through grain's orbax handler, ``grain.checkpoint.CheckpointSave``: one
                        ``process_<i>-of-<n>.json`` per process) and ``state`` (JSON: step, key, elapsed, complete,
                        the settings ``args`` a resume must match, the last logged ``metrics`` row, ``format``)

``save_state(step, params, opt_state, loader_state, info)`` saves asynchronously (every process calls it in a
multi-host run; orbax writes each array once and commits a step by renaming its temporary directory, so a
reader sees complete checkpoints only; a half-written one is removed when the directory is opened again);
``wait()`` blocks until it is committed. ``read_info(step=None)`` -> the ``state`` item (the latest step's),
``restore_state(step, params_target, opt_target)`` -> (params, opt_state, loader_state, info) onto the targets'
shardings (``jax.ShapeDtypeStruct`` with a ``sharding``: any device count). The managers are shared per
directory within a process, so a restore waits for that directory's in-flight save. What goes in from a
``Trainer`` is ``checkpoint.py``; ``draw_curves(rows)`` draws curves.png. The model files are written (atomically)
BEFORE the checkpoint: an interruption in between leaves a checkpoint older than them, and resuming from it redoes
the same steps (deterministic) and rewrites them.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..checkpoints.converted import PARAMS_FILE
from ..checkpoints.readers import CONFIG_FILE
from ..utils.atomic import atomic_write

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
STATE_FORMAT = 2
KEEP = 3

__all__ = ["RunDirectory", "draw_curves", "CHECKPOINT_DIR", "METRICS_FILE", "CURVES_FILE", "KEEP"]

_MANAGERS: dict[str, tuple[int, object]] = {}  # checkpoint directory -> (keep, its CheckpointManager)


@atexit.register
def _finish_saves() -> None:
    for _, manager in list(_MANAGERS.values()):
        manager.wait_until_finished()


class _Snapshot:
    """The loader's state at save time, for grain's handler (``get_state() -> bytes``, as a grain DataLoader's)."""

    def __init__(self, state):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()


class _Receiver:
    """What grain's handler restores into: ``set_state(bytes)``, ``start_prefetch()``."""

    state = None

    def set_state(self, state: bytes) -> None:
        self.state = json.loads(state)

    def start_prefetch(self) -> None:
        pass


class RunDirectory:
    """The files of a run in ``OUT`` (see the module docstring)."""

    def __init__(self, out: str | os.PathLike, keep: int = KEEP):
        if keep < 1:
            raise ValueError(f"keep must be >= 1 checkpoint, got {keep}")
        self.out, self.keep = Path(out), int(keep)
        self.checkpoint_dir = self.out / CHECKPOINT_DIR
        self.metrics_file = self.out / METRICS_FILE

    # -- the model -------------------------------------------------------------------------------------------
    def write_model(self, config, full_params: Mapping, step: int) -> None:
        """``config.json`` and ``flax_params.safetensors`` (float32, every leaf of ``full_params``)."""
        from safetensors.numpy import save

        from ..checkpoints.converted import flatten_params

        self.out.mkdir(parents=True, exist_ok=True)
        flat = {k: np.asarray(v, np.float32, order="C") for k, v in flatten_params(full_params).items()}
        blob = save(flat, metadata={"format": "sam2-jax", "layout": "flax", "step": str(step)})
        atomic_write(self.out / PARAMS_FILE, lambda f: f.write(blob))
        text = (config.to_json_string() + "\n").encode()
        if not (self.out / CONFIG_FILE).exists() or (self.out / CONFIG_FILE).read_bytes() != text:
            atomic_write(self.out / CONFIG_FILE, lambda f: f.write(text))

    def model_step(self) -> int | None:
        """The ``step`` recorded in ``flax_params.safetensors``'s metadata (None when absent or unreadable)."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.out / PARAMS_FILE), "np") as f:
                return int((f.metadata() or {})["step"])
        except Exception:
            return None

    # -- the resumable state (orbax) -------------------------------------------------------------------------
    def manager(self, create: bool = False):
        """The directory's ``CheckpointManager`` (shared in this process), or None when there is no directory
        and not ``create``."""
        import orbax.checkpoint as ocp
        from grain.checkpoint import CheckpointHandler

        key = str(self.checkpoint_dir.resolve())
        if key in _MANAGERS and _MANAGERS[key][0] == self.keep:
            return _MANAGERS[key][1]
        if not self.checkpoint_dir.is_dir():
            if not create:
                return None
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if key in _MANAGERS:  # another ``keep``: finish its saves, reopen
            _MANAGERS.pop(key)[1].close()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=self.keep, enable_async_checkpointing=True, create=False, cleanup_tmp_directories=True
        )
        handlers = {
            "params": ocp.StandardCheckpointHandler(),
            "opt_state": ocp.StandardCheckpointHandler(),
            "data_iter": CheckpointHandler(),
            "state": ocp.JsonCheckpointHandler(),
        }
        manager = ocp.CheckpointManager(self.checkpoint_dir, options=options, item_handlers=handlers)
        _MANAGERS[key] = (self.keep, manager)
        return manager

    def steps(self) -> list[int]:
        """The committed checkpoints' steps, ascending (after any in-flight save of this process)."""
        manager = self.manager()
        if manager is None:
            return []
        manager.wait_until_finished()
        # orbax removes a killed save's ``<step>.orbax-checkpoint-tmp`` in a background future it only awaits
        # before the next save; wait for it here so that what this returns and what is on disk agree
        getattr(manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
        manager.reload()
        return sorted(manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def has_state(self) -> bool:
        return self.latest_step() is not None

    def save_state(self, step: int, params, opt_state, loader_state, info: dict) -> None:
        """Start saving checkpoint ``step`` (asynchronously; a step already saved is left as it is)."""
        import orbax.checkpoint as ocp
        from grain.checkpoint import CheckpointSave

        manager = self.manager(create=True)
        if step in manager.all_steps():
            return
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params),
            opt_state=ocp.args.StandardSave(opt_state),
            data_iter=CheckpointSave(_Snapshot(loader_state)),
            state=ocp.args.JsonSave({"format": STATE_FORMAT, **info}),
        )
        manager.save(step, args=args, force=True)

    def wait(self) -> None:
        """Block until this process's saves to the directory are committed."""
        manager = self.manager()
        if manager is not None:
            manager.wait_until_finished()

    def read_info(self, step: int | None = None) -> dict | None:
        """The ``state`` item of checkpoint ``step`` (default the latest), or None when there is none."""
        import orbax.checkpoint as ocp

        step = self.latest_step() if step is None else step
        if step is None:
            return None
        info = self.manager().restore(step, args=ocp.args.Composite(state=ocp.args.JsonRestore())).state
        if info.get("format") != STATE_FORMAT:
            raise ValueError(
                f"{self.checkpoint_dir}/{step} was written by another version (format {info.get('format')})"
            )
        return info

    def restore_state(self, step: int, params_target, opt_target):
        """(params, opt_state, loader_state, info) of checkpoint ``step``, the arrays onto the targets' shardings."""
        import orbax.checkpoint as ocp
        from grain.checkpoint import CheckpointRestore

        receiver = _Receiver()
        args = ocp.args.Composite(
            params=ocp.args.StandardRestore(params_target),
            opt_state=ocp.args.StandardRestore(opt_target),
            data_iter=CheckpointRestore(receiver),
            state=ocp.args.JsonRestore(),
        )
        got = self.manager().restore(step, args=args)
        return got.params, got.opt_state, receiver.state, got.state

    # -- metrics and curves ----------------------------------------------------------------------------------
    def append_metrics(self, rows: list[dict]) -> None:
        if rows:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_file, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
                f.flush()
                os.fsync(f.fileno())

    def read_metrics(self) -> list[dict]:
        rows = []
        if self.metrics_file.exists():
            for line in self.metrics_file.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut short by a kill: it and anything after are dropped
        return rows

    def truncate_metrics(self, step: int) -> None:
        """Keep only the rows of steps <= ``step`` (the checkpoint a run resumes from), atomically."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in rows).encode()
        atomic_write(self.metrics_file, lambda f: f.write(text))

    def write_curves(self) -> None:
        rows = self.read_metrics()
        if rows:
            image = draw_curves(rows)
            atomic_write(self.out / CURVES_FILE, lambda f: image.save(f, format="PNG"))


def draw_curves(rows: list[dict], width: int = 720, height: int = 520):
    """A Pillow image: the loss (top) and the IoU (bottom) of the metrics rows against their step."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    steps = [r["step"] for r in rows]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    panels = (("loss", (200, 40, 40)), ("iou", (30, 90, 200)))
    ph = height // len(panels)
    for i, (name, color) in enumerate(panels):
        pts = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), (int, float)) and np.isfinite(r[name])]
        x0, y0, x1, y1 = 60, i * ph + 25, width - 20, (i + 1) * ph - 30
        draw.rectangle((x0, y0, x1, y1), outline=(120, 120, 120))
        draw.text((x0, y0 - 16), name, fill=color)
        draw.text((x1 - 80, y1 + 6), f"step {s1}", fill=(0, 0, 0))
        draw.text((x0, y1 + 6), f"step {s0}", fill=(0, 0, 0))
        if not pts:
            continue
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        lo, hi = (0.0, 1.0) if name == "iou" else (lo, hi if hi > lo else lo + 1e-6)
        draw.text((4, y0), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((4, y1 - 12), f"{lo:.3g}", fill=(0, 0, 0))
        xy = [(x0 + (x1 - x0) * (s - s0) / (s1 - s0), y1 - (y1 - y0) * (v - lo) / (hi - lo)) for s, v in pts]
        if len(xy) > 1:
            draw.line(xy, fill=color, width=2)
        else:
            draw.ellipse((xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2), fill=color)
    return image
