"""What the image and the video ``sam2-jax finetune`` runs share: DATA and model digests, OUT's checks, the resume,
the first save and the fit with the command's options (``cli.finetune``, ``cli.finetune_video``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .common import log

__all__ = ["begin_run", "check_out", "fingerprint", "fit_run", "resume_run"]


def fingerprint(path: str) -> str:
    """A digest of a local file or directory's content listing (relative names and sizes); a Hub id as it is."""
    p = Path(path)
    if not p.exists():
        return str(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(p) if f != p else f.name}\0{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def check_out(args, sources: dict):
    """OUT's ``RunDirectory`` after refusing an OUT that is a file, another command's output, the model, or a run
    of other ``sources`` (DATA, model digests)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file")
    from ..training.train_state import CHECKPOINT_DIR, RunDirectory

    run_dir = RunDirectory(out, args.keep)
    if out.is_dir() and any(out.iterdir()) and not (out / CHECKPOINT_DIR).is_dir():
        if run_dir.model_step() is None:  # (not even the model files of an interrupted first save)
            raise ValueError(
                f"{out} exists and is not the output of sam2-jax finetune (no {CHECKPOINT_DIR}): choose another --out"
            )
    if Path(args.model).exists() and Path(args.model).resolve() == out.resolve():
        raise ValueError("--out must not be the --model directory")
    saved = (run_dir.read_info() or {}).get("args", {})
    differ = [k for k in sources if saved and saved.get(k) != sources[k]]
    if differ:
        raise ValueError(
            f"{out} holds a fine-tuning run of other {' and '.join(differ)}: rerun with the same DATA "
            "and --model to resume it, or choose another --out"
        )
    return run_dir


def resume_run(trainer, out, run_args):
    """The loader state of OUT's latest checkpoint (None: a new run); a run of other settings refused."""
    try:
        return trainer.resume(out, run_args)
    except ValueError as e:
        raise ValueError(str(e).replace("other settings", "other data, model or settings", 1)) from None


def begin_run(trainer, run_dir, loader, loader_state, run_args) -> bool:
    """A new run (no ``loader_state``): OUT made resumable by saving step 0, True; a resumed one logged, False."""
    out = run_dir.out
    if loader_state is not None:
        log(f"resuming {out} at step {trainer.step} of {trainer.steps}")
        return False
    out.mkdir(parents=True, exist_ok=True)
    if run_dir.metrics_file.exists():  # left by a first save that was interrupted
        run_dir.truncate_metrics(0)
    trainer.save(run_dir, loader.state(), run_args)
    return True


def fit_run(trainer, loader, args, run_args) -> list[dict]:
    """``trainer.fit`` with the command's logging, checkpoint and progress options; the last row printed."""
    rows = trainer.fit(loader, args.out, checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                       progress=not args.no_progress, args=run_args, keep=args.keep)  # fmt: skip
    if rows:
        print(f"step {rows[-1]['step']}: loss {rows[-1]['loss']:.4f}, IoU {rows[-1]['iou']:.3f}")
    return rows
