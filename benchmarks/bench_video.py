"""Video tracking with the official tiny architecture: sam2-jax against the official ``SAM2VideoPredictor`` and
transformers' ``Sam2VideoModel``, measured in one run.

    python benchmarks/bench_video.py [--image-size 1024] [--frames 16] [--objects 1 4 16] [--repeats 3]
        [--memory-frames 50 200] [--memory-image-size S] [--skip-official] [--skip-transformers]
    python benchmarks/bench_video.py --objects 1 4                   # the usual full-size run
    python benchmarks/bench_video.py --image-size 256 --frames 9 --objects 1 --memory-frames 10 20   # quick check

Frames: the first ``--frames`` of ``tests/data/videos/bedroom`` (960x540 JPEGs, repeated cyclically past its 48),
copied to a temporary directory that both predictors load their own way (transformers gets the decoded frames).
Objects: one click each on frame 0 at distinct points of a grid, object ids 1..n. Weights are randomised
(``tests/reference.py``; speed does not depend on their values): the official predictor is
``official_video_predictor(image_size)`` (float32, CPU, hole filling off) and ours loads its state dict as an
official ``.pt`` (``fill_hole_area=0``, ``keep_history=False``); transformers' model is randomised on its own.

1. Per-frame time once the memory bank is full: the wall time between consecutive yields of what users call
   (``propagate_in_video`` / ``propagate_in_video_iterator`` + ``post_process_masks``: masks at the video's
   resolution), median over the frames after the first ``num_maskmem`` (7) tracked ones, for ours in float32
   (default implementation), ours with ``dtype=bfloat16`` (computation and memories in bfloat16), the official
   predictor and transformers. Each contender runs in its own phase (no overlap); ratios other / ours (> 1: ours
   is faster) and ours f32 / ours bf16.
2. Fraction of this machine's matmul peak: the peak is measured in the same run (jitted ``jnp.dot`` of
   ``--matmul-size``^3, float32 at highest precision and bfloat16, and ``torch.mm`` float32, medians); the FLOPs of
   one full-bank frame are counted analytically from the config as the official computes them (memory attention,
   mask decoder and memory encoder per object, image encoder once per frame from XLA's cost analysis of
   ``Sam2VideoModel.frame_features``). Prints achieved GFLOP/s = FLOPs / time and its fraction of the peak of the
   contender's arithmetic. Ours computes the cross-attention over the 64-channel memories before projecting (fewer
   FLOPs than counted), so its "achieved" rate is reference-equivalent; the XLA count of our compiled step is shown
   beside it.
3. Host memory against frame count: ours (``keep_history=False``) and the official predictor, one object, each in
   its own subprocess over ``max(--memory-frames)`` frames (at ``--memory-image-size``, default ``--image-size``);
   RSS (``/proc/self/statm``) after ``init_state`` (the official decodes and keeps every frame upfront; ours
   decodes lazily) and after each count of frames, and the process's peak RSS.

Cost at 1024 px on a 2-core CPU: the official memory attention alone is ~0.6 TFLOP per object and frame, so
16 objects take on the order of a minute per frame per contender; the memory phase takes ~1-2 h at 200 frames
(pass ``--memory-image-size 512`` or fewer ``--memory-frames`` for less, or ``--memory-frames`` with no value to
skip it).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

BEDROOM = os.path.join(ROOT, "tests", "data", "videos", "bedroom")
os.environ.setdefault("TQDM_DISABLE", "1")  # the official's progress bars (read when tqdm is first imported)


def log(msg: str) -> None:
    print(msg, flush=True)


def rss_mb() -> float:
    """Current resident set size of this process (``/proc/self/statm``), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def hwm_mb() -> float:
    """Peak resident set size of this process image (``VmHWM``), MiB. Unlike ``getrusage``'s ``ru_maxrss``, which
    Linux carries across ``exec``, it starts afresh in a subprocess."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def video_dir(dst: str, n: int) -> str:
    """``dst`` filled with n frames named 00000.jpg.. (the bedroom frames, repeated cyclically past their count)."""
    src = sorted(f for f in os.listdir(BEDROOM) if f.endswith(".jpg"))
    os.makedirs(dst, exist_ok=True)
    for i in range(n):
        shutil.copy(os.path.join(BEDROOM, src[i % len(src)]), os.path.join(dst, f"{i:05d}.jpg"))
    return dst


def click_points(n: int, width: int, height: int) -> list[tuple[float, float]]:
    """n distinct points: centres of a ceil(sqrt(n))-column grid over the frame."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    return [((i % cols + 0.5) * width / cols, (i // cols + 0.5) * height / rows) for i in range(n)]


