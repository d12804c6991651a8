"""Exporting params back to PyTorch (``sam2_jax.checkpoints.export``, ``sam2-jax export``): JAX -> transformers ->
JAX and JAX -> .pt -> the official model round trips, bit for bit; the loaded torch models' outputs; the command
line's bad inputs."""

from __future__ import annotations

import argparse

import jax
import numpy as np
import pytest
from conftest import assert_rel_close
from flax.traverse_util import flatten_dict

import sam2_jax
from sam2_jax.checkpoints import CheckpointError
from sam2_jax.checkpoints.export import FORMATS, export, to_official_state_dict, to_transformers_state_dict
from sam2_jax.checkpoints.readers import read_safetensors
from sam2_jax.cli import export as export_cli


def _cli(argv: list[str]) -> int:
    """``sam2-jax export ...`` through the command's own ``register`` (as ``sam2_jax.cli.build_parser`` does)."""
    parser = argparse.ArgumentParser(prog="sam2-jax")
    export_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", *argv])
    return args.func(args)


def _same_state(actual, expected, what):
    assert sorted(actual) == sorted(expected), f"{what}: keys differ"
    for k in expected:
        a, e = np.asarray(actual[k]), np.asarray(expected[k])
        assert a.shape == e.shape and a.dtype == e.dtype == np.float32, f"{what}: {k}"
        np.testing.assert_array_equal(a, e, err_msg=f"{what}: {k}")


def _same_tree(actual, expected):
    def flat(tree):
        return {"/".join(k): v for k, v in flatten_dict(tree).items()}

    _same_state(flat(actual), flat(expected), "params")


@pytest.fixture(scope="module")
def hf_image_export(small_ref, tmp_path_factory):
    """The small randomised transformers ``Sam2Model``'s converted params, exported back as a transformers dir."""
    out = tmp_path_factory.mktemp("export") / "image"
    assert export(small_ref.params, small_ref.config, out) == out
    return out


def test_transformers_image_round_trip(small_ref, hf_image_export):
    assert sorted(p.name for p in hf_image_export.iterdir()) == ["config.json", "model.safetensors"]
    _same_state(read_safetensors(hf_image_export / "model.safetensors"), small_ref.state, "model.safetensors")
    _same_state(to_transformers_state_dict(small_ref.params, small_ref.config), small_ref.state, "state dict")
    config, params = sam2_jax.load_params(hf_image_export)  # and back to JAX
    assert config == small_ref.config
    _same_tree(params, small_ref.params)


def test_transformers_image_model_loads_and_matches(small_ref, hf_image_export):
    import torch
    import transformers

    model, info = transformers.Sam2Model.from_pretrained(hf_image_export, output_loading_info=True)
    assert model.config.model_type == "sam2"
    assert not any(info.values()), info  # no missing, unexpected, mismatched keys nor errors
    model.eval()
    rng = np.random.default_rng(3)
    kwargs = dict(
        pixel_values=torch.from_numpy(rng.standard_normal((1, 3, 256, 256)).astype(np.float32)),
        input_points=torch.tensor([[[[90.0, 170.0]]]]),
        input_labels=torch.tensor([[[1]]]),
    )
    with torch.no_grad():
        ours, ref = model(**kwargs), small_ref.torch_model(**kwargs)
    # the weights are identical (above); the last ~1e-7 is the memory-mapped tensors' alignment in torch's kernels
    for name in ("pred_masks", "iou_scores", "object_score_logits"):
        assert_rel_close(getattr(ours, name).numpy(), getattr(ref, name).numpy(), 1e-6, f"exported {name}")


def test_transformers_video_round_trip(tmp_path):
    """Params that never came from torch (random, as after training) -> transformers ``Sam2VideoModel`` -> JAX."""
    import transformers
    from reference import random_params, tiny_video_test_config

    config = tiny_video_test_config()
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), random_params(config, seed=5, video=True))
    out = export(params, config, tmp_path / "video")
    loaded_config, loaded = sam2_jax.load_params(out)
    assert loaded_config == config
    _same_tree(loaded, params)

    model, info = transformers.Sam2VideoModel.from_pretrained(out, output_loading_info=True)
    assert model.config.model_type == "sam2_video"
    assert not any(info.values()), info
    torch_state = {k: v.numpy() for k, v in model.state_dict().items()}
    _same_state(torch_state, read_safetensors(out / "model.safetensors"), "Sam2VideoModel.state_dict()")
    # random params have two different Fourier matrices, which the official model keeps as one
    with pytest.raises(CheckpointError, match="must be equal"):
        to_official_state_dict(params, config)


