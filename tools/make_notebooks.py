"""Writes the notebooks in notebooks/ from the cell sources below (outputs cleared). Run after editing a cell.

python tools/make_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = """import os
# Tests point SAM2_JAX_CHECKPOINT at a randomised local checkpoint; otherwise the official one comes from the Hub.
CHECKPOINT = os.environ.get("SAM2_JAX_CHECKPOINT", "facebook/sam2.1-hiera-tiny")
print("checkpoint:", CHECKPOINT)"""

SHOW = """from IPython.display import display
from PIL import Image
from sam2_jax import overlay

EXAMPLES = "../examples"  # the bundled photographs (notebooks run from notebooks/)


def show(image, masks, width=600, **prompts):
    \"\"\"Masks (K, H, W) drawn over the photo, scaled down for the page.\"\"\"
    pic = Image.fromarray(overlay(np.asarray(image), masks, **prompts))
    display(pic.resize((width, round(pic.height * width / pic.width))))"""

NOTEBOOKS = {
    "image_predictor.ipynb": [
        (
            "md",
            "# Image predictor quickstart\n\n`Sam2ImagePredictor` embeds an image once with the jit-compiled encoder "
            "and answers many prompts: clicks, boxes and a previous mask. Its inputs and outputs follow the official "
            "`SAM2ImagePredictor`: masks at the original size, predicted IoU scores and 256x256 low-resolution logits.",
        ),
        ("code", SETUP),
        ("code", "import numpy as np\n" + SHOW),
        (
            "code",
            """import sam2_jax
predictor = sam2_jax.Sam2ImagePredictor.from_pretrained(CHECKPOINT)
image = Image.open(f"{EXAMPLES}/truck.jpg").convert("RGB")
predictor.set_image(image)  # runs the image encoder once
print(image.size, predictor.get_image_embedding().shape)""",
        ),
        ("md", "## One click\nA single click is ambiguous, so ask for three masks and keep the best-scored one."),
        (
            "code",
            """point, label = np.array([[500, 375]]), np.array([1])
masks, scores, logits = predictor.predict(point_coords=point, point_labels=label, multimask_output=True)
print(masks.shape, scores.round(3), logits.shape)
best = int(np.argmax(scores))
show(image, masks[best], points=[((500, 375), 1)])""",
        ),
        ("md", "## Several clicks, positive and negative\nOne object, so one mask is enough."),
        (
            "code",
            """points = np.array([[500, 375], [1125, 625], [1400, 350]])
labels = np.array([1, 1, 0])
masks, scores, _ = predictor.predict(point_coords=points, point_labels=labels, multimask_output=False)
show(image, masks, points=list(zip(points.tolist(), labels.tolist())))""",
        ),
        ("md", "## A box, and a box with a click"),
        (
            "code",
            """box = np.array([425, 600, 700, 875])
masks, scores, _ = predictor.predict(box=box, multimask_output=False)
show(image, masks, box=box)
masks, scores, _ = predictor.predict(box=box, point_coords=[[575, 750]], point_labels=[0], multimask_output=False)
show(image, masks, box=box, points=[((575, 750), 0)])""",
        ),
        ("md", "## Several objects at once\nA batch of boxes (B, 4) gives masks (B, 1, H, W)."),
        (
            "code",
            """boxes = np.array(
    [[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800], [1240, 675, 1400, 750]]
)
masks, scores, _ = predictor.predict(box=boxes, multimask_output=False)
print(masks.shape, scores.shape)
show(image, masks[:, 0], box=boxes)""",
        ),
        (
            "md",
            "## Refining with the previous mask\nFeed the low-resolution logits of the best mask back together with a "
            "new click.",
        ),
        (
            "code",
            """masks, scores, logits = predictor.predict(point_coords=[[500, 375]], point_labels=[1])
