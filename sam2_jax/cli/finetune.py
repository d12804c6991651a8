"""``sam2-jax finetune DATA --model SRC --out OUT``: fine-tune SAM 2 on your images and masks, resumably.

In: DATA, a directory ``images/`` + ``masks/`` (``training.data.SegmentationDataset.from_directory``: a label PNG
per image or a folder of binary PNGs per image), or with ``--coco FILE`` the images directory of a COCO
annotation file; ``--model``, anything ``sam2_jax.load`` reads. Training (``training.trainer.Trainer``): the
official losses, a click (or ``--use-box`` a box) sampled per object plus ``--correction-steps`` correction clicks,
AdamW with warm-up + cosine decay, data-parallel over every local device (``--batch-size`` a multiple of their
number), the frozen image encoder run once per image (``--train decoder`` / ``prompt+decoder``); with ``--train
all`` the image encoder at ``--encoder-lr-scale`` times the rate and the Hiera trunk with ``--layer-decay``
(``training.lr_scales``; default the official recipe, 0.6 and 0.9).
Out, in OUT: ``config.json`` + ``flax_params.safetensors`` (``sam2_jax.load(OUT)`` reads the fine-tuned model;
every tensor of the source kept, video ones included), ``metrics.jsonl`` (one JSON object per logged step),
``curves.png`` (loss and IoU), ``checkpoints/`` (resumable: orbax checkpoints of the trained params, optimizer
state, the grain loader's state and the run's settings, the last ``--keep`` kept), and with ``--eval-fraction``
``eval.json`` (held-out mIoU from one centre click per object, before and after). Images are decoded on grain's
threads, or ``--workers`` processes.

A checkpoint is saved (asynchronously) every ``--checkpoint-every`` steps; rerunning the same command continues
from it and ends with the params of an uninterrupted run; a finished run says so and exits 0. A rerun with another
DATA, model or setting is refused with one line naming what differs. Bad input exits 1 with one line
``error: <reason>``. With ``--video``: the video model on clips of a video dataset (``finetune_video``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import finetune_video
from .common import add_model_argument, error_line, log
from .finetune_run import begin_run, check_out, fingerprint, fit_run, resume_run

EVAL_FILE = "eval.json"
TRAINABLE = ("decoder", "prompt+decoder", "all")  # training.step.TRAINABLE (not imported: keeps --help fast)
VIDEO_TRAINABLE = ("memory", "decoder+memory")  # (and "all"): --video only
ENCODER_LR_SCALE, LAYER_DECAY = 0.6, 0.9  # the official whole-model recipe (vision_lr / base_lr, layer_decay_value)


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune the mask decoder (or more) on images and masks, resumably")
    p.description = "Fine-tune SAM 2 on an instance-segmentation dataset; rerun the same command to resume."
    p.add_argument("data", help="dataset directory (images/ + masks/), or the images directory with --coco")
    add_model_argument(p)
    p.add_argument("--out", required=True, help="output directory (fine-tuned model, metrics, curves, state)")
    p.add_argument("--train", choices=TRAINABLE + VIDEO_TRAINABLE, help="what trains (default decoder; --video memory)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", type=int, help="images per step, a multiple of the device count (default 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    p.add_argument("--warmup", type=int, help="linear warm-up steps (default steps // 20)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices (default 0.1)")
    p.add_argument(
        "--encoder-lr-scale", type=float, help=f"--train all: encoder lr / --lr (default {ENCODER_LR_SCALE})"
    )
    p.add_argument("--layer-decay", type=float, help=f"--train all: lr decay per Hiera block (default {LAYER_DECAY})")
    p.add_argument("--clip", type=float, default=0.1, help="gradient clipping by global norm, 0 = none (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="data order and prompt sampling seed (default 0)")
    p.add_argument("--coco", metavar="FILE", help="COCO annotation file; DATA is then its images directory")
    p.add_argument("--image-size", type=int, help="model input size (default: the model's)")
    p.add_argument("--mask-size", type=int, help="target mask size (default image size / 4, the low-res logits)")
    p.add_argument("--max-objects", type=int, help="objects per image (clip) per step (default 4; --video 3)")
    p.add_argument("--correction-steps", type=int, default=2, help="correction clicks per object (default 2)")
    p.add_argument("--use-box", action="store_true", help="first prompt: a jittered box instead of a click")
    p.add_argument("--bf16", action="store_true", help="compute in bfloat16 (params stay float32)")
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.0,
        help="hold out this fraction of the images and "
        "report their mIoU from one click before and after (default 0: none)",
    )
    p.add_argument("--checkpoint-every", type=int, default=100, metavar="N", help="save the state every N steps")
    p.add_argument("--keep", type=int, default=3, metavar="N", help="keep the last N checkpoints (default 3)")
    p.add_argument("--workers", type=int, default=0, help="image decoding processes (default 0: threads)")
    p.add_argument("--log-every", type=int, default=10, metavar="N", help="log metrics every N steps")
    p.add_argument("--cache-gb", type=float, default=4.0, help="host memory for cached image embeddings (GiB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    finetune_video.add_arguments(p)
    p.set_defaults(func=run)


def _check_numbers(args) -> None:
    for flag, value, low in (
        ("--steps", args.steps, 1),
        ("--batch-size", args.batch_size, 1),
        ("--max-objects", args.max_objects, 1),
        ("--correction-steps", args.correction_steps, 0),
        ("--checkpoint-every", args.checkpoint_every, 1),
        ("--keep", args.keep, 1),
        ("--workers", args.workers, 0),
        ("--log-every", args.log_every, 1),
        ("--mask-size", args.mask_size, 1),
        ("--image-size", args.image_size, 16),
        ("--warmup", args.warmup, 0),
        ("--frames", args.frames, 1),
        ("--corrections", args.corrections, 0),
    ):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if args.image_size is not None and args.image_size % 16:
        raise ValueError(f"--image-size must be a multiple of 16, got {args.image_size}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if not 0 <= args.eval_fraction < 1:
        raise ValueError(f"--eval-fraction must be in [0, 1), got {args.eval_fraction}")
    for flag, value in (("--encoder-lr-scale", args.encoder_lr_scale), ("--layer-decay", args.layer_decay)):
        if value is not None and args.train != "all":
            raise ValueError(f"{flag} only applies with --train all (the image encoder trains only then)")
    if args.encoder_lr_scale is not None and not args.encoder_lr_scale > 0:
        raise ValueError(f"--encoder-lr-scale must be > 0, got {args.encoder_lr_scale}")
    if args.layer_decay is not None and not 0 < args.layer_decay <= 1:
        raise ValueError(f"--layer-decay must be in (0, 1], got {args.layer_decay}")


def encoder_rates(args) -> dict:
    """The Trainer's ``encoder_lr_scale`` / ``layer_decay``: given or the official values with --train all."""
    scale = ENCODER_LR_SCALE if args.encoder_lr_scale is None else args.encoder_lr_scale
    decay = LAYER_DECAY if args.layer_decay is None else args.layer_decay
    return {"encoder_lr_scale": scale, "layer_decay": decay} if args.train == "all" else {}


