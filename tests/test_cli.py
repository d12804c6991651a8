"""The ``sam2-jax`` command: the README's main job (segment the bundled photo from a click) and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TRUCK_JPG
from PIL import Image

from sam2_jax import Sam2ImagePredictor
from sam2_jax.cli import main


def test_segment_from_a_click(official_converted, tmp_path, capsys):
    out, ov = tmp_path / "mask.png", tmp_path / "overlay.png"
    argv = ["segment", TRUCK_JPG, "--point", "500,375", "--model", str(official_converted)]
    assert main([*argv, "--out", str(out), "--overlay", str(ov)]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (1200, 1800) and set(np.unique(mask)) <= {0, 255}
    overlay = np.asarray(Image.open(ov))
    assert overlay.shape == (1200, 1800, 3)
    assert "predicted IoU" in capsys.readouterr().out

    predictor = Sam2ImagePredictor.from_pretrained(official_converted)
    predictor.set_image(Image.open(TRUCK_JPG))
    expected, _, _ = predictor.predict(point_coords=[[500, 375]], point_labels=[1], multimask_output=False)
    np.testing.assert_array_equal(mask == 255, expected[0])
    photo = np.asarray(Image.open(TRUCK_JPG).convert("RGB"))
    assert np.any(overlay[expected[0]] != photo[expected[0]])  # the mask is drawn
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--point", "1900,10"], "outside the 1800x1200 image"),
        (["--point", "10,10", "--label", "1", "--label", "0"], "2 --label values for 1 --point"),
        ([], "at least one --point"),
    ],
)
def test_segment_bad_input(official_converted, tmp_path, capsys, extra, message):
    argv = ["segment", TRUCK_JPG, "--model", str(official_converted), "--out", str(tmp_path / "m.png"), *extra]
    try:
        code = main(argv)
    except SystemExit as e:  # argument errors leave through SystemExit with their message
        code, text = 1, str(e.code)
    else:
        text = capsys.readouterr().err
    assert code == 1 and message in text, text
    assert not (tmp_path / "m.png").exists()


def test_segment_unreadable_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit, match="cannot read image"):
        main(["segment", str(tmp_path / "missing.jpg"), "--point", "1,1", "--out", str(tmp_path / "m.png")])
    with pytest.raises(SystemExit) as e:
        main(["segment", TRUCK_JPG, "--point", "1;1", "--out", str(tmp_path / "m.png")])
    assert e.value.code == 2 and "--point must be 2 comma-separated numbers" in capsys.readouterr().err


def test_generate_writes_masks_metadata_and_overlay(small_ref, tmp_path, capsys):
    import json

    from sam2_jax import save_converted

    ckpt = tmp_path / "ckpt"
    save_converted(ckpt, small_ref.config, small_ref.params)
    out = tmp_path / "masks"
    argv = ["generate", TRUCK_JPG, "--model", str(ckpt), "--out", str(out), "--points-per-side", "4"]
    assert main([*argv, "--pred-iou-thresh", "-100", "--stability-score-thresh", "0"]) == 0
    meta = json.loads((out / "masks.json").read_text())
    pngs = sorted(out.glob("mask_*.png"))
    assert len(pngs) == len(meta) > 0
    for png, rec in zip(pngs, meta, strict=True):
        mask = np.asarray(Image.open(png)) == 255
        assert mask.shape == (1200, 1800) and int(mask.sum()) == rec["area"]
    assert np.asarray(Image.open(out / "overlay.png")).shape == (1200, 1800, 3)
    assert f"{len(meta)} masks written" in capsys.readouterr().out
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind
