"""``sam2-jax finetune`` end to end on generated shapes with a small converted model (video tensors included): OUT
loads with ``sam2_jax.load``, has metrics.jsonl, curves.png, eval.json and orbax checkpoints; an interrupted run
resumed by rerunning the command (with another ``--keep``: not a setting) ends with the uninterrupted run's params
and keeps that many checkpoints; a finished run says so; wrong input (the encoder rate options
without ``--train all`` or out of range, other settings against OUT) gives one line."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image
from reference import random_params, tiny_video_test_config

import sam2_jax
from sam2_jax.checkpoints import load_params, save_converted
from sam2_jax.checkpoints.converted import flatten_params
from sam2_jax.cli import finetune
from sam2_jax.training.synthetic import write_shapes_dataset
from sam2_jax.training.train_state import RunDirectory
from sam2_jax.training.trainer import Trainer


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sam2-jax")
    finetune.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["finetune", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    cfg = tiny_video_test_config()
    save_converted(root / "model", cfg, random_params(cfg, seed=0, score_shift=2.0, video=True))
    write_shapes_dataset(root / "data", 20, (96, 128), seed=0, layout="per_object", max_objects=2)
    write_shapes_dataset(root / "other", 20, (96, 128), seed=1)
    return root


def common(files, out, *extra) -> list[str]:
    return [
        str(files / "data"),
        "--model",
        str(files / "model"),
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--mask-size",
        "64",
        "--max-objects",
        "2",
        "--correction-steps",
        "1",
        "--checkpoint-every",
        "2",
        "--log-every",
        "1",
        "--eval-fraction",
        "0.2",
        "--lr",
        "3e-3",
        "--no-progress",
        *extra,
    ]


def test_finetune_resume_and_errors(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert cli(*common(files, out)) == 0
    printed = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + printed)
    assert "held-out mIoU from one click" in printed
    model, params = sam2_jax.load(out)
    assert isinstance(model, sam2_jax.Sam2Model)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "iou", "lr", "grad_norm", "time"} <= set(rows[0])
    assert Image.open(out / "curves.png").size[0] > 100
    assert set(json.loads((out / "eval.json").read_text())) == {"before", "after"}
    assert RunDirectory(out).steps() == [0, 2, 4]  # step 0 (resumable from the start), --checkpoint-every 2
    # the source's video tensors and the frozen image encoder are written back unchanged
    _, src = load_params(files / "model")
    _, got = load_params(out)
    assert np.array_equal(
        got["memory_attention"]["layers_0"]["self_attn"]["q_proj"]["kernel"],
        src["memory_attention"]["layers_0"]["self_attn"]["q_proj"]["kernel"],
    )
    assert np.array_equal(
        got["vision_encoder"]["neck"]["convs_0"]["kernel"], src["vision_encoder"]["neck"]["convs_0"]["kernel"]
    )
    assert not np.array_equal(
        got["mask_decoder"]["iou_token"]["embedding"], src["mask_decoder"]["iou_token"]["embedding"]
    )

    # rerun: complete, nothing to do
    assert cli(*common(files, out)) == 0
    assert "complete" in capsys.readouterr().out

    # interrupted after step 3 (checkpoint at 2), then the same command again: the uninterrupted params
    part = tmp_path / "part"
    real_step = Trainer.train_step

    def dying_step(self, batch):
        if self.step == 3:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        cli(*common(files, part))
    assert RunDirectory(part).steps() == [0, 2]
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert cli(*common(files, part, "--keep", "1")) == 0
    assert RunDirectory(part).steps() == [4]
    assert "resuming" in capsys.readouterr().err
    _, resumed = load_params(part)
    flat_a, flat_b = flatten_params(got), flatten_params(resumed)
    worst = max(float(np.max(np.abs(flat_a[k] - flat_b[k]))) for k in flat_a)
    with capsys.disabled():
        print(f"[cli] resumed vs uninterrupted: max abs param difference {worst:.1e}")
    assert worst == 0.0
    assert [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

    # another dataset or setting against an existing OUT, and bad arguments: one line each, exit 1
    bad = [
        ([str(files / "other"), *common(files, out)[1:]], "holds a fine-tuning run of other data"),
        (common(files, out, "--seed", "1"), "seed"),
        (common(files, out, "--train", "all", "--layer-decay", "0.8"), "layer_decay"),  # in the resume fingerprint
        (common(files, tmp_path / "x", "--layer-decay", "0.9"), "--layer-decay only applies with --train all"),
        (common(files, tmp_path / "x", "--train", "prompt+decoder", "--encoder-lr-scale", "0.5"), "only applies"),
        (common(files, tmp_path / "x", "--train", "all", "--layer-decay", "1.5"), "--layer-decay must be in (0, 1]"),
        (common(files, tmp_path / "x", "--train", "all", "--encoder-lr-scale", "0"), "--encoder-lr-scale must be > 0"),
        (common(files, tmp_path / "x", "--batch-size", "6"), "multiple of the 8 devices"),
        (common(files, tmp_path / "x", "--steps", "0"), "--steps must be >= 1"),
        (common(files, tmp_path / "x", "--keep", "0"), "--keep must be >= 1"),
        ([str(tmp_path / "missing"), "--model", str(files / "model"), "--out", str(tmp_path / "x")], "no such"),
        (common(files, files / "model"), "not the output of sam2-jax finetune"),
    ]
    for argv, message in bad:
        assert cli(*argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, (argv, err)
