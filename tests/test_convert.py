"""The conversion command (``sam2-jax convert``, ``python -m convert``) and the loaders behind it: round trips,
bad inputs, atomic output, the Hub's video layout (converted whole, loaded as the image or the video model),
converted directories that do not fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import assert_rel_close
from flax.traverse_util import flatten_dict

import sam2_jax
from sam2_jax.checkpoints import CheckpointError
from sam2_jax.cli import main as cli_main
from sam2_jax.cli.convert import main as convert_main

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {
    "sam2-jax convert": lambda argv: cli_main(["convert", *argv]),
    "python -m convert": convert_main,
}


@pytest.fixture(params=sorted(ENTRY_POINTS))
def convert(request):
    """Both command lines, called in-process: ``convert(argv) -> exit code``."""
    return ENTRY_POINTS[request.param]


@pytest.fixture(scope="module")
def hf_dir(small_ref, tmp_path_factory):
    """The small randomised transformers model saved with save_pretrained."""
    d = tmp_path_factory.mktemp("hf") / "model"
    small_ref.torch_model.save_pretrained(d)
    return d


def _same_tree(a, b):
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg="/".join(k))


def test_cli_round_trip(convert, small_ref, hf_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    assert convert([str(hf_dir), str(out)]) == 0
    assert "[3/3]" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "flax_params.safetensors"]
    model, params = sam2_jax.load(out)
    assert model.config == small_ref.config
    _same_tree(params, small_ref.params)
    # leaf by leaf against the source tensors, through the documented transforms
    src = small_ref.state
    np.testing.assert_array_equal(
        params["mask_decoder"]["transformer"]["layers_0"]["self_attn"]["q_proj"]["kernel"],
        src["mask_decoder.transformer.layers.0.self_attn.q_proj.weight"].T,
    )


def test_refuses_to_overwrite_and_force_replaces(convert, hf_dir, tmp_path, capsys):
    out = tmp_path / "converted"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert convert([str(hf_dir), str(out)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert convert([str(hf_dir), str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_bad_inputs_exit_with_one_line(convert, tmp_path, capsys):
    cases = {}
    cases["missing"] = tmp_path / "nope.safetensors"
    truncated = tmp_path / "trunc" / "model.safetensors"
    truncated.parent.mkdir()
    cases["truncated"] = truncated
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle at all")
    cases["garbage_pt"] = garbage
    unsupported = tmp_path / "weights.bin"
    unsupported.write_bytes(b"\0" * 10)
    cases["unsupported"] = unsupported
    import torch
    from safetensors.numpy import save_file

    save_file({"a": np.zeros(3, np.float32), "b": np.ones(1000, np.float32)}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:-200])
    not_sam = tmp_path / "not_sam.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, not_sam)
    cases["not_sam2_pt"] = not_sam
    other_model = tmp_path / "other.pt"
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, other_model)
    cases["other_model_pt"] = other_model
    expected = {
        "missing": "no such file",
        "truncated": "not a valid safetensors file",
        "garbage_pt": "not a loadable torch checkpoint",
        "unsupported": "unsupported checkpoint file",
        "not_sam2_pt": "not a SAM 2 checkpoint",
        "other_model_pt": "not a SAM 2 checkpoint",
    }
    for name, path in cases.items():
        out = tmp_path / f"out_{name}"
        assert convert([str(path), str(out)]) == 1, name
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and expected[name] in err[-1], (name, err)
        assert not out.exists(), f"{name}: output written despite the error"


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False, cwd=cwd)


def test_command_lines_as_subprocesses(hf_dir, tmp_path):
    """``python -m convert`` from the repository root, ``python -m sam2_jax convert`` anywhere: same messages."""
    proc = _run(["-m", "convert", str(hf_dir), str(tmp_path / "cli")], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "flax_params.safetensors").exists()
    missing = [str(tmp_path / "missing"), str(tmp_path / "o")]
    bad = _run(["-m", "convert", *missing], cwd=ROOT)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 1 and len(errors) == 1 and bad.stderr.splitlines()[-1] == errors[0]
    bad_sub = _run(["-m", "sam2_jax", "convert", *missing], cwd=tmp_path)
    assert bad_sub.returncode == 1 and bad_sub.stderr.splitlines()[-1] == errors[0]


def test_convert_is_not_an_installed_package(tmp_path):
    """Only ``sam2_jax`` is installed: ``convert`` exists for ``python -m convert`` in the repository root alone."""
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('convert') is not None)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # what is installed, not what is on a path
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 0


def test_load_sources_agree(small_ref, hf_dir, tmp_path):
    """A directory, a bare safetensors file with --size semantics, and a converted dir give the same params."""
    _, from_dir = sam2_jax.load_params(hf_dir)
    _, from_file = sam2_jax.load_params(hf_dir / "model.safetensors")
    _same_tree(from_dir, small_ref.params)
    _same_tree(from_file, small_ref.params)
    model, params = sam2_jax.load(hf_dir, param_dtype=jax.numpy.bfloat16)
    assert jax.tree_util.tree_leaves(params)[0].dtype == jax.numpy.bfloat16


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """A randomised transformers Sam2VideoModel (small config with its video part) saved with save_pretrained:
    the Hub's layout."""
    from reference import build_transformers_model, tiny_video_test_config

    video = build_transformers_model(tiny_video_test_config(), seed=5, video=True)
    d = tmp_path_factory.mktemp("video") / "model"
    video.save_pretrained(d)
    return video, d


