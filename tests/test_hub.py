"""Hub repo ids through a fake huggingface_hub cache, offline: the network is never reached."""

from __future__ import annotations

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import sam2_jax
from sam2_jax.checkpoints import hub

COMMIT = "0" * 40


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1, and huggingface_hub's own flag (read at its import) set too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def fake_cache(root, repo_id: str):
    """The snapshot directory of ``repo_id`` in a cache laid out like huggingface_hub's, ref main -> COMMIT."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


def test_repo_id_or_local_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub.is_repo_id("facebook/sam2.1-hiera-tiny")
    (tmp_path / "facebook" / "sam2.1-hiera-tiny").mkdir(parents=True)
    assert not hub.is_repo_id("facebook/sam2.1-hiera-tiny")  # an existing path is a path
    assert not hub.is_repo_id("model.safetensors") and not hub.is_repo_id("a/b/c") and not hub.is_repo_id("/x")


def test_download_finds_the_cached_snapshot(tmp_path, offline):
    snap = fake_cache(tmp_path, "someone/repo")
    for name in hub.HUB_FILES:
        (snap / name).write_bytes(b"x")
    assert hub.download("someone/repo", cache_dir=tmp_path) == snap
    with pytest.raises(hub.HubUnavailableError, match=r"someone/not-cached is not in the local .* cache .*offline"
                       r".*pass a local checkpoint instead") as err:  # fmt: skip
        hub.download("someone/not-cached", cache_dir=tmp_path)  # not cached and offline: never reaches the network
    assert "\n" not in str(err.value)


def test_cli_without_network_says_what_to_pass(tmp_path, offline, capsys):
    """``sam2-jax segment`` with an uncached Hub id and no network: one line, naming the local alternatives."""
    from PIL import Image

    from sam2_jax.cli import main

    image = tmp_path / "img.png"
    Image.new("RGB", (32, 24), (90, 120, 30)).save(image)
    out = tmp_path / "m.png"
    argv = ["segment", str(image), "--point", "5,5", "--model", "someone/never-cached", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: someone/never-cached is not in the local Hugging Face cache"), err
    assert "converted directory" in err and ".pt" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_load_repo_id_from_offline_cache(small_ref, tmp_path, offline):
    """A repo id resolves through the cache to the same params as the transformers directory it holds."""
    small_ref.torch_model.save_pretrained(fake_cache(tmp_path, "someone/sam2-small-test"))
    model, params = sam2_jax.load("someone/sam2-small-test", cache_dir=tmp_path)
    assert model.config == small_ref.config
    ours, ref = flatten_dict(params), flatten_dict(small_ref.params)
    assert ours.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(np.asarray(ours[k]), ref[k], err_msg="/".join(k))