def frame_gaps(iterable, skip: int) -> list[float]:
    """Seconds between consecutive items of ``iterable`` (each fully produced), for items at positions > skip."""
    gaps = []
    last = time.perf_counter()
    for i, _ in enumerate(iterable):
        now = time.perf_counter()
        if i > skip:
            gaps.append(now - last)
        last = now
    return gaps


# ---- phase 1: per-frame time ---------------------------------------------------------------------------------------


def time_ours(checkpoint, size, dtype, objects, frames, skip, config_fn, frame_size):
    """{objects: list of per-frame seconds} for ours; also the predictor (for the FLOP counts)."""
    from sam2_jax.frontends.video.predictor import Sam2VideoPredictor

    pred = Sam2VideoPredictor.from_pretrained(
        checkpoint, config=config_fn(size), fill_hole_area=0, keep_history=False, dtype=dtype
    )
    out, states = {}, {}
    for n in objects:
        state = pred.init_state(frames)
        for i, (x, y) in enumerate(click_points(n, *frame_size)):
            pred.add_new_points_or_box(state, 0, i + 1, points=[[x, y]], labels=[1])
        out[n] = frame_gaps(pred.propagate_in_video(state), skip)
        states[n] = state
        log(f"  {n} objects: {statistics.median(out[n]):.4f} s/frame (frames: {fmt_list(out[n])})")
    return out, pred, states


def time_official(official, objects, frames, skip, frame_size):
    import numpy as np
    import torch

    out = {}
    for n in objects:
        with torch.inference_mode():
            state = official.init_state(frames)
            for i, (x, y) in enumerate(click_points(n, *frame_size)):
                official.add_new_points_or_box(state, frame_idx=0, obj_id=i + 1, points=np.array([[x, y]], np.float32),
                                               labels=np.array([1], np.int32))  # fmt: skip
            out[n] = frame_gaps(official.propagate_in_video(state), skip)
        del state
        gc.collect()
        log(f"  {n} objects: {statistics.median(out[n]):.4f} s/frame (frames: {fmt_list(out[n])})")
    return out


def time_transformers(config, size, objects, video, skip, frame_size):
    """transformers' Sam2VideoModel through its video session API; masks post-processed to the video's size."""
    import torch
    import transformers
    from reference import build_transformers_model

    tm = build_transformers_model(config, seed=0, video=True)
    square = {"height": size, "width": size}
    processor = transformers.Sam2VideoProcessor(
        image_processor=transformers.Sam2ImageProcessor(size=square),
        video_processor=transformers.Sam2VideoVideoProcessor(size=square),
    )
    h, w = video.shape[1:3]
    out = {}
    for n in objects:
        with torch.inference_mode():
            session = processor.init_video_session(video=video, inference_device="cpu")
            for i, (x, y) in enumerate(click_points(n, *frame_size)):
                processor.add_inputs_to_inference_session(
                    session, 0, i + 1, input_points=[[[[x, y]]]], input_labels=[[[1]]]
                )
                tm(inference_session=session, frame_idx=0)
            order = []

            def frames_out(session=session, order=order, n=n):
                for o in tm.propagate_in_video_iterator(session):
                    masks = processor.post_process_masks([o.pred_masks], original_sizes=[[h, w]], binarize=False)[0]
                    assert masks.shape[0] == n and tuple(masks.shape[-2:]) == (h, w), masks.shape
                    order.append(o.frame_idx)
                    yield masks

            out[n] = frame_gaps(frames_out(), skip)
            assert order == list(range(len(video))), order
        del session
        gc.collect()
        log(f"  {n} objects: {statistics.median(out[n]):.4f} s/frame (frames: {fmt_list(out[n])})")
    return out