previous = logits[np.argmax(scores)][None]  # (1, 256, 256)
masks, scores, _ = predictor.predict(
    point_coords=[[500, 375], [1125, 625]], point_labels=[1, 1], mask_input=previous, multimask_output=False
)
show(image, masks, points=[((500, 375), 1), ((1125, 625), 1)])""",
        ),
        (
            "md",
            "## Static shapes\nPrompts are padded to a few bucket sizes "
            "(`sam2_jax.processing.prompts.PROMPT_BUCKETS`) and the padding is masked out of attention, "
            "so a new number of clicks reuses the compiled decoder. JAX reports every compilation through "
            "`jax.monitoring`, which counts them here.",
        ),
        (
            "code",
            """import jax
from sam2_jax.processing.prompts import PROMPT_BUCKETS

compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
)
predictor.predict(point_coords=np.full((2, 2), 300.0), point_labels=np.ones(2), multimask_output=False)
before = len(compiles)
for n in (3, 4, 2):
    predictor.predict(point_coords=np.full((n, 2), 300.0), point_labels=np.ones(n), multimask_output=False)
print("buckets:", PROMPT_BUCKETS, "| new compilations for 3, 4 and 2 clicks:", len(compiles) - before)""",
        ),
    ],
    "automatic_mask_generation.ipynb": [
        (
            "md",
            "# Automatic mask generation\n\n`Sam2AutomaticMaskGenerator` prompts the model with a grid of points, "
            "decodes them in jit-compiled batches, filters by predicted IoU and stability, removes duplicates with "
            "box NMS and returns the official generator's records. Calling it like transformers' `mask-generation` "
            "pipeline returns `masks` and `scores`.",
        ),
        ("code", SETUP),
        ("code", "import numpy as np\n" + SHOW),
        (
            "code",
            """import sam2_jax
image = Image.open(f"{EXAMPLES}/truck.jpg").convert("RGB")
generator = sam2_jax.Sam2AutomaticMaskGenerator.from_pretrained(
    CHECKPOINT, points_per_side=16, pred_iou_thresh=0.5, stability_score_thresh=0.8
)
records = generator.generate(np.asarray(image))
print(len(records), "masks")
if records:
    print({k: v for k, v in records[0].items() if k != "segmentation"})""",
        ),
        (
            "code",
            """records = sorted(records, key=lambda r: r["area"], reverse=True)
show(image, np.array([r["segmentation"] for r in records[:20]]).reshape(-1, image.height, image.width))""",
        ),
        ("md", "The pipeline-style call of transformers' docs:"),
        (
            "code",
            """outputs = generator(image, points_per_batch=64)
print(len(outputs["masks"]), "masks; scores:", np.round(outputs["scores"][:5], 3))""",
        ),
        (
            "md",
            'Compressed output for storage: `output_mode="coco_rle"` gives COCO\'s RLE strings, '
            "`sam2_jax.processing.rle.rle_to_mask` decodes them.",
        ),
        (
            "code",
            """rle_generator = sam2_jax.Sam2AutomaticMaskGenerator.from_pretrained(
    CHECKPOINT, points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="coco_rle"
)
rle_records = rle_generator.generate(np.asarray(image))
if rle_records:
    seg = rle_records[0]["segmentation"]
    print(seg["counts"][:40], sam2_jax.processing.rle.rle_to_mask(seg).shape)""",
        ),
    ],
    "batched_multi_device.ipynb": [
        (
            "md",
            "# Batched and multi-device segmentation\n\n`BatchSegmenter` runs encoder and decoder on a batch of images "
            'with the batch split across all local devices: `jax.jit` over a `Mesh` with a "data" axis '
            '(`mode="sharded"`) or the classic `jax.pmap` (`mode="pmap"`). Here the CPU pretends to be 8 devices; '
            "on a TPU slice or a multi-GPU host the same code uses the real ones.",
        ),
        (
            "code",
            """import os
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # before jax is imported
import jax
print(jax.devices())""",
        ),
        ("code", SETUP),
        ("code", "import numpy as np\n" + SHOW),
        (
            "code",
            """import sam2_jax
