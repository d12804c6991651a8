"""Every notebook runs, offline, against a randomised local checkpoint; notebooks are stored without outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(small_ref, tmp_path_factory):
    path = tmp_path_factory.mktemp("nb") / "sam2-random"
    small_ref.torch_model.save_pretrained(path)
    return path


def test_notebooks_are_generated_and_clean():
    gen = _generator()
    assert {p.name for p in NOTEBOOKS} == set(gen.NOTEBOOKS)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        fresh = gen.build(gen.NOTEBOOKS[path.name])
        assert [c.source for c in nb.cells] == [c.source for c in fresh.cells], (
            f"{path.name} is stale: run tools/make_notebooks.py"
        )
        for cell in nb.cells:
            assert not cell.get("outputs") and not cell.get("execution_count"), f"{path.name} has outputs"


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory):
    """transformers' ``Sam2VideoModel`` on the small tracking config, randomised, object-score bias shifted so that
    tracked objects are seen."""
    import torch
    from reference import build_transformers_model, tracking_test_config

    model = build_transformers_model(tracking_test_config(), seed=0, video=True)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias += 1.0
    path = tmp_path_factory.mktemp("nb") / "sam2-video-random"
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, checkpoint, video_checkpoint, monkeypatch):
    """Run from notebooks/, as Jupyter does; the notebooks write only to temporary directories."""
    from nbclient import NotebookClient

    monkeypatch.setenv("SAM2_JAX_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("SAM2_JAX_VIDEO_CHECKPOINT", str(video_checkpoint))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