def test_hub_video_layout_matches_image_model(small_ref, video_dir):
    """The Hub ships Sam2VideoModel weights: converting them gives the image model's answers."""
    import torch
    from reference import build_transformers_model

    video, path = video_dir
    assert json.loads((path / "config.json").read_text())["model_type"] == "sam2_video"
    image_model = build_transformers_model(small_ref.config, seed=6)
    missing, unexpected = image_model.load_state_dict(video.state_dict(), strict=False)
    assert not missing, missing  # every image tensor exists in the video layout
    model, params = sam2_jax.load(path)
    assert type(model) is sam2_jax.Sam2Model and "memory_attention" not in params
    rng = np.random.default_rng(3)
    s = small_ref.size
    pixels = rng.standard_normal((1, s, s, 3)).astype(np.float32)
    points = rng.uniform(0, s, (1, 2, 2, 2)).astype(np.float32)
    labels = np.array([[[1, 0], [1, 1]]])
    with torch.no_grad():
        ref = image_model(
            pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2),
            input_points=torch.from_numpy(points),
            input_labels=torch.from_numpy(labels),
        )
    out = model.apply({"params": params}, pixel_values=pixels, input_points=points, input_labels=labels)
    assert_rel_close(out.pred_masks, ref.pred_masks.numpy(), 1e-4, "video-layout masks")
    assert_rel_close(out.iou_scores, ref.iou_scores.numpy(), 1e-4, "video-layout iou")


def test_converted_video_checkpoint_loads_into_both_models(convert, video_dir, tmp_path):
    """``convert`` writes the whole video tree; the converted directory loads as the image model (its subset) and
    as the video model (every tensor), whose memory encoder then answers as transformers' does."""
    import torch
    from reference import state_dict_numpy, tiny_video_test_config

    from sam2_jax.checkpoints.key_mapping import convert_state_dict
    from sam2_jax.modeling.sam2_video_model import Sam2VideoModel, image_params

    video, path = video_dir
    out = tmp_path / "converted"
    assert convert([str(path), str(out)]) == 0
    expected = convert_state_dict(state_dict_numpy(video), tiny_video_test_config())
    image_model, image = sam2_jax.load(out)
    _same_tree(image, image_params(expected))
    assert type(image_model) is sam2_jax.Sam2Model
    video_model, params = sam2_jax.load(out, video=True)
    assert type(video_model) is Sam2VideoModel and video_model.config == tiny_video_test_config()
    _same_tree(params, expected)
    _same_tree(sam2_jax.load_params(path)[1], expected)  # straight from the transformers dir too
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((1, 16, 16, 32)).astype(np.float32)
    masks = rng.uniform(-10, 10, (1, 256, 256, 1)).astype(np.float32)
    ours, _ = video_model.apply({"params": params}, feats, masks, method=Sam2VideoModel.encode_memory)
    with torch.no_grad():
        ref, _ = video.memory_encoder(
            torch.from_numpy(feats).permute(0, 3, 1, 2), torch.from_numpy(masks).permute(0, 3, 1, 2)
        )
    assert_rel_close(ours, ref.permute(0, 2, 3, 1).numpy(), 1e-5, "converted memory encoder")


def test_official_pt_converts_to_the_video_tree(official_tiny, official_converted):
    """``sam2-jax convert`` of an original .pt keeps every tensor (the 469 leaves of the video model)."""
    from sam2_jax.modeling.sam2_video_model import Sam2VideoModel

    model, params = sam2_jax.load(official_converted, video=True)
    assert type(model) is Sam2VideoModel and model.config == sam2_jax.get_config("tiny")
    assert len(flatten_dict(params)) == 469
    np.testing.assert_array_equal(
        np.asarray(params["memory_encoder"]["memory_fuser"]["layers_1"]["scale"]),
        official_tiny[0].memory_encoder.fuser.layers[1].gamma.detach().numpy(),
    )


def test_video_model_needs_video_tensors(hf_dir):
    with pytest.raises(CheckpointError, match="image model only"):
        sam2_jax.load(hf_dir, video=True)


def test_loader_rejects_mismatched_converted_dir(hf_dir, tmp_path):
    out = tmp_path / "c"
    assert convert_main([str(hf_dir), str(out)]) == 0
    with pytest.raises(CheckpointError, match="mis-shaped"):
        sam2_jax.load(out, config="tiny")