def fmt_list(xs) -> str:
    return " ".join(f"{x:.3f}" for x in xs[:12]) + (" ..." if len(xs) > 12 else "")


# ---- phase 2: FLOPs and the matmul peak ----------------------------------------------------------------------------


def matmul_peaks(n: int, repeats: int, with_torch: bool) -> dict:
    """GFLOP/s of an n x n x n matrix product: jitted jnp.dot float32 (highest precision) and bfloat16, torch.mm."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from common import median_time

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    flops = 2.0 * n**3
    peaks = {}
    for name, dt, prec in (("float32", jnp.float32, jax.lax.Precision.HIGHEST), ("bfloat16", jnp.bfloat16, None)):
        x, y = jnp.asarray(a, dt), jnp.asarray(b, dt)
        dot = jax.jit(lambda p, q, prec=prec: jnp.dot(p, q, precision=prec))
        t, _ = median_time(lambda dot=dot, x=x, y=y: jax.block_until_ready(dot(x, y)), repeats)
        peaks[name] = flops / t / 1e9
        log(f"  jnp.dot {name} {n}^3: {t:.4f} s, {peaks[name]:.1f} GFLOP/s")
    if with_torch:
        import torch

        x, y = torch.from_numpy(a), torch.from_numpy(b)
        t, _ = median_time(lambda: torch.mm(x, y), repeats)
        peaks["torch float32"] = flops / t / 1e9
        log(f"  torch.mm float32 {n}^3: {t:.4f} s, {peaks['torch float32']:.1f} GFLOP/s")
    return peaks


def reference_flops(config) -> dict:
    """FLOPs per object of one full-bank tracking frame as the official computes it (multiply-add = 2 FLOPs).

    Memory attention, per layer: self-attention over the N = h*w image tokens (q, k, v, o projections, QK^T, AV),
    cross-attention to K = num_maskmem * N memory tokens + max_object_pointers * C/M pointer tokens (q, o on the
    image tokens; k, v projections M -> C on the memory tokens; QK^T and AV at width C), the MLP. Mask decoder:
    the two-way transformer's image-side products (projections and attention against ~T tokens) and the
    upscaling (approximate). Memory encoder: the mask downsampler's convolutions, the feature projection, the
    fuser's ConvNeXt blocks and the output projection."""
    v = config.video_config
    d = config.mask_decoder_config
    s = config.prompt_encoder_config.image_size
    g = s // 16
    n = g * g
    c = v.memory_attention_hidden_size
    m = v.memory_encoder_output_channels
    hidden = config.vision_config.fpn_hidden_size
    ptr_tokens = v.max_object_pointers_in_encoder * (hidden // m if m < hidden else 1)
    k = v.num_maskmem * n + ptr_tokens
    ff = v.memory_attention_feed_forward_hidden_size
    self_attn = 4 * 2 * n * c * c + 2 * 2 * n * n * c
    cross = 2 * 2 * n * c * c + 2 * 2 * k * m * c + 2 * 2 * n * k * c
    mlp = 2 * 2 * n * c * ff
    memory_attention = v.memory_attention_num_layers * (self_attn + cross + mlp)

    # mask decoder: T tokens (obj score, iou, 4 mask tokens, one "not a point" point), attention at C / 2
    t = 1 + 1 + (d.num_multimask_outputs + 1) + 1
    e, a = d.hidden_size, d.hidden_size // d.attention_downsample_rate
    # per layer: k, v of token -> image and q, o of image -> token on the N image tokens, both directions' QK^T
    # and AV against T tokens, the token MLP (the tokens' own attention is negligible)
    layer = 4 * 2 * n * e * a + 2 * 2 * 2 * t * n * a + 2 * 2 * t * e * d.mlp_dim
    final = 2 * 2 * n * e * a + 2 * 2 * t * n * a
    upscale = 2 * (4 * n) * e * (e // 4) + 2 * (16 * n) * (e // 4) * (e // 8)
    hyper = 2 * (d.num_multimask_outputs + 1) * 16 * n * (e // 8)
    mask_decoder = d.num_hidden_layers * layer + final + upscale + hyper

    # memory encoder: downsampler (stride-2 3x3 convs, channels x4 each, then 1x1), pix_feat proj, fuser, out proj
    stages = round(math.log2(v.mask_downsampler_total_stride) / math.log2(v.mask_downsampler_stride))
    ks = v.mask_downsampler_kernel_size
    down, cin, side = 0, 1, s
    for _ in range(stages):
        cout = cin * v.mask_downsampler_stride**2
        side //= v.mask_downsampler_stride
        down += 2 * side * side * cin * cout * ks * ks
        cin = cout
    h_me = v.memory_encoder_hidden_size
    down += 2 * n * cin * h_me
    proj = 2 * n * h_me * h_me
    fk = v.memory_fuser_kernel_size
    fuser = v.memory_fuser_num_layers * (2 * n * h_me * fk * fk + 2 * 2 * n * h_me * v.memory_fuser_intermediate_dim)
    out_proj = 2 * n * h_me * m
    memory_encoder = down + proj + fuser + out_proj
    return {"memory attention": memory_attention, "mask decoder": mask_decoder, "memory encoder": memory_encoder}


def xla_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001  (not every backend implements it)
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost or cost["flops"] <= 0:
        return None
    return float(cost["flops"])


def encoder_flops(pred, size) -> tuple[float, str]:
    import numpy as np

    pixels = np.zeros((1, size, size, 3), np.float32)
    flops = xla_flops(pred.tracker.frame_features.lower(pred.params, pixels).compile())
    if flops is not None:
        return flops, "XLA cost analysis of frame_features"
    return 207e9 * (size / 1024) ** 2, "notes' 207 GFLOP at 1024, scaled by pixels"


def our_step_flops(pred, state, t: int) -> tuple[float | None, int]:
    """XLA's FLOP count of our compiled tracking step on a full bank (objects padded to their bucket)."""
    import numpy as np

    v = pred.config.video_config
    mm = bool(v.multimask_output_in_sam and v.multimask_output_for_tracking
              and v.multimask_min_pt_num <= 0 <= v.multimask_max_pt_num)  # fmt: skip
    objs = list(range(len(state.objects)))
    bank = pred._bank(state, objs, t, False)
    act = np.ones(bank.num_objects, bool)
    lowered = pred.tracker.track.lower(pred.params, bank, pred._frame(state, t), t, False, state.num_frames, act,
                                       multimask=mm)  # fmt: skip
    return xla_flops(lowered.compile()), bank.num_objects


# ---- phase 3: host memory ------------------------------------------------------------------------------------------


def memory_child(args) -> None:
    """In a subprocess: one object tracked over max(--memory-frames) frames; prints one RESULT JSON line."""
    import numpy as np

    counts = sorted(args.memory_frames)
    size = args.memory_image_size or args.image_size
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = video_dir(os.path.join(tmp, "frames"), counts[-1])
        (x, y), = click_points(1, 960, 540)  # fmt: skip
        if args.only_memory == "ours":
            from reference import official_config_at

            from sam2_jax.frontends.video.predictor import Sam2VideoPredictor

            pred = Sam2VideoPredictor.from_pretrained(
                args.checkpoint, config=official_config_at(size), fill_hole_area=0, keep_history=False
            )
            result["loaded"] = rss_mb()
            state = pred.init_state(frames)
            result["init_state"] = rss_mb()
            pred.add_new_points_or_box(state, 0, 1, points=[[x, y]], labels=[1])
            frames_out = pred.propagate_in_video(state)
        else:
            import torch
            from reference import official_video_predictor

            torch.set_num_threads(os.cpu_count() or 1)
            official = official_video_predictor(image_size=size)
            result["loaded"] = rss_mb()
            context = torch.inference_mode()
            context.__enter__()  # until the process ends: the official's calls all run in inference mode
            state = official.init_state(frames)
            result["init_state"] = rss_mb()
            official.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=np.array([[x, y]], np.float32),
                                           labels=np.array([1], np.int32))  # fmt: skip
            frames_out = official.propagate_in_video(state)
        t0 = time.perf_counter()
        for i, _ in enumerate(frames_out):
            if i + 1 in counts:
                result[str(i + 1)] = rss_mb()
                print(f"  [{args.only_memory}] {i + 1} frames: RSS {result[str(i + 1)]:.0f} MiB, "
                      f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    result["peak"] = hwm_mb()
    print("RESULT " + json.dumps(result), flush=True)


def spawn_memory(args, who: str, checkpoint: str | None) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--only-memory", who, "--image-size", str(args.image_size)]
    cmd += ["--memory-frames", *map(str, args.memory_frames)]
    if args.memory_image_size:
        cmd += ["--memory-image-size", str(args.memory_image_size)]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)  # progress goes to our stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        log(f"  {who} memory run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")
        return None
    return json.loads(lines[-1][len("RESULT ") :])


# ---- main ----------------------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=16, help="frames per timed run (> num_maskmem + 1)")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--memory-frames", type=int, nargs="*", default=[50, 200], help="none: skip phase 3")
    parser.add_argument("--memory-image-size", type=int, default=None, help="phase 3's image size (--image-size)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the matmul peak measurements")
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--skip-official", action="store_true")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-bf16", action="store_true")
    parser.add_argument("--only-memory", choices=["ours", "official"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only_memory:
        memory_child(args)
        return

    import jax.numpy as jnp
    import numpy as np
    import torch
    from common import machine, peak_rss_mb
    from PIL import Image
    from reference import official_config_at, official_video_predictor

    torch.set_num_threads(os.cpu_count() or 1)
    size = args.image_size
    config = official_config_at(size)
    skip = config.video_config.num_maskmem  # frame 0 is the conditioning frame; 1..num_maskmem fill the bank
    if args.frames < skip + 2:
        parser.error(f"--frames must be at least {skip + 2} (frame 0, {skip} frames to fill the bank, one timed)")
    objects = sorted(set(args.objects))
    log(f"# {machine()}")
    timed = args.frames - skip - 1
    log(f"# official tiny architecture at {size} px, bedroom frames 960x540, {args.frames} frames: per-frame "
        f"medians over frames {skip + 1}..{args.frames - 1} ({timed} frames), randomised weights")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        frames = video_dir(os.path.join(tmp, "frames"), args.frames)
        frame_size = Image.open(os.path.join(frames, "00000.jpg")).size  # (width, height)
        official = official_video_predictor(image_size=size)
        checkpoint = os.path.join(tmp, "sam2.1_hiera_tiny.pt")
        torch.save({"model": official.state_dict()}, checkpoint)

        log("\n## matmul peak")
        peaks = matmul_peaks(args.matmul_size, args.repeats, with_torch=not (args.skip_official and
                                                                           args.skip_transformers))  # fmt: skip

        times = {}
        log("\n## ours, float32")
        times["ours f32"], pred, states = time_ours(checkpoint, size, jnp.float32, objects, frames, skip,
                                                    official_config_at, frame_size)  # fmt: skip
        enc_flops, enc_source = encoder_flops(pred, size)
        step_flops = {}
        for n in objects:
            step_flops[n] = our_step_flops(pred, states[n], args.frames - 1)
        del pred, states
        gc.collect()
        if not args.skip_bf16:
            log("\n## ours, bfloat16 (computation and memories)")
            times["ours bf16"], pred16, states16 = time_ours(checkpoint, size, jnp.bfloat16, objects, frames, skip,
                                                             official_config_at, frame_size)  # fmt: skip
            del pred16, states16
            gc.collect()
        if not args.skip_official:
            log("\n## official SAM2VideoPredictor (float32, CPU)")
            times["official"] = time_official(official, objects, frames, skip, frame_size)
        del official
        gc.collect()
        if not args.skip_transformers:
            log("\n## transformers Sam2VideoModel (float32, CPU)")
            video = np.stack([np.asarray(Image.open(os.path.join(frames, f)).convert("RGB"))
                              for f in sorted(os.listdir(frames))])  # fmt: skip
            try:
                times["transformers"] = time_transformers(config, size, objects, video, skip, frame_size)
            except Exception as e:  # noqa: BLE001  (report and go on: the other phases stand on their own)
                log(f"  transformers could not be driven: {type(e).__name__}: {e}")
            del video
            gc.collect()

        med = {k: {n: statistics.median(v[n]) for n in objects} for k, v in times.items()}
        log(f"\n## per-frame time, bank full ({size} px, {args.frames - skip - 1} frames per median)")
        cols = ["ours f32", "ours bf16", "official", "transformers"]
        head = f"{'objects':>7s} " + " ".join(f"{c + ' s/frame':>21s}" for c in cols)
        head += f" {'official/ours':>13s} {'transformers/ours':>17s} {'ours f32/bf16':>13s}"
        log(head)
        for n in objects:
            row = f"{n:7d} " + " ".join(f"{med[c][n]:21.4f}" if c in med else f"{'-':>21s}" for c in cols)
            ours = med["ours f32"][n]
            for other, width in (("official", 13), ("transformers", 17)):
                row += f" {med[other][n] / ours:{width}.2f}" if other in med else f" {'-':>{width}s}"
            row += f" {ours / med['ours bf16'][n]:13.2f}" if "ours bf16" in med else f" {'-':>13s}"
            log(row)

        per_obj = reference_flops(config)
        log("\n## FLOPs of one full-bank frame (reference count) and fraction of the matmul peak")
        log("# per object: " + ", ".join(f"{k} {v / 1e9:.2f} GFLOP" for k, v in per_obj.items())
            + f"; per frame: image encoder {enc_flops / 1e9:.2f} GFLOP ({enc_source})")  # fmt: skip
        log("# peaks: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
        peak_of = {"ours f32": "float32", "ours bf16": "bfloat16", "official": "torch float32",
                   "transformers": "torch float32"}  # fmt: skip
        log(f"{'objects':>7s} {'contender':>13s} {'ref GFLOP/frame':>15s} {'s/frame':>9s} {'GFLOP/s':>9s} "
            f"{'of peak':>8s} {'peak':>14s} {'ours XLA GFLOP/frame':>21s}")  # fmt: skip
        for n in objects:
            total = enc_flops + n * sum(per_obj.values())
            for c in cols:
                if c not in med:
                    continue
                key = peak_of[c] if peak_of[c] in peaks else "float32"
                rate = total / med[c][n] / 1e9
                xla = ""
                if c == "ours f32":
                    f, bucket = step_flops[n]
                    xla = "-" if f is None else f"{(f + enc_flops) / 1e9:.1f} ({bucket} padded)"
                log(f"{n:7d} {c:>13s} {total / 1e9:15.1f} {med[c][n]:9.4f} {rate:9.1f} {rate / peaks[key]:8.1%} "
                    f"{key:>14s} {xla:>21s}")  # fmt: skip
        log(f"# peak host memory of this process (all phases): {peak_rss_mb():.0f} MiB")

        if args.memory_frames:
            msize = args.memory_image_size or size
            log(f"\n## host memory against frame count (1 object, {msize} px, one subprocess each)")
            mem_ckpt = checkpoint
            if msize != size:
                mem_ckpt = os.path.join(tmp, f"sam2.1_hiera_tiny_{msize}.pt")
                torch.save({"model": official_video_predictor(image_size=msize).state_dict()}, mem_ckpt)
            runs = {"ours": spawn_memory(args, "ours", mem_ckpt)}
            if not args.skip_official:
                runs["official"] = spawn_memory(args, "official", None)
            counts = sorted(args.memory_frames)
            log(f"{'who':>9s} {'loaded MiB':>11s} {'init_state MiB':>15s} "
                + " ".join(f"{str(c) + ' frames MiB':>15s}" for c in counts) + f" {'peak MiB':>9s}")  # fmt: skip
            for who, r in runs.items():
                if r is None:
                    continue
                after = " ".join(f"{r.get(str(c), float('nan')):15.0f}" for c in counts)
                log(f"{who:>9s} {r['loaded']:11.0f} {r['init_state']:15.0f} {after} {r['peak']:9.0f}")


if __name__ == "__main__":
    main()