from sam2_jax.frontends.image.batch_segmenter import BatchSegmenter
model, params = sam2_jax.load(CHECKPOINT)
processor = sam2_jax.Sam2Processor(image_size=model.config.prompt_encoder_config.image_size)
images = [Image.open(f"{EXAMPLES}/{name}.jpg").convert("RGB") for name in ("truck", "groceries", "truck")]
# per image: objects, each with its clicks; ragged counts are padded with -10 like transformers
points = [[[[500, 375]], [[650, 750]]], [[[400, 300]], [[630, 300], [550, 300]]], [[[1125, 625]]]]
labels = [[[1], [1]], [[1], [1, 1]], [[1]]]
inputs = processor(images=images, input_points=points, input_labels=labels)
{k: v.shape for k, v in inputs.items()}""",
        ),
        (
            "md",
            "transformers' -10 padding still lets a padded click attend (it shifts masks by about 1%). Pass a "
            "`prompt_mask` to mask padded clicks out of attention instead, so padding does not change the answer:",
        ),
        (
            "code",
            """prompts = dict(
    input_points=inputs["input_points"],
    input_labels=np.where(inputs["input_labels"] == -10, -1, inputs["input_labels"]),
    prompt_mask=inputs["input_labels"] != -10,
)
segmenter = BatchSegmenter(model, params, mode="sharded", multimask_output=False)
out = segmenter(inputs["pixel_values"], **prompts)  # 3 images padded to 8, one per device
masks = processor.post_process_masks(out["pred_masks"], inputs["original_sizes"])
for image, m in zip(images, masks, strict=True):
    show(image, m[:, 0], width=400)""",
        ),
        (
            "md",
            "The same with `jax.pmap`; a second call with new images reuses the compiled function and the params "
            "on device.",
        ),
        (
            "code",
            """pmapped = BatchSegmenter(model, params, mode="pmap", multimask_output=False)
out_pmap = pmapped(inputs["pixel_values"], **prompts)
print("max difference sharded vs pmap:", np.abs(out_pmap["pred_masks"] - out["pred_masks"]).max())
compiles = []  # counted from outside, through jax.monitoring
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
)
segmenter(inputs["pixel_values"][::-1], **{k: v[::-1] for k, v in prompts.items()})
print("recompiled:", bool(compiles))""",
        ),
        (
            "md",
            "## bfloat16\nComputation in bfloat16 (params stay float32; softmax, layer norms and the score heads "
            "accumulate in float32):",
        ),
        (
            "code",
            """import jax.numpy as jnp
model16, params16 = sam2_jax.load(CHECKPOINT, dtype=jnp.bfloat16)
out16 = BatchSegmenter(model16, params16, multimask_output=False)(inputs["pixel_values"], **prompts)
a, b = out["pred_masks"] > 0, out16["pred_masks"] > 0
iou = (a & b).sum((-2, -1)) / np.maximum((a | b).sum((-2, -1)), 1)
score_diff = np.abs(out16["iou_scores"] - out["iou_scores"]).max()
print("mask IoU bf16 vs f32:", iou.min().round(4), "| max score difference:", score_diff)""",
        ),
    ],
    "video_tracking.ipynb": [
        (
            "md",
            "# Tracking objects through a video\n\nClick an object on one frame and SAM 2 follows it: every frame "
            "attends to a memory of the prompted frames and the frames just tracked. `Sam2VideoPredictor` has the "
            "official `SAM2VideoPredictor`'s methods; underneath, all objects of a frame go through one jit-compiled "
            "step over a fixed-size memory bank, so time and memory per frame do not grow with the video.",
        ),
        (
            "code",
            """import os
# Tests point SAM2_JAX_VIDEO_CHECKPOINT at a randomised local video checkpoint; otherwise the official one (Hub).
CHECKPOINT = os.environ.get("SAM2_JAX_VIDEO_CHECKPOINT", "facebook/sam2.1-hiera-tiny")
print("checkpoint:", CHECKPOINT)""",
        ),
        (
            "code",
            """import numpy as np