def test_pt_round_trip_loads_into_the_official_model(official_tiny, official_converted, tmp_path, capsys):
    import torch
    from reference import OFFICIAL_CONFIGS, ensure_official_hydra
    from sam2.build_sam import build_sam2

    model, _, _ = official_tiny
    reference = {k: v.numpy() for k, v in model.state_dict().items()}
    out = tmp_path / "exported.pt"
    assert _cli([str(official_converted), str(out), "--format", "pt"]) == 0
    assert "[2/2]" in capsys.readouterr().err
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert list(saved) == ["model"]
    _same_state({k: v.numpy() for k, v in saved["model"].items()}, reference, "exported .pt")

    ensure_official_hydra()  # the hydra config module, in case another test cleared it
    rebuilt = build_sam2(OFFICIAL_CONFIGS["tiny"], ckpt_path=str(out), device="cpu")  # strict load_state_dict
    _same_state({k: v.numpy() for k, v in rebuilt.state_dict().items()}, reference, "build_sam2 state dict")


def test_fine_tuned_params_round_trip_through_pt(official_converted, tmp_path):
    """Changed params (every leaf but the frozen Fourier matrices, as training leaves them) -> .pt -> JAX."""
    config, params = sam2_jax.load_params(official_converted)
    rng = np.random.default_rng(0)

    def tune(path, x):
        frozen = path[-1].key == "positional_embedding"
        return x if frozen else (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)

    tuned = jax.tree_util.tree_map_with_path(tune, params)
    out = export(tuned, config, tmp_path / "tuned.pt", "pt")
    loaded_config, loaded = sam2_jax.load_params(out)
    assert loaded_config == config
    _same_tree(loaded, tuned)


def test_official_names_follow_the_rename_chain():
    """Where two names rename to one key, the one taking the specific rule is chosen (``norm1`` over
    ``layer_norm1``, ``out_proj`` over ``o_proj``), and the inverse renames back through every rule applied."""
    from sam2_jax.checkpoints.export import official_key

    assert (
        official_key("vision_encoder.backbone.blocks.0.layer_norm1.weight")
        == "image_encoder.trunk.blocks.0.norm1.weight"
    )
    assert (
        official_key("mask_decoder.transformer.layers.0.self_attn.o_proj.weight")
        == "sam_mask_decoder.transformer.layers.0.self_attn.out_proj.weight"
    )
    assert official_key("memory_encoder.memory_fuser.layers.1.scale") == "memory_encoder.fuser.layers.1.gamma"
    with pytest.raises(CheckpointError, match="no official key"):
        official_key("not.a.sam2.key")


def test_params_that_do_not_fit_the_model_are_refused(small_ref, tmp_path):
    params = {**small_ref.params, "mask_decoder": dict(small_ref.params["mask_decoder"])}
    del params["mask_decoder"]["iou_token"]
    with pytest.raises(CheckpointError, match="1 missing:\\s+mask_decoder/iou_token/embedding"):
        export(params, small_ref.config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_image_params_cannot_be_a_pt(small_ref, tmp_path):
    with pytest.raises(CheckpointError, match="video model's params"):
        export(small_ref.params, small_ref.config, tmp_path / "image.pt", "pt")
    with pytest.raises(ValueError, match="unknown export format"):
        export(small_ref.params, small_ref.config, tmp_path / "x", "onnx")
    assert not list(tmp_path.iterdir())


def test_cli_refuses_to_overwrite_and_force_replaces(hf_image_export, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _cli([str(hf_image_export), str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {out} exists; pass --force to overwrite it"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert _cli([str(hf_image_export), str(out), "--force", "--format", "transformers"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_cli_bad_inputs(tmp_path, capsys):
    assert export_cli.FORMATS == FORMATS
    with pytest.raises(SystemExit) as e:
        _cli([str(tmp_path), str(tmp_path / "out"), "--format", "onnx"])
    assert e.value.code == 2
    assert "invalid choice: 'onnx'" in capsys.readouterr().err
    assert _cli([str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: no such file or directory")
    assert not (tmp_path / "out").exists()
