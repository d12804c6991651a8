"""``sam2-jax finetune DATA --video --model SRC --out OUT``: fine-tune SAM 2's video model on clips, resumably.

In: DATA, a video dataset ``training.video_data.VideoDataset`` reads, found by its layout: ``JPEGImages/`` +
``Annotations/`` (DAVIS / YouTube-VOS), ``<video>_manual.json`` files (SA-V), or a ``sam2-jax annotate`` output
(``video.json``; ``--annotated-video VIDEO`` names the video it tracked); ``--model`` a checkpoint with the video
tensors. Training (``training.video_trainer.VideoTrainer``): clips of ``--frames`` consecutive annotated frames
with at most ``--max-objects`` objects (default 3), sampled as the official trainer does, one clip batch of
``--batch-size`` (default 1) per step, the official prompt simulation (clicks, boxes or masks on conditioning
frames, ``--corrections`` correction clicks), ``--train memory`` (default: memory attention, memory encoder,
pointers), ``decoder+memory`` or ``all``; the frozen image encoder runs once per frame (cached, ``--cache-gb``).
Out, in OUT, as the image fine-tuning: config.json + flax_params.safetensors (the whole video model:
``Sam2VideoPredictor.from_pretrained(OUT)``), metrics.jsonl, curves.png, checkpoints/. Rerunning the same command
resumes; other DATA, model or settings are refused with one line. Not supported with --video: --coco,
--eval-fraction, --use-box, --workers, --encoder-lr-scale / --layer-decay, several devices.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["add_arguments", "open_dataset", "run_video"]


def add_arguments(p) -> None:
    g = p.add_argument_group("video (--video)")
    g.add_argument("--video", action="store_true", help="fine-tune the video model on clips (DAVIS / SA-V / annotate)")
    g.add_argument("--frames", type=int, default=8, help="frames per training clip (default 8)")
    g.add_argument("--corrections", type=int, default=7, help="correction clicks per corrected frame (default 7)")
    g.add_argument("--annotated-video", metavar="VIDEO", help="the video an annotate output DATA tracked")


def open_dataset(data: str, annotated_video: str | None = None):
    """The ``VideoDataset`` of DATA's layout (see the module docstring)."""
    from ..training.video_data import VideoDataset

    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"no such dataset directory: {data}")
    if (root / "JPEGImages").is_dir():
        return VideoDataset.from_davis(root)
    if (root / "video.json").is_file():
        if not annotated_video:
            raise ValueError(f"{data} is a sam2-jax annotate output: name the video it tracked with --annotated-video")
        return VideoDataset.from_annotate(annotated_video, root)
    if any(root.glob("*_manual.json")):
        return VideoDataset.from_sav(root)
    raise ValueError(f"{data}: not a video dataset (JPEGImages/ + Annotations/, SA-V *_manual.json or video.json)")


def run_video(args) -> int:
    from .common import log
    from .finetune_run import begin_run, check_out, fingerprint, fit_run, resume_run

    for flag, bad in (("--coco", args.coco), ("--eval-fraction", args.eval_fraction), ("--use-box", args.use_box),
                      ("--workers", args.workers), ("--encoder-lr-scale", args.encoder_lr_scale),
                      ("--layer-decay", args.layer_decay)):  # fmt: skip
        if bad:
            raise ValueError(f"{flag} is not supported with --video")
    if args.train in ("decoder", "prompt+decoder"):
        raise ValueError(f"--train {args.train} is for images: with --video use memory, decoder+memory or all")
    train, max_objects, batch_size = args.train or "memory", args.max_objects or 3, args.batch_size or 1
    sources = {"data": fingerprint(args.data), "model": fingerprint(args.model),
               "annotated_video": fingerprint(args.annotated_video) if args.annotated_video else None}  # fmt: skip
    out, run_dir = Path(args.out), check_out(args, sources)
    dataset = open_dataset(args.data, args.annotated_video)

    import jax.numpy as jnp

    from ..checkpoints import CheckpointError, load_params
    from ..modeling.sam2_video_model import Sam2VideoModel
    from ..training.video_sampling import VideoClipSource
    from ..training.video_trainer import VideoTrainer
    from ..utils.compile_cache import enable_compile_cache

    enable_compile_cache()
    source = VideoClipSource(dataset, args.frames, max_objects, seed=args.seed)
    if len(source) < batch_size:
        raise ValueError(f"{len(source)} videos of {args.frames} frames, fewer than --batch-size {batch_size}")
    config, full = load_params(args.model)
    if "memory_attention" not in full:
        raise CheckpointError(f"{args.model} has no video tensors (memory attention): --video needs a video model")
    size = args.image_size or config.prompt_encoder_config.image_size
    config = config.at_image_size(size)
    run_args = {**sources, "image_size": size, "max_objects": max_objects, "video": True}
    trainer = VideoTrainer(
        Sam2VideoModel(config),
        full,
        trainable=train,
        lr=args.lr,
        steps=args.steps,
        warmup=args.steps // 20 if args.warmup is None else args.warmup,
        weight_decay=args.weight_decay,
        clip=args.clip or None,
        batch_size=batch_size,
        num_frames=args.frames,
        dtype=jnp.bfloat16 if args.bf16 else None,
        seed=args.seed,
        cache_bytes=int(args.cache_gb * (1 << 30)),
        num_correction_pt_per_frame=args.corrections,
    )
    loader_state = resume_run(trainer, out, run_args)
    log(dataset.report())
    log(source.report())
    if loader_state is not None and trainer.complete:
        print(f"{out}: the run is complete ({trainer.steps} steps); nothing to do")
        return 0
    loader = trainer.data_loader(source, size, max_objects, seed=args.seed, state=loader_state)
    try:
        begin_run(trainer, run_dir, loader, loader_state, run_args)
        log(f"training {train} on {len(source)} videos, {batch_size} clip(s) of {args.frames} frames per step")
        fit_run(trainer, loader, args, run_args)
    finally:
        loader.close()
    print(f"fine-tuned video model in {out} ({os.path.join(str(out), 'metrics.jsonl')}, curves.png)")
    return 0