def run(args) -> int:
    from ..checkpoints import CheckpointError

    try:
        return _run(args)
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError, OSError, RuntimeError) as e:
        print(error_line(e), file=sys.stderr)
        return 1


def _run(args) -> int:
    _check_numbers(args)
    if args.video:
        return finetune_video.run_video(args)
    if args.train in VIDEO_TRAINABLE:
        raise ValueError(f"--train {args.train} trains the video model's memory: it needs --video")
    args.train, args.max_objects = args.train or "decoder", args.max_objects or 4
    sources = {"data": fingerprint(args.data), "coco": fingerprint(args.coco) if args.coco else None,
               "model": fingerprint(args.model)}  # fmt: skip
    out, run_dir = Path(args.out), check_out(args, sources)
    if args.coco and not Path(args.coco).is_file():
        raise FileNotFoundError(f"no such annotation file: {args.coco}")
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"no such dataset directory: {args.data}")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from ..checkpoints import load_params
    from ..modeling.sam2_model import Sam2Model
    from ..training.data import SegmentationDataset, Subset
    from ..training.loader import DataLoader
    from ..training.trainer import Trainer
    from ..utils.atomic import atomic_write
    from ..utils.compile_cache import enable_compile_cache

    enable_compile_cache()
    n_dev = len(jax.devices())
    batch_size = args.batch_size or n_dev * max(1, -(-8 // n_dev))
    if batch_size % n_dev:
        raise ValueError(f"--batch-size {batch_size} must be a multiple of the {n_dev} devices")
    if args.coco:
        dataset = SegmentationDataset.from_coco(args.coco, args.data)
    else:
        dataset = SegmentationDataset.from_directory(args.data)
    held = []
    if args.eval_fraction > 0:
        order = np.random.default_rng([args.seed, 7]).permutation(len(dataset))
        k = max(1, round(args.eval_fraction * len(dataset)))
        held, kept = sorted(order[:k].tolist()), sorted(order[k:].tolist())
        train_set, eval_set = Subset(dataset, kept), Subset(dataset, held)
    else:
        train_set, eval_set = dataset, None
    if len(train_set) < batch_size:
        raise ValueError(f"{len(train_set)} training images, fewer than the batch size {batch_size}")

    config, full = load_params(args.model)
    size = args.image_size or config.prompt_encoder_config.image_size
    config = config.at_image_size(size)
    mask_size = args.mask_size or size // 4
    model = Sam2Model(config)
    run_args = {
        **sources,
        "image_size": size,
        "mask_size": mask_size,
        "max_objects": args.max_objects,
        "eval_fraction": args.eval_fraction,
        "held_out": held,
    }
    trainer = Trainer(
        model,
        full,
        trainable=args.train,
        lr=args.lr,
        steps=args.steps,
        warmup=args.steps // 20 if args.warmup is None else args.warmup,
        weight_decay=args.weight_decay,
        clip=args.clip or None,
        batch_size=batch_size,
        num_correction_steps=args.correction_steps,
        use_box=args.use_box,
        dtype=jnp.bfloat16 if args.bf16 else None,
        seed=args.seed,
        cache_bytes=int(args.cache_gb * (1 << 30)),
        **encoder_rates(args),
    )
    loader_state = resume_run(trainer, out, run_args)
    evaluate = lambda p: trainer.evaluate(p, eval_set, mask_size=mask_size, max_objects=args.max_objects)  # noqa: E731
    log(dataset.report())
    if loader_state is not None and trainer.complete:
        print(f"{out}: the run is complete ({trainer.steps} steps); nothing to do")
        return 0
    loader = DataLoader(
        train_set,
        batch_size,
        image_size=size,
        mask_size=mask_size,
        max_objects=args.max_objects,
        seed=args.seed,
        state=loader_state,
        worker_count=args.workers,
    )
    try:
        if begin_run(trainer, run_dir, loader, loader_state, run_args) and eval_set is not None:
            before = evaluate(trainer.params)
            log(f"held-out mIoU before: {before:.4f} ({len(eval_set)} images)")
            atomic_write(out / EVAL_FILE, lambda f: f.write(json.dumps({"before": before}).encode()))
        log(f"training {args.train} on {len(train_set)} images, batch {batch_size} over {n_dev} device(s)")
        fit_run(trainer, loader, args, run_args)
    finally:
        loader.close()
    if eval_set is not None:
        results = json.loads((out / EVAL_FILE).read_text()) if (out / EVAL_FILE).exists() else {}
        results["after"] = evaluate(trainer.params)
        atomic_write(out / EVAL_FILE, lambda f: f.write(json.dumps(results).encode()))
        before = results.get("before")
        print(
            f"held-out mIoU from one click: {before:.4f} -> {results['after']:.4f}"
            if before is not None
            else f"held-out mIoU from one click: {results['after']:.4f}"
        )
    print(f"fine-tuned model in {out} ({os.path.join(str(out), 'metrics.jsonl')}, curves.png)")
    return 0
