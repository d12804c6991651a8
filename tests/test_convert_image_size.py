"""Checkpoints trained at another input size than 1024 px (MedSAM2's ``sam2.1_hiera_t512``), given to the converter
as ``--image-size`` or as their official yaml (``--config``), against the official model built at that size.

The official tiny is built at 512 px as MedSAM2's yaml has it (``++model.image_size=512``, the memory attention's
RoPE ``feat_sizes`` [32, 32]), every tensor randomised, saved as a ``.pt`` and converted by both command lines;
the converted directory runs at 512 px without being told again. Parity: the official ``SAM2ImagePredictor`` on a
photo with one click (its feature grids set for 512 px, which sam2 1.1.0 hard-codes for 1024; relative L2 <= 1e-4
as in ``test_image_predictor.py``), and the official
``SAM2VideoPredictor`` on 4 real frames, a click on frame 0 and a propagation (each output's logits relative L2 <=
1e-4, IoU >= 0.99, as in ``test_video_predictor.py``). Then the refusals: a size that is not a multiple of 16, and
sources or yamls that contradict the size or the tensors, each in one line.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import yaml
from conftest import GROCERIES_JPG, assert_rel_close, rel_l2
from flax.traverse_util import flatten_dict
from PIL import Image
from reference import official_config_at, official_video_predictor

import sam2_jax
from sam2_jax.checkpoints import CheckpointError
from sam2_jax.checkpoints.official_yaml import config_from_yaml
from sam2_jax.cli import main as cli_main
from sam2_jax.cli.convert import main as convert_main
from sam2_jax.config import CHECKPOINTS
from sam2_jax.modeling.sam2_video_model import NO_OBJECT_SCORE

SIZE = 512
BEDROOM = pathlib.Path(__file__).parent / "data" / "videos" / "bedroom"
FEAT_32 = [f"++model.memory_attention.layer.{a}.feat_sizes=[32,32]" for a in ("self_attention", "cross_attention")]


def _official_yaml(name: str = "sam2.1/sam2.1_hiera_t.yaml") -> dict:
    import sam2

    return yaml.safe_load((pathlib.Path(sam2.__file__).parent / "configs" / name).read_text())


def _write_yaml(path, edit=None, image_size=SIZE, feat_sizes=(32, 32)) -> pathlib.Path:
    """The official tiny yaml at ``image_size`` with ``feat_sizes``, as MedSAM2's ``sam2.1_hiera_t512.yaml``;
    ``edit(model)`` changes the ``model`` section further."""
    data = _official_yaml()
    model = data["model"]
    model["image_size"] = image_size
    for attn in ("self_attention", "cross_attention"):
        model["memory_attention"]["layer"][attn]["feat_sizes"] = list(feat_sizes)
    if edit is not None:
        edit(model)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def official_512(tmp_path_factory):
    """The official tiny video predictor at 512 px (RoPE feat_sizes [32, 32]), randomised, and its ``.pt``."""
    import torch

    official = official_video_predictor(image_size=SIZE, overrides=tuple(FEAT_32))
    assert official.image_size == SIZE and official.memory_attention.layers[0].self_attn.freqs_cis.shape[0] == 32**2
    path = tmp_path_factory.mktemp("official_512") / "sam2.1_hiera_t512.pt"
    torch.save({"model": official.state_dict()}, path)
    return official, path


@pytest.fixture(scope="module")
def converted_512(official_512, tmp_path_factory):
    """The ``.pt`` converted by ``sam2-jax convert --image-size 512`` and by ``python -m convert --config`` (the
    yaml): the same directory."""
    root = tmp_path_factory.mktemp("converted_512")
    by_size, by_yaml = root / "by_size", root / "by_yaml"
    assert cli_main(["convert", str(official_512[1]), str(by_size), "--image-size", str(SIZE)]) == 0
    assert convert_main([str(official_512[1]), str(by_yaml), "--config", str(_write_yaml(root / "t512.yaml"))]) == 0
    written = json.loads((by_size / "config.json").read_text())
    assert written["prompt_encoder_config"]["image_size"] == SIZE
    assert written["memory_attention_rope_feat_sizes"] == [32, 32]
    assert written == json.loads((by_yaml / "config.json").read_text())
    _same_params(sam2_jax.load_params(by_size)[1], sam2_jax.load_params(by_yaml)[1])
    return by_size


def _same_params(a, b):
    fa, fb = flatten_dict(a), flatten_dict(b)
    assert fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def test_converted_directory_and_pt_load_at_512(official_512, converted_512):
    """No size needed once converted; a ``.pt`` loaded directly takes it (and defaults to 1024 without it: no
    tensor says otherwise)."""
    model, params = sam2_jax.load(converted_512, video=True)
    assert model.config == official_config_at(SIZE) == CHECKPOINTS["sam2.1_hiera_tiny"].at_image_size(SIZE)
    assert model.config.vision_config.backbone_config.image_size == (SIZE, SIZE)
    by_file = sam2_jax.load_params(converted_512 / "flax_params.safetensors")  # the params file, beside its config
    assert by_file[0] == model.config
    _same_params(by_file[1], params)
    direct = sam2_jax.Sam2ImagePredictor.from_pretrained(official_512[1], image_size=SIZE)
    assert direct.image_size == SIZE and direct.model.config == sam2_jax.load(converted_512)[0].config
    _same_params(direct.params, sam2_jax.load(converted_512)[1])
    assert sam2_jax.load_params(official_512[1])[0].prompt_encoder_config.image_size == 1024


def test_image_predictor_matches_official_at_512(official_512, converted_512):
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    photo = np.asarray(Image.open(GROCERIES_JPG).convert("RGB"))  # 800 x 534
    official = SAM2ImagePredictor(official_512[0])
    # sam2 1.1.0's image predictor hard-codes the 1024 px feature grids; MedSAM2's fork derives them from the size
    grid = SIZE // 16
    official._bb_feat_sizes = [(grid * 4, grid * 4), (grid * 2, grid * 2), (grid, grid)]
    official.set_image(photo)
    ours = sam2_jax.Sam2ImagePredictor.from_pretrained(converted_512)
    assert ours.image_size == SIZE and ours.processor.image_size == SIZE
    # the same normalised pixels on both sides, as in test_image_predictor.py
    pixels = official._transforms(photo)[None].permute(0, 2, 3, 1).numpy()
    assert pixels.shape == (1, SIZE, SIZE, 3)
    ours.set_pixel_values(pixels, [photo.shape[:2]])
    click = dict(point_coords=np.array([[420.0, 260.0]]), point_labels=np.array([1]))
    with torch.inference_mode():
        masks_ref, scores_ref, low_ref = official.predict(multimask_output=True, return_logits=True, **click)
    masks, scores, low = ours.predict(multimask_output=True, return_logits=True, **click)
    assert masks.shape == masks_ref.shape == (3, *photo.shape[:2]) and low.shape == low_ref.shape == (3, 128, 128)
    assert_rel_close(low, low_ref, 1e-4, "512 px low-res logits")
    assert_rel_close(masks, masks_ref, 1e-4, "512 px full-size logits")
    assert_rel_close(scores, scores_ref, 1e-4, "512 px scores")
    # our own preprocessing of the photo (resized to 512, not 1024) lands on the same best mask
    ours.set_image(photo)
    masks_own, scores_own, _ = ours.predict(multimask_output=True, return_logits=True, **click)
    best = int(np.argmax(scores_ref))
    a, b = masks_own[best] > 0, masks_ref[best] > 0
    iou = (a & b).sum() / max((a | b).sum(), 1)
    print(f"[parity] 512 px own preprocessing: IoU {iou:.4f}, logits relative L2 {rel_l2(masks_own, masks_ref):.2e}")
    assert iou >= 0.95


def _frames(tmp_path, n=4) -> pathlib.Path:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(n):
        shutil.copy(BEDROOM / f"{i:05d}.jpg", frames / f"{i:05d}.jpg")
    return frames


def test_video_predictor_matches_official_at_512(official_512, converted_512, tmp_path):
    import torch

    official = official_512[0]
    ours = sam2_jax.Sam2VideoPredictor.from_pretrained(converted_512, fill_hole_area=0)
    assert ours.image_size == SIZE
    frames = _frames(tmp_path)
    with torch.inference_mode():
        ostate = official.init_state(str(frames))
        ref = [official.add_new_points_or_box(ostate, frame_idx=0, obj_id=1, points=[[400, 200]], labels=[1])]
        ref += list(official.propagate_in_video(ostate))
    jstate = ours.init_state(frames)
    got = [ours.add_new_points_or_box(jstate, frame_idx=0, obj_id=1, points=[[400, 200]], labels=[1])]
    got += list(ours.propagate_in_video(jstate))
    assert [(t, list(ids)) for t, ids, _ in got] == [(t, list(ids)) for t, ids, _ in ref] and len(got) == 5
    worst, min_iou, present = 0.0, 1.0, 0
    for (t, _, m), (_, _, m_ref) in zip(got, ref, strict=True):
        m, m_ref = np.asarray(m, np.float64), m_ref.numpy().astype(np.float64)
        assert m.shape == m_ref.shape == (1, 1, 540, 960)
        absent = (m_ref == NO_OBJECT_SCORE).all()
        assert absent == (m == NO_OBJECT_SCORE).all(), f"frame {t}: object judged absent on one side only"
        if absent:
            continue
        present += 1
        worst = max(worst, rel_l2(m, m_ref))
        a, b = m > 0, m_ref > 0
        min_iou = min(min_iou, (a & b).sum() / max((a | b).sum(), 1))
    print(f"[parity] 512 px video: worst relative L2 {worst:.2e}, min IoU {min_iou:.5f}, {present}/5 present")
    assert present >= 3, "too few outputs with the object present to compare"
    assert worst <= 1e-4 and min_iou >= 0.99


def _convert_error(argv, capsys) -> str:
    assert cli_main(["convert", *argv]) == 1
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("[1/3]")]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines  # one line after the progress line
    return lines[0]


def test_refusals_name_the_problem(official_512, converted_512, tmp_path, capsys):
    pt, out = str(official_512[1]), str(tmp_path / "out")
    assert "positive multiple of 16" in _convert_error([pt, out, "--image-size", "500"], capsys)
    assert "got 0" in _convert_error([pt, out, "--image-size", "0"], capsys)
    # a converted directory records its size
    message = _convert_error([str(converted_512), out, "--image-size", "1024"], capsys)
    assert "records image size 512, not 1024" in message
    # a yaml that says another size than the flag
    at_1024 = _write_yaml(tmp_path / "t1024.yaml", image_size=1024, feat_sizes=(64, 64))
    assert "contradicts" in _convert_error([pt, out, "--config", str(at_1024), "--image-size", "512"], capsys)
    # a yaml of another trunk than the tensors' (small's stages on the tiny checkpoint)
    small = _write_yaml(tmp_path / "s.yaml", lambda m: m["image_encoder"]["trunk"].update(
        stages=[1, 2, 11, 2], global_att_blocks=[7, 10, 13]))  # fmt: skip
    message = _convert_error([pt, out, "--config", str(small)], capsys)
    assert "96-wide Hiera trunk of 16 blocks, but the checkpoint's is 96-wide with 12 blocks" in message
    # a RoPE table of the grid's size but another shape; a setting sam2-jax does not run; a predictor option
    skewed = _write_yaml(tmp_path / "skewed.yaml", feat_sizes=(16, 64))
    assert "feat_sizes [16, 64]" in _convert_error([pt, out, "--config", str(skewed)], capsys)
    no_high_res = _write_yaml(tmp_path / "h.yaml", lambda m: m.update(use_high_res_features_in_sam=False))
    assert "use_high_res_features_in_sam False is not supported" in _convert_error(
        [pt, out, "--config", str(no_high_res)], capsys
    )
    cond = _write_yaml(tmp_path / "c.yaml", lambda m: m.update(add_all_frames_to_correct_as_cond=True))
    assert "video predictor option" in _convert_error([pt, out, "--config", str(cond)], capsys)
    assert "not both" in _convert_error([pt, out, "--size", "tiny", "--config", str(skewed)], capsys)
    assert not os.path.exists(out)
    # the library says the same: a Hub checkpoint's size is known, and from_pretrained takes the size
    with pytest.raises(CheckpointError, match="1024 px checkpoint, not 512 px"):
        sam2_jax.load_params("facebook/sam2.1-hiera-tiny", image_size=SIZE)
    with pytest.raises(CheckpointError, match="multiple of 16"):
        sam2_jax.Sam2VideoPredictor.from_pretrained(pt, image_size=520)


def test_official_yamls_read_as_the_presets(tmp_path):
    """Every official model yaml (sam2 and sam2.1, four sizes) gives its preset; MedSAM2's variants read as set."""
    names = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
    for release in ("sam2", "sam2.1"):
        for short, size in names.items():
            data = _official_yaml(f"{release}/{release}_hiera_{short}.yaml")
            path = tmp_path / f"{release}_{short}.yaml"
            path.write_text(yaml.safe_dump(data))
            assert config_from_yaml(path) == CHECKPOINTS[f"{release}_hiera_{size}"], path.name
    t512 = CHECKPOINTS["sam2.1_hiera_tiny"].at_image_size(SIZE)
    assert config_from_yaml(_write_yaml(tmp_path / "a.yaml")) == t512
    # [64, 64] at 512 px: the official RoPE recomputes the table for the 32x32 grid, so it runs as [32, 32]
    assert config_from_yaml(_write_yaml(tmp_path / "b.yaml", feat_sizes=(64, 64))) == t512
    two = config_from_yaml(_write_yaml(tmp_path / "c.yaml", lambda m: m["memory_attention"].update(num_layers=2)))
    assert two.video_config.memory_attention_num_layers == 2
    still = _write_yaml(tmp_path / "d.yaml", lambda m: m.update(multimask_output_for_tracking=False))
    assert config_from_yaml(still).video_config.multimask_output_for_tracking is False
    absent = _write_yaml(tmp_path / "e.yaml", lambda m: m.pop("image_size"))  # SAM2Base's default: 512
    assert config_from_yaml(absent).prompt_encoder_config.image_size == 512
