"""``training.video_trainer.VideoTrainer`` and ``sam2-jax finetune --video`` on generated clips (shapes gliding over
the bundled bedroom frames, ``synthetic_video``): a run killed after a checkpoint and resumed ends with the
uninterrupted run's params (orbax), and OUT loads as a video model; a rerun with another setting is refused naming
it; the CLI end to end on a DAVIS layout. (That training raises held-out mIoU is not shown yet: issue 26.)

One configuration for the trainer tests (the jitted step is shared by trainers of one configuration): the small
config at 128 px with random params, memories as wide as the hidden size (32)."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import numpy as np
import pytest
from reference import random_params, tiny_video_test_config

from sam2_jax.modeling.sam2_video_model import Sam2VideoModel
from sam2_jax.training.synthetic_video import load_backgrounds, write_shapes_videos
from sam2_jax.training.train_state import RunDirectory
from sam2_jax.training.video_data import VideoDataset
from sam2_jax.training.video_sampling import VideoClipSource
from sam2_jax.training.video_trainer import VideoTrainer

BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"
S, T, B, STEPS, KILL = 128, 4, 2, 40, 25
HPARAMS = dict(
    trainable="memory",
    lr=3e-3,
    steps=STEPS,
    warmup=2,
    weight_decay=0.01,
    clip=1.0,
    batch_size=B,
    num_frames=T,
    remat=False,
    num_correction_pt_per_frame=0,
    prob_to_use_box_input_for_train=0.0,
    num_frames_to_correct_for_train=1,
    num_init_cond_frames_for_train=1,
)


def small_config():
    """``tiny_video_test_config`` at 128 px with 32-channel memories (pointers as wide as memories)."""
    cfg = tiny_video_test_config()
    cfg = dataclasses.replace(
        cfg, video_config=dataclasses.replace(cfg.video_config, memory_encoder_output_channels=32)
    )
    return cfg.at_image_size(S)


def flat(tree) -> dict:
    return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    bg = load_backgrounds(BEDROOM, (96, 128))
    train = VideoDataset.from_davis(write_shapes_videos(root / "train", 12, 8, (96, 128), seed=0, backgrounds=bg))
    cfg = small_config()
    params = random_params(cfg, seed=0, score_shift=10.0)
    model = Sam2VideoModel(cfg)
    trainer = VideoTrainer(model, params, **HPARAMS)
    out = root / "full"
    start = time.perf_counter()
    with trainer.data_loader(VideoClipSource(train, T, 1), max_objects=1) as data:
        rows = trainer.fit(data, out, checkpoint_every=10, log_every=1)
    seconds = time.perf_counter() - start
    return dict(
        model=model,
        params=params,
        train=train,
        trainer=trainer,
        rows=rows,
        out=out,
        seconds=seconds,
    )


def test_kill_and_resume_equals_uninterrupted(setup, tmp_path):
    """Stopped by an exception at step 25 (checkpoints every 10), resumed by a new trainer from step 20: the
    uninterrupted run's params bit for bit, every metrics row once; OUT loads with ``sam2_jax.load`` and
    ``Sam2VideoPredictor.from_pretrained`` (every video tensor kept)."""
    import sam2_jax
    from sam2_jax.frontends.video.predictor import Sam2VideoPredictor

    def stop(step, metrics):
        if step == KILL:
            raise KeyboardInterrupt

    first = VideoTrainer(setup["model"], setup["params"], **HPARAMS)
    with first.data_loader(VideoClipSource(setup["train"], T, 1), max_objects=1) as data:
        with pytest.raises(KeyboardInterrupt):
            first.fit(data, tmp_path, checkpoint_every=10, log_every=1, callback=stop)
    second = VideoTrainer(setup["model"], setup["params"], **HPARAMS)
    state = second.resume(tmp_path)
    assert second.step == 20 and state["iterator"] == {"next_index": 20}
    with second.data_loader(VideoClipSource(setup["train"], T, 1), max_objects=1, state=state) as data:
        second.fit(data, tmp_path, checkpoint_every=10, log_every=1)
    expected, got = flat(jax.device_get(setup["trainer"].params)), flat(jax.device_get(second.params))
    worst = max(float(np.max(np.abs(got[k] - expected[k]))) for k in expected)
    print(f"[video trainer] resumed vs uninterrupted: max abs param difference {worst:.1e}")
    assert got.keys() == expected.keys() and worst == 0.0
    assert [r["step"] for r in RunDirectory(tmp_path).read_metrics()] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in RunDirectory(tmp_path).read_metrics()] == [r["loss"] for r in setup["rows"]]
    _, loaded = sam2_jax.load(tmp_path, video=True)
    assert flat(loaded).keys() == flat(setup["params"]).keys()
    assert all(np.array_equal(np.asarray(v), expected[k]) for k, v in flat(loaded).items())
    predictor = Sam2VideoPredictor.from_pretrained(tmp_path)
    assert predictor is not None


def test_other_settings_refused(setup):
    other = VideoTrainer(setup["model"], setup["params"], **{**HPARAMS, "lr": 1e-3, "num_correction_pt_per_frame": 1})
    with pytest.raises(ValueError, match=r"other settings \(lr, settings\)"):
        other.resume(setup["out"])
    assert other.step == 0
    with pytest.raises(ValueError, match="trainable must be one of"):
        VideoTrainer(setup["model"], setup["params"], **{**HPARAMS, "trainable": "decoder"})


def test_cli_finetune_video_end_to_end(tmp_path, capsys):
    """``sam2-jax finetune DATA --video`` on a tiny DAVIS layout (2 videos of 4 frames, label PNGs): OUT loads as a
    video predictor; rerunning says it is complete; another setting, a missing dataset and an image-only --train
    are refused with one line."""
    import argparse

    from sam2_jax.checkpoints import save_converted
    from sam2_jax.cli import finetune
    from sam2_jax.frontends.video.predictor import Sam2VideoPredictor

    def cli(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="sam2-jax")
        finetune.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["finetune", *argv])
        return args.func(args)

    cfg = small_config()
    save_converted(tmp_path / "model", cfg, random_params(cfg, seed=0, score_shift=2.0))
    data = write_shapes_videos(tmp_path / "davis", 2, 4, (64, 80), seed=3, max_objects=2)
    out = tmp_path / "out"
    argv = [
        str(data),
        "--video",
        "--model",
        str(tmp_path / "model"),
        "--out",
        str(out),
        "--frames",
        "4",
        "--max-objects",
        "2",
        "--steps",
        "2",
        "--corrections",
        "1",
        "--checkpoint-every",
        "1",
        "--no-progress",
    ]
    assert cli(*argv) == 0
    assert "fine-tuned video model" in capsys.readouterr().out
    assert RunDirectory(out).steps() == [0, 1, 2] and (out / "metrics.jsonl").exists()
    assert Sam2VideoPredictor.from_pretrained(out) is not None
    assert cli(*argv) == 0 and "complete" in capsys.readouterr().out
    assert cli(*argv[:-1], "--lr", "1e-3", "--no-progress") == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "other data, model or settings (lr): rerun with the same "
            "arguments to resume it, or choose another output directory"
        )
    )
    assert cli(str(tmp_path / "none"), *argv[1:2], "--out", str(tmp_path / "o2"), "--model", str(tmp_path)) == 1
    assert capsys.readouterr().err.strip().startswith("error: no such dataset directory")
    assert cli(*argv[:5], str(tmp_path / "o3"), "--train", "decoder") == 1
    assert capsys.readouterr().err.strip() == (
        "error: --train decoder is for images: with --video use memory, decoder+memory or all"
    )
