"""Training speed where users feel it: one train step of ours against the official trainer's on the same work, peak
memory, and a whole ``sam2-jax finetune`` run.

    python benchmarks/bench_train.py [--image-size 256] [--frames 8] [--objects 3] [--batch 4] [--repeats 3]
        [--run-steps 150] [--skip-steps] [--skip-run]

Weights: the official tiny architecture at ``--image-size`` (``++model.image_size``), every tensor randomised
(``tests/reference.py``; speed does not depend on the values), the official ``SAM2Train`` built from its yaml and
ours converted from its state dict. Each contender runs in a subprocess of its own (so that its peak RSS is its
own), warm-up first (ours: the compile), then ``--repeats`` steps, median.

1. Video step: a clip of ``--frames`` bedroom frames, ``--objects`` moving shapes, the MOSE prompt settings (a click,
   box or mask on the initial frame(s), 7 correction clicks on the frames to correct), ``trainable="memory"``:
   the official ``SAM2Train.forward`` (its image encoder runs on every frame, without gradients) + the official
   ``MultiStepMultiMasksAndIous`` + backward + ``torch.optim.AdamW`` over the memory path, against ours: the
   frozen encoder's features (``clip_frame_features``) + ``make_video_train_step``'s jitted step (features,
   losses, gradients, AdamW). Ours is timed both with the features computed in the step's time and from cached
   features (what ``finetune --video`` does once an epoch has run: the encoder is frozen).
2. Image step: the same ``SAM2Train`` on one-frame clips (how the official trainer trains on images: SA-1B is a
   video of one frame) of ``--batch`` images with ``--objects`` objects, a click + ``--corrections`` correction
   clicks, the mask decoder trained; ours: ``make_train_step`` with ``trainable="decoder"`` on the cached image
   embeddings (``finetune``'s embedding cache), and with the encoder run in the step's time.
3. The run users start: ``sam2-jax finetune`` as a subprocess (imports, model loading, decoding, compiles, every
   step, checkpoints, export) on 12 generated 640x480 photos, the real tiny size at 1024 px, ``--run-steps``
   decoder steps, ``--batch 4``, default correction steps: wall time and its per-step share.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
LR, WD = 1e-4, 0.1


def _clip(frames: int, batch: int, objects: int, size: int):
    """(T, B, S, S, 3) normalised bedroom frames (the b-th video starts b frames later) and (T, B, O, S, S) masks of
    ellipses and boxes moving over them."""
    from PIL import Image

    bedroom = ROOT / "tests" / "data" / "videos" / "bedroom"
    imgs = [np.asarray(Image.open(bedroom / f"{i:05d}.jpg").convert("RGB").resize((size, size))) for i in range(48)]
    x = (np.stack(imgs) / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    pixels = np.stack([x[b : b + frames] for b in range(batch)], 1).astype(np.float32)
    yy, xx = np.mgrid[:size, :size] / size
    masks = np.zeros((frames, batch, objects, size, size), bool)
    for t in range(frames):
        for b in range(batch):
            for o in range(objects):
                cy, cx = 0.25 + 0.2 * o + 0.02 * t, 0.2 + 0.25 * o + 0.03 * t + 0.05 * b
                if o % 2 == 0:
                    masks[t, b, o] = ((yy - cy) / 0.15) ** 2 + ((xx - cx) / 0.12) ** 2 < 1
                else:
                    masks[t, b, o] = (abs(yy - cy) < 0.12) & (abs(xx - cx) < 0.15 - 0.01 * t)
    return pixels, masks


def _official_step(model, pixels, masks, trained: tuple[str, ...]):
    """One official step: SAM2Train.forward, the MOSE-weighted loss, backward, AdamW over ``trained``; -> loss."""
    import torch
    from test_video_train_step import official_batch, official_criterion

    t, b, s = masks.shape[0], masks.shape[1], masks.shape[3]
    flat = torch.from_numpy(pixels.transpose(1, 0, 4, 2, 3).reshape(b * t, 3, s, s).copy())
    batch = official_batch(flat, masks)
    named = [p for k, p in model.named_parameters() if k.startswith(trained)]
    for k, p in model.named_parameters():
        p.requires_grad_(k.startswith(trained))
    if not hasattr(model, "_bench_opt"):
        decay, no_decay = [p for p in named if p.dim() >= 2], [p for p in named if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}]
        model._bench_opt = torch.optim.AdamW(groups, lr=LR)
    opt = model._bench_opt
    opt.zero_grad()
    loss = official_criterion()(model(batch), batch.masks)["core_loss"]
    loss.backward()
    opt.step()
    return float(loss.detach())


def _timed(fn, repeats: int) -> tuple[float, float]:
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), first


def worker(args) -> dict:
    """One contender of one case (``--worker CASE:SIDE``), in this process: its timings and peak RSS."""
    case, side = args.worker.split(":")
    video = case == "video"
    frames, batch = (args.frames, 1) if video else (1, args.batch)
    pixels, masks = _clip(frames, batch, args.objects, args.image_size)
    from sam2_jax.training.video_prompts import VideoPromptSettings

    mose = VideoPromptSettings()
    if video:
        settings = {k: getattr(mose, k) for k in mose.__dataclass_fields__ if k.endswith("_for_train") or
                    k in ("num_correction_pt_per_frame", "add_all_frames_to_correct_as_cond")}  # fmt: skip
    else:  # a click on the one frame and corrections on it, as make_train_step
        settings = dict(prob_to_use_pt_input_for_train=1.0, prob_to_use_box_input_for_train=0.0,
                        num_frames_to_correct_for_train=1, num_init_cond_frames_for_train=1,
                        num_correction_pt_per_frame=args.corrections)  # fmt: skip
    settings = {k: v for k, v in settings.items() if not k.startswith("box_noise")}
    from test_video_train_step import official_train_model

    model = official_train_model(args.image_size, settings, 1.0).train()
    out = {"case": case, "side": side}
    if side == "official":
        from test_video_train_step import OFFICIAL_MEMORY

        trained = OFFICIAL_MEMORY if video else ("sam_mask_decoder.",)
        out["median_s"], out["first_s"] = _timed(lambda: _official_step(model, pixels, masks, trained), args.repeats)
    else:
        import jax
        from reference import official_config_at, state_dict_numpy

        from sam2_jax.checkpoints.key_mapping import convert_state_dict
        from sam2_jax.modeling.sam2_model import Sam2Model
        from sam2_jax.modeling.sam2_video_model import Sam2VideoModel, image_params
        from sam2_jax.training.step import make_optimizer, make_train_step
        from sam2_jax.training.video_step import clip_frame_features, make_video_train_step

        config = official_config_at(args.image_size)
        params = jax.device_put(convert_state_dict(state_dict_numpy(model), config, "official"))
        del model
        opt = make_optimizer(LR, weight_decay=WD)
        key = jax.random.PRNGKey(0)
        if video:
            net = Sam2VideoModel(config)
            train = make_video_train_step(net, opt, "memory", frames, mose)
            encode = jax.jit(lambda p, x: clip_frame_features(net, p, x))
            feats = jax.block_until_ready(encode(params, pixels))
            batch_of = lambda f: dict(frame_features=f, masks=masks)  # noqa: E731
        else:
            net = Sam2Model(config)
            params = image_params(params)
            train = make_train_step(net, opt, "decoder", num_correction_steps=args.corrections)
            encode = jax.jit(lambda p, x: net.apply({"params": p}, x[0], method=Sam2Model.get_image_embeddings))
            feats = jax.block_until_ready(encode(params, pixels))
            low = args.image_size // 4
            small = masks[0].reshape(batch, args.objects, low, 4, low, 4).any((3, 5))
            batch_of = lambda f: dict(image_embeddings=f, masks=small)  # noqa: E731
        state = [train.init(params)]

        def step(with_encoder: bool):
            f = encode(params, pixels) if with_encoder else feats
            p, state[0], m = train.step(params, state[0], batch_of(f), key)
            jax.block_until_ready((p, m))

        out["median_s"], out["first_s"] = _timed(lambda: step(False), args.repeats)
        out["with_encoder_s"], _ = _timed(lambda: step(True), args.repeats)
        compiled = train.step.lower(params, state[0], batch_of(feats), key).compile()
        mem = compiled.memory_analysis()
        if mem is not None:
            out["xla_temp_mib"] = mem.temp_size_in_bytes / 2**20
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_finetune(steps: int) -> dict:
    """``sam2-jax finetune`` as users start it, on 12 generated 640x480 photos with the real tiny size at 1024 px."""
    from reference import random_params

    import sam2_jax
    from sam2_jax.training.synthetic import write_shapes_dataset

    work = Path(tempfile.mkdtemp(prefix="sam2-bench-train-"))
    config = sam2_jax.get_config("tiny")
    model = sam2_jax.save_converted(work / "model", config, random_params(config, score_shift=2.0))
    write_shapes_dataset(work / "data", 12, (480, 640), seed=0)
    cmd = [sys.executable, "-m", "sam2_jax.cli", "finetune", str(work / "data"), "--model", str(model), "--out",
           str(work / "out"), "--steps", str(steps), "--batch-size", "4", "--checkpoint-every", "50"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t
    rows = [json.loads(line) for line in (work / "out" / "metrics.jsonl").read_text().splitlines()]
    return {"wall_s": wall, "steps": steps, "rows": len(rows), "work": str(work)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--corrections", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run-steps", type=int, default=150)
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--skip-run", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.frames < 3:  # with the MOSE settings up to 2 frames are conditioning frames: no memory would train
        p.error(f"--frames must be >= 3 (the MOSE settings condition on up to 2 frames), got {args.frames}")
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return
    from common import machine

    print(machine(), flush=True)
    if not args.skip_steps:
        passed = [a for a in sys.argv[1:] if not a.startswith("--skip")]
        rows = {}
        for case in ("video", "image"):
            for side in ("official", "ours"):
                res = subprocess.run([sys.executable, __file__, *passed, "--worker", f"{case}:{side}"],
                                     capture_output=True, text=True, check=False)  # fmt: skip
                line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
                if not line:
                    sys.exit(f"{case}:{side} failed:\n{res.stderr[-3000:]}")
                rows[case, side] = json.loads(line[0][7:])
                print(f"  {case}:{side} {rows[case, side]}", flush=True)
        print()
        shape = {
            "video": f"{args.frames} frames x {args.objects} objects, trainable memory",
            "image": f"{args.batch} images x {args.objects} objects, 1 + {args.corrections} clicks, decoder",
        }
        for case in ("video", "image"):
            off, ours = rows[case, "official"], rows[case, "ours"]
            o, e, c = off["median_s"], ours["with_encoder_s"], ours["median_s"]
            print(f"{case} step at {args.image_size} px ({shape[case]}):")
            print(f"  official SAM2Train step      {o * 1000:9.0f} ms   peak RSS {off['peak_rss_mib']:6.0f} MiB")
            print(f"  ours, encoder in the step    {e * 1000:9.0f} ms   official / ours = {o / e:.2f}")
            print(
                f"  ours, cached features        {c * 1000:9.0f} ms   official / ours = {o / c:.2f}   "
                f"peak RSS {ours['peak_rss_mib']:6.0f} MiB, XLA temp {ours.get('xla_temp_mib', float('nan')):.0f} "
                f"MiB, first call {ours['first_s']:.1f} s"
            )
    if not args.skip_run:
        r = run_finetune(args.run_steps)
        print(
            f"sam2-jax finetune, {r['steps']} decoder steps, batch 4, tiny at 1024 px, 12 photos 640x480: "
            f"{r['wall_s']:.0f} s wall ({r['wall_s'] / r['steps']:.2f} s a step, all included; target 600 s)"
        )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