from IPython.display import display
from PIL import Image
import sam2_jax
from sam2_jax import overlay

BEDROOM = "../tests/data/videos/bedroom"  # 48 JPEG frames, 960x540, bundled with the tests
frames = np.stack([np.asarray(Image.open(f"{BEDROOM}/{i:05d}.jpg").convert("RGB")) for i in range(0, 48, 4)])
print(frames.shape)  # every 4th frame: 12 frames


def show_frames(frames, masks_per_frame, columns=4, width=240):
    \"\"\"A grid of frames with their masks (each (O, H, W) bool) drawn over them.\"\"\"
    tiles = [Image.fromarray(overlay(f, m)).resize((width, width * f.shape[0] // f.shape[1]))
             for f, m in zip(frames, masks_per_frame)]
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (columns * width, rows * tiles[0].height), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * width, (i // columns) * tile.height))
    display(grid)""",
        ),
        (
            "md",
            "## Official predictor interface\nA click on the girl (object 1) and a box around the boy (object 2), "
            "both on frame 0.",
        ),
        (
            "code",
            """predictor = sam2_jax.Sam2VideoPredictor.from_pretrained(CHECKPOINT)
state = predictor.init_state(frames)  # also a directory of <int>.jpg frames, a video file, or an iterator
_, obj_ids, masks = predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[400, 200]], labels=[1])
_, obj_ids, masks = predictor.add_new_points_or_box(state, frame_idx=0, obj_id=2, box=[150, 130, 295, 410])
print(obj_ids, masks.shape)  # (objects, 1, H, W) logits at the video's resolution
show_frames(frames[:1], [masks[:, 0] > 0], columns=1, width=480)""",
        ),
        (
            "code",
            """results = {t: m[:, 0] > 0 for t, ids, m in predictor.propagate_in_video(state)}
print(len(results), "frames tracked")
show_frames(frames, [results[t] for t in range(len(frames))])""",
        ),
        (
            "md",
            "## transformers' interface, and live frames\n`Sam2VideoProcessor` and `Sam2VideoSessionModel` take "
            "transformers' `Sam2VideoProcessor` / `Sam2VideoModel` calls. A session made without a video takes "
            "frames one at a time, as a camera delivers them (`frame=`); each output says how long it took.",
        ),
        (
            "code",
            """model = sam2_jax.Sam2VideoSessionModel.from_pretrained(CHECKPOINT)
processor = sam2_jax.Sam2VideoProcessor(image_size=model.image_size)
session = processor.init_video_session()  # no video: streaming
live = []
for t, frame in enumerate(frames):
    inputs = processor(images=frame)
    if t == 0:
        processor.add_inputs_to_inference_session(
            session, frame_idx=0, obj_ids=1, input_points=[[[[400, 200]]]], input_labels=[[[1]]],
            original_size=inputs["original_sizes"][0],
        )
    out = model(session, frame=inputs["pixel_values"][0])
    masks = processor.post_process_masks([out.pred_masks], inputs["original_sizes"], binarize=True)[0]
    live.append(masks[:, 0])
    print(f"frame {out.frame_idx}: {out.latency_s * 1000:.0f} ms", end="; ")
show_frames(frames, live)""",
        ),
        (
            "md",
            "## From the command line\n`sam2-jax track` writes one label PNG per frame (0 background, else the "
            "object id), the masks drawn over the frames and an animated preview; rerun after a kill, it resumes.",
        ),
        (
            "code",
            """import subprocess, sys, tempfile, pathlib
out = pathlib.Path(tempfile.mkdtemp()) / "tracked"
video = pathlib.Path(tempfile.mkdtemp())
for i, f in enumerate(frames):
    Image.fromarray(f).save(video / f"{i}.jpg")
command = [sys.executable, "-m", "sam2_jax", "track", str(video), "--point", "0:400,200:1",
           "--box", "0:150,130,295,410:2", "--out", str(out), "--overlay", "--model", CHECKPOINT, "--no-progress"]
proc = subprocess.run(command, capture_output=True, text=True)
print(proc.stdout, proc.stderr[-500:])
assert proc.returncode == 0
labels = np.asarray(Image.open(out / "00005.png"))
print(sorted(p.name for p in out.iterdir())[:4], "... label values:", np.unique(labels))
Image.open(out / "preview.gif")""",
        ),
    ],
    "fine_tuning.ipynb": [
        (
            "md",
            "# Fine-tuning SAM 2 with optax\n\nA generated dataset of shapes on textured backgrounds, the mask decoder "
            "trained with the official losses and training prompts (a click inside each object), held-out mIoU from "
            "one click before and after, the masks side by side, and the result exported back to transformers' layout. "
            "The same loop runs from the command line as `sam2-jax finetune DATA --model SRC --out OUT`.",
        ),
        ("code", SETUP),
        (
            "code",
            """import pathlib, tempfile
import numpy as np
from sam2_jax.training import SegmentationDataset, write_shapes_dataset

work = pathlib.Path(tempfile.mkdtemp())
write_shapes_dataset(work / "train", 32, size=(192, 256), seed=0)  # images/<name>.jpg + masks/<name>.png
write_shapes_dataset(work / "held_out", 8, size=(192, 256), seed=1)
train = SegmentationDataset.from_directory(work / "train")
held_out = SegmentationDataset.from_directory(work / "held_out")
print(train.report())
print(held_out.report())""",
        ),
        (
            "code",
            "import sam2_jax\nmodel, params = sam2_jax.load(CHECKPOINT)\n"
            "image_size = model.config.prompt_encoder_config.image_size",
        ),
        (
            "md",
            "`Trainer` runs the jitted optax step data-parallel over every device (params replicated, the batch "
            "sharded; the batch size is a multiple of the device count). With the mask decoder as the only "
            "trained part, each image is encoded once and its embedding "
            "cached. `fit` writes the run directory: the fine-tuned model (a converted directory), `metrics.jsonl`, "
            "`curves.png` and the resumable state.",
        ),
        (
            "code",
            """from sam2_jax.training import DataLoader, Trainer

trainer = Trainer(model, params, trainable="decoder", lr=1e-3, steps=40, warmup=4, batch_size=8, seed=0)
before = trainer.evaluate(data=held_out)
loader = DataLoader(train, 8, image_size=image_size, mask_size=64, max_objects=3, seed=0)
rows = trainer.fit(loader, work / "run", checkpoint_every=20, log_every=5)
loader.close()
after = trainer.evaluate(data=held_out)
print(f"held-out mIoU from one click: {before:.3f} before, {after:.3f} after")""",
        ),
        (
            "code",
            """from IPython.display import display
from PIL import Image
display(Image.open(work / "run" / "curves.png"))""",
        ),
        ("md", "Masks from the same centre click, before (left) and after (right) fine-tuning:"),
        (
            "code",
            """from sam2_jax import Sam2ImagePredictor, overlay
from sam2_jax.training.trainer import center_clicks

example = held_out[0]
clicks = center_clicks(example.masks[None])[0]  # (objects, 2) x, y in pixels
tuned_model, tuned_params = sam2_jax.load(work / "run")
panels = []
for m, p in ((model, params), (tuned_model, tuned_params)):
    predictor = Sam2ImagePredictor(m, p)
    predictor.set_image(example.image)
    masks = [predictor.predict(point_coords=c[None], point_labels=np.array([1]), multimask_output=False)[0][0]
             for c in clicks]
    panels.append(overlay(example.image, np.stack(masks), points=[(tuple(c), 1) for c in clicks]))
display(Image.fromarray(np.concatenate(panels, axis=1)))""",
        ),
        ("md", "Back to PyTorch: transformers' layout (`Sam2Model.from_pretrained` reads it), or `--format pt`."),
        (
            "code",
            """import subprocess, sys
command = [sys.executable, "-m", "sam2_jax", "export", str(work / "run"), str(work / "hf"), "--format", "transformers"]
proc = subprocess.run(command, capture_output=True, text=True)
print(proc.stdout, proc.stderr)
assert proc.returncode == 0
sorted(p.name for p in (work / "hf").iterdir())""",
        ),
    ],
    "checkpoint_conversion.ipynb": [
        (
            "md",
            "# Converting a SAM 2 checkpoint\n\nsam2-jax reads the Hub's transformers `model.safetensors` "
            "(image or video layout), the original facebookresearch `.pt`, or a converted directory. Conversion is a "
            "table of key patterns applied once and checked against the model's param shapes.",
        ),
        ("code", SETUP),
        (
            "code",
            """import tempfile, pathlib, subprocess, sys
out = pathlib.Path(tempfile.mkdtemp()) / "converted"
command = [sys.executable, "-m", "sam2_jax", "convert", CHECKPOINT, str(out)]  # the `sam2-jax convert` command
proc = subprocess.run(command, capture_output=True, text=True)
print(proc.stderr)
assert proc.returncode == 0
sorted(p.name for p in out.iterdir())""",
        ),
        ("md", "The converted directory loads without torch; `sam2_jax.load` also accepts the source directly."),
        (
            "code",
            """import jax, sam2_jax
from flax.traverse_util import flatten_dict
model, params = sam2_jax.load(out)
flat = flatten_dict(params, sep="/")
print(len(flat), "tensors,", sum(v.size for v in flat.values()) / 1e6, "M parameters")
for key in list(flat)[:5]:
    print(key, flat[key].shape)""",
        ),
        ("md", "A checkpoint that does not fit the model fails with one error naming every offending key:"),
        (
            "code",
            """from sam2_jax.checkpoints import CheckpointError
try:
    sam2_jax.load(out, config="large")
except CheckpointError as e:
    print(str(e)[:500])""",
        ),
    ],
    "annotate.ipynb": [
        (
            "md",
            "# Annotating photos by clicking\n\n`sam2_jax.app.show` starts the `sam2-jax annotate` server on a free "
            "loopback port and shows its page here: click an object, accept the mask, and OUT gets a COCO "
            "`annotations.json`, label PNGs in `masks/` and links in `images/` (what `sam2-jax finetune OUT` reads). "
            "The same JSON API (`docs/annotate_api.md`) serves scripts.",
        ),
        ("code", SETUP),
        (
            "code",
            """import tempfile
import sam2_jax.app
out = tempfile.mkdtemp()  # OUT: annotations.json, masks/, images/
handle = sam2_jax.app.show("../examples", model=CHECKPOINT, out_dir=out)""",
        ),
        ("md", "The page calls the JSON API; a script can too. One click on the truck, and its best mask accepted:"),
        (
            "code",
            """import json, pathlib, urllib.request


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(handle.url.split("?")[0].rstrip("/") + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


prediction = call("POST", "/api/predict", {"image": "truck.jpg", "points": [[500, 375]], "labels": [1]})
print([round(m["score"], 3) for m in prediction["masks"]], "best:", prediction["best"])
accepted = call("POST", "/api/annotations", {"image": "truck.jpg", "prediction": prediction["prediction"]})
print("object", accepted["id"], "area", accepted["area"], "bbox", accepted["bbox"])
sorted(str(p.relative_to(out)) for p in pathlib.Path(out).rglob("*") if not p.name.startswith("."))""",
        ),
        ("md", "Stop the server (it releases OUT's lock); the annotations stay in OUT."),
        ("code", "handle.stop()"),
    ],
}


def build(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, (kind, src) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        cell.id = f"cell-{i}"  # stable ids: regenerating leaves unchanged notebooks unchanged
        nb.cells.append(cell)
    return nb


def main():
    HERE.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
