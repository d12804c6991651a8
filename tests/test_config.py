"""Configs: presets against the official yaml files, transformers config.json round trips, the registry."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sam2_jax import CHECKPOINTS, MODEL_SIZES, Sam2Config, get_config
from sam2_jax.modeling.hiera import Hiera

OFFICIAL_YAML = {
    "tiny": "sam2.1_hiera_t.yaml",
    "small": "sam2.1_hiera_s.yaml",
    "base_plus": "sam2.1_hiera_b+.yaml",
    "large": "sam2.1_hiera_l.yaml",
}


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_presets_build_the_official_trunk(size):
    """Instantiating the official Hiera from its yaml gives the same stages, widths, windows as our preset."""
    from hydra import compose
    from hydra.utils import instantiate
    from reference import ensure_official_hydra

    ensure_official_hydra()
    cfg = compose(config_name=f"configs/sam2.1/{OFFICIAL_YAML[size]}")
    trunk = instantiate(cfg.model.image_encoder.trunk)
    ours = MODEL_SIZES[size].vision_config.backbone_config
    assert tuple(trunk.channel_list[::-1]) == ours.embed_dim_per_stage
    assert [b.window_size for b in trunk.blocks] == [spec["window_size"] for spec in Hiera(ours).block_specs()]
    assert len(trunk.blocks) == sum(ours.blocks_per_stage)
    assert tuple(trunk.pos_embed.shape[-2:]) == ours.window_positional_embedding_background_size
    assert [b.attn.num_heads for b in trunk.blocks][-1] == ours.num_attention_heads_per_stage[-1]
    neck = cfg.model.image_encoder.neck
    assert tuple(neck.backbone_channel_list) == MODEL_SIZES[size].vision_config.backbone_channel_list


@pytest.mark.parametrize("video", [False, True])
def test_transformers_config_json_round_trip(tmp_path, video):
    import transformers
    from reference import to_transformers_config

    cfg = get_config("base_plus")
    hf = to_transformers_config(cfg, video=video)
    hf.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == ("sam2_video" if video else "sam2")
    assert Sam2Config.from_dict(data) == cfg
    assert Sam2Config.from_json_file(tmp_path / "config.json") == cfg
    # and our own json reads back into transformers
    assert transformers.Sam2Config(**{k: v for k, v in cfg.to_dict().items() if k != "model_type"})


def test_registry_and_errors():
    assert get_config("facebook/sam2.1-hiera-base-plus") is MODEL_SIZES["base_plus"]
    assert get_config("facebook/sam2-hiera-large") is get_config("sam2.1_hiera_large")
    assert len(CHECKPOINTS) == 16
    with pytest.raises(KeyError, match="unknown SAM 2 checkpoint"):
        get_config("facebook/sam3")
    with pytest.raises(ValueError, match="unknown config keys"):
        Sam2Config.from_dict({**get_config("tiny").to_dict(), "mask_decoder_config": {"bogus": 1}})
    with pytest.raises(ValueError, match="not a SAM 2 config"):
        Sam2Config.from_dict({"model_type": "bert"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_config("tiny").vision_config.fpn_hidden_size = 3  # frozen
