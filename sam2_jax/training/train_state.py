"""The resumable state of a fine-tuning run on disk, and the run's output directory.

``OUT`` (``RunDirectory``) is a converted directory plus the run's records:

  OUT/config.json, OUT/flax_params.safetensors   the fine-tuned model (``sam2_jax.load(OUT)``): the FULL param tree
                        of the source (video tensors included when it had them), the trained leaves replaced; the
                        file names and layout of ``checkpoints.converted.save_converted``; metadata ``step``
  OUT/metrics.jsonl     one JSON object per logged step (``step``, ``loss``, ``iou``, ``lr``, ``grad_norm``,
                        ``time``...); lines past the checkpoint's step are dropped on resume (``truncate_metrics``)
  OUT/curves.png        loss and IoU against the step (Pillow)
  OUT/train_state/      params.safetensors: the trained leaves of the image param tree, ``"a/b/c"`` keys;
                        opt_state.safetensors: the optimizer state's leaves, keys from their pytree paths
                        (``flatten_tree``), restored onto the structure of ``optimizer.init`` (``unflatten_onto``);
                        state.json: {"step", "loader" (the data loader's state), "key" (uint32 words), "args",
                        "elapsed", "format"}

What goes in it from a ``Trainer`` (``Trainer.save`` / ``Trainer.resume``) is ``checkpoint.py``;
``draw_curves(rows)`` draws curves.png.

Every file is written atomically (a temporary sibling, fsynced, then ``os.replace``); ``train_state`` as a whole
through ``atomic_directory(..., force=True)``, so a reader sees the old state or the new one, never a mix. The
model files are written BEFORE the state: an interruption in between leaves a state that is older than the
model files, and resuming from it redoes the same steps (deterministic) and rewrites them. If a run dies between
the two renames of ``atomic_directory`` (the old state moved aside, the new one not yet in place), ``load_state``
puts the newest complete one back.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from ..checkpoints.converted import PARAMS_FILE
from ..checkpoints.readers import CONFIG_FILE
from ..utils.atomic import atomic_directory, atomic_write

STATE_DIR = "train_state"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
STATE_FORMAT = 1

__all__ = [
    "RunDirectory",
    "flatten_tree",
    "unflatten_onto",
    "draw_curves",
    "STATE_DIR",
    "METRICS_FILE",
    "CURVES_FILE",
]


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flatten_tree(tree) -> dict[str, np.ndarray]:
    """Any pytree (an optax state, nested params) -> {"a/b/c": NumPy array}, keys from the leaves' paths."""
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(_key_name(k) for k in path)
        if name in flat:
            raise ValueError(f"two leaves of the tree share the key {name!r}")
        flat[name] = np.asarray(leaf)
    return flat


def unflatten_onto(template, flat: Mapping[str, np.ndarray], what: str = "state"):
    """The leaves of ``flat`` put onto ``template``'s structure (e.g. ``optimizer.init(params)``), shapes and dtypes
    checked; a missing, extra or misshapen leaf raises ``ValueError``."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = ["/".join(_key_name(k) for k in p) for p, _ in paths]
    if set(names) != set(flat):
        missing, extra = sorted(set(names) - set(flat)), sorted(set(flat) - set(names))
        raise ValueError(f"the saved {what} does not fit this run (missing {missing[:3]}, unexpected {extra[:3]})")
    leaves = []
    for name, (_, ref) in zip(names, paths, strict=True):
        value = flat[name]
        if value.shape != np.shape(ref) or value.dtype != np.asarray(ref).dtype:
            raise ValueError(
                f"the saved {what} leaf {name} is {value.dtype}{value.shape}, expected "
                f"{np.asarray(ref).dtype}{np.shape(ref)}"
            )
        leaves.append(value)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _save_safetensors(path: Path, flat: Mapping[str, np.ndarray], metadata: dict | None = None) -> None:
    from safetensors.numpy import save

    data = {k: np.asarray(v, order="C") for k, v in flat.items()}  # (ascontiguousarray makes 0-d 1-d)
    blob = save(data, metadata={k: str(v) for k, v in (metadata or {}).items()})
    atomic_write(path, lambda f: f.write(blob))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RunDirectory:
    """The files of a run in ``OUT`` (see the module docstring)."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.state_dir = self.out / STATE_DIR
        self.metrics_file = self.out / METRICS_FILE

    # -- the model -------------------------------------------------------------------------------------------
    def write_model(self, config, full_params: Mapping, step: int) -> None:
        """``config.json`` and ``flax_params.safetensors`` (float32, every leaf of ``full_params``)."""
        from ..checkpoints.converted import flatten_params

        self.out.mkdir(parents=True, exist_ok=True)
        flat = {k: np.asarray(v, np.float32) for k, v in flatten_params(full_params).items()}
        _save_safetensors(self.out / PARAMS_FILE, flat, {"format": "sam2-jax", "layout": "flax", "step": step})
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

    # -- the resumable state ---------------------------------------------------------------------------------
    def has_state(self) -> bool:
        self._recover()
        return (self.state_dir / "state.json").exists()

    def save_state(self, trained: Mapping[str, np.ndarray], opt_state, info: dict) -> None:
        """Write ``train_state/`` atomically: the trained params (flat), the optimizer state, ``info`` as JSON."""
        info = {"format": STATE_FORMAT, **info}
        text = json.dumps(info, indent=1, sort_keys=True)
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_directory(self.state_dir, force=True) as tmp:
            _save_safetensors(tmp / "params.safetensors", trained)
            _save_safetensors(tmp / "opt_state.safetensors", flatten_tree(opt_state))
            atomic_write(tmp / "state.json", lambda f: f.write(text.encode()))
            _fsync_dir(tmp)
        _fsync_dir(self.out)

    def read_info(self) -> dict | None:
        """``state.json`` (step, loader state, args...), or None when there is no state."""
        return json.loads((self.state_dir / "state.json").read_text()) if self.has_state() else None

    def load_state(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
        """(trained params flat, optimizer state flat, info) of ``train_state/``."""
        from ..checkpoints.readers import read_safetensors

        self._recover()
        info = json.loads((self.state_dir / "state.json").read_text())
        if info.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_dir} was written by another version (format {info.get('format')})")
        trained = read_safetensors(self.state_dir / "params.safetensors")
        opt = read_safetensors(self.state_dir / "opt_state.safetensors")
        return trained, opt, info

    def _recover(self) -> None:
        """Leftovers of an interrupted ``save_state``: put back the newest complete state if none is in place;
        remove temporary directories."""
        if not self.out.is_dir():
            return
        name = self.state_dir.name
        olds = sorted(self.out.glob(f".{name}.*.old"), key=lambda p: p.stat().st_mtime)
        if not self.state_dir.exists() and olds and (olds[-1] / "state.json").exists():
            olds[-1].rename(self.state_dir)
            olds = olds[:-1]
        for p in [*olds, *self.out.glob(f".{name}.*.tmp")]:
            shutil.rmtree(p, ignore_errors=True)

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
