"""Configs: presets (image and video parts, sam2 and sam2.1) against the official yaml files, transformers
config.json round trips (``Sam2Config`` and ``Sam2VideoConfig``), the registry."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sam2_jax import CHECKPOINTS, MODEL_SIZES, Sam2Config, get_config
from sam2_jax.config import VIDEO_RELEASES, VideoConfig
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
    hf = to_transformers_config(cfg, video=video)  # video: with every video field of the config
    hf.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == ("sam2_video" if video else "sam2")
    assert Sam2Config.from_dict(data) == cfg
    assert Sam2Config.from_json_file(tmp_path / "config.json") == cfg
    # and our own json reads back into transformers
    assert transformers.Sam2Config(**{k: v for k, v in cfg.to_dict().items() if k != "model_type"})


def _official_model_options(release: str, size: str) -> dict:
    """The official yaml's ``model`` options, with ``SAM2Base``'s defaults for those the yaml leaves out."""
    import inspect

    from hydra import compose
    from omegaconf import OmegaConf
    from reference import ensure_official_hydra
    from sam2.modeling.sam2_base import SAM2Base

    ensure_official_hydra()
    name = OFFICIAL_YAML[size] if release == "sam2.1" else OFFICIAL_YAML[size].replace("sam2.1", "sam2")
    cfg = OmegaConf.to_container(compose(config_name=f"configs/{release}/{name}").model)
    defaults = {
        k: p.default for k, p in inspect.signature(SAM2Base.__init__).parameters.items() if p.default is not p.empty
    }
    return {**defaults, **cfg}


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
@pytest.mark.parametrize("release", sorted(VIDEO_RELEASES))
def test_video_options_equal_the_official_yaml(release, size):
    import inspect

    from sam2.modeling.memory_encoder import CXBlock, MaskDownSampler

    m = _official_model_options(release, size)
    v = get_config(f"{release}_hiera_{size}").video_config
    assert v == VIDEO_RELEASES[release]
    assert (v.num_maskmem, v.image_size) == (m["num_maskmem"], m["image_size"])
    assert (v.sigmoid_scale_for_mem_enc, v.sigmoid_bias_for_mem_enc) == (
        m["sigmoid_scale_for_mem_enc"],
        m["sigmoid_bias_for_mem_enc"],
    )
    for name in (
        "no_obj_embed_spatial",
        "add_tpos_enc_to_obj_ptrs",
        "proj_tpos_enc_in_obj_ptrs",
        "use_signed_tpos_enc_to_obj_ptrs",
        "max_obj_ptrs_in_encoder",
        "max_cond_frames_in_attn",
        "multimask_output_in_sam",
        "multimask_min_pt_num",
        "multimask_max_pt_num",
        "multimask_output_for_tracking",
        "use_multimask_token_for_obj_ptr",
        "use_mask_input_as_output_without_sam",
        "directly_add_no_mem_embed",
        "only_obj_ptrs_in_the_past_for_eval",
    ):
        assert getattr(v, name) == m[name], name
    # build_sam2_video_predictor(apply_postprocessing=True), the official default, turns binarising on
    assert v.binarize_mask_from_pts_for_mem_enc and not m["binarize_mask_from_pts_for_mem_enc"]
    # what the modules hard-code: pointers through an MLP, a fixed no-object pointer, memory stride 1
    assert m["use_obj_ptrs_in_encoder"] and m["use_mlp_for_obj_ptr_proj"] and m["fixed_no_obj_ptr"]
    assert m["pred_obj_scores"] and not m["soft_no_obj_ptr"] and m["memory_temporal_stride_for_eval"] == 1

    att = m["memory_attention"]
    layer = att["layer"]
    assert (att["d_model"], att["num_layers"], att["pos_enc_at_input"]) == (
        v.memory_attention_hidden_size,
        v.memory_attention_num_layers,
        True,
    )
    assert (layer["dim_feedforward"], layer["activation"]) == (
        v.memory_attention_feed_forward_hidden_size,
        v.memory_attention_feed_forward_hidden_act,
    )
    assert (layer["pos_enc_at_attn"], layer["pos_enc_at_cross_attn_keys"], layer["pos_enc_at_cross_attn_queries"]) == (
        False,
        True,
        False,
    )
    assert layer["dropout"] == v.memory_attention_dropout
    for part in ("self_attention", "cross_attention"):
        a = layer[part]
        assert a["rope_theta"] == v.memory_attention_rope_theta
        assert tuple(a["feat_sizes"]) == v.memory_attention_rope_feat_sizes
        assert (a["embedding_dim"], a["num_heads"], a["downsample_rate"]) == (
            v.memory_attention_hidden_size,
            v.memory_attention_num_attention_heads,
            v.memory_attention_downsample_rate,
        )
        assert a["dropout"] == v.memory_attention_rope_dropout
    assert layer["cross_attention"]["kv_in_dim"] == v.memory_encoder_output_channels
    assert layer["cross_attention"]["rope_k_repeat"] and not layer["self_attention"].get("rope_k_repeat", False)

    enc = m["memory_encoder"]
    assert enc["out_dim"] == v.memory_encoder_output_channels
    assert enc["position_encoding"]["num_pos_feats"] == v.memory_encoder_output_channels  # halved per axis inside
    assert enc["position_encoding"]["normalize"] and enc["position_encoding"]["temperature"] == 10000
    down = {**_defaults(MaskDownSampler), **enc["mask_downsampler"]}
    assert (down["kernel_size"], down["stride"], down["padding"], down["total_stride"], down["embed_dim"]) == (
        v.mask_downsampler_kernel_size,
        v.mask_downsampler_stride,
        v.mask_downsampler_padding,
        v.mask_downsampler_total_stride,
        v.mask_downsampler_embed_dim,
    )
    fuser = {**_defaults(CXBlock), **enc["fuser"]["layer"]}
    assert enc["fuser"]["num_layers"] == v.memory_fuser_num_layers
    assert (fuser["dim"], 4 * fuser["dim"], fuser["kernel_size"], fuser["padding"]) == (
        v.memory_fuser_embed_dim,
        v.memory_fuser_intermediate_dim,
        v.memory_fuser_kernel_size,
        v.memory_fuser_padding,
    )
    assert fuser["layer_scale_init_value"] == v.memory_fuser_layer_scale_init_value and fuser["use_dwconv"]
    assert inspect.signature(MaskDownSampler).parameters["activation"].default.__name__ == "GELU"


def _defaults(cls) -> dict:
    import inspect

    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}


@pytest.mark.parametrize("release", sorted(VIDEO_RELEASES))
def test_transformers_video_config_round_trip(tmp_path, release):
    """transformers' Sam2VideoConfig as its conversion script builds each release reads as our preset, and our
    dict builds the same transformers config (every transformers field equal)."""
    import transformers

    flags = release == "sam2.1"
    hf = transformers.Sam2VideoConfig(
        enable_temporal_pos_encoding_for_object_pointers=flags, enable_occlusion_spatial_embedding=flags
    )
    hf.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    ours = Sam2Config.from_dict(data)
    assert ours == get_config(f"facebook/{release}-hiera-tiny")
    assert Sam2Config.from_dict(ours.to_dict()) == ours
    video = {k: x for k, x in ours.to_dict().items() if k not in VideoConfig.OFFICIAL_ONLY_FIELDS}
    back = transformers.Sam2VideoConfig(**{k: x for k, x in video.items() if k != "model_type"}).to_dict()
    expected = hf.to_dict()
    for key in set(dataclasses.asdict(ours.video_config)) - set(VideoConfig.OFFICIAL_ONLY_FIELDS):
        if key == "memory_attention_rope_theta":
            assert back["rope_parameters"] == expected["rope_parameters"]
            continue
        assert back[key] == expected[key], key


def test_video_config_errors_and_old_names():
    data = get_config("tiny").to_dict()
    with pytest.raises(ValueError, match="unknown config keys"):
        Sam2Config.from_dict({**data, "bogus_video_field": 1})
    with pytest.raises(ValueError, match="only axial RoPE"):
        Sam2Config.from_dict({**data, "rope_parameters": {"rope_type": "default", "rope_theta": 1.0}})
    old = {k: x for k, x in data.items() if k != "rope_parameters"}
    old["memory_attention_rope_theta"] = 5000.0  # older transformers config.json files
    assert Sam2Config.from_dict(old).video_config.memory_attention_rope_theta == 5000.0
    with pytest.raises(ValueError, match="total_stride"):
        VideoConfig(mask_downsampler_total_stride=12)
    image_only = {k: data[k] for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
    assert Sam2Config.from_dict(image_only) == get_config("tiny")  # an image config.json: sam2.1 video defaults


def test_registry_and_errors():
    assert get_config("facebook/sam2.1-hiera-base-plus") is MODEL_SIZES["base_plus"]
    sam2, sam2_1 = get_config("facebook/sam2-hiera-large"), get_config("sam2.1_hiera_large")
    assert dataclasses.replace(sam2, video_config=sam2_1.video_config) == sam2_1  # the image part is shared
    assert sam2.video_config == VIDEO_RELEASES["sam2"] != sam2_1.video_config
    assert get_config("sam2_hiera_small") is get_config("facebook/sam2-hiera-small")
    assert len(CHECKPOINTS) == 16
    with pytest.raises(KeyError, match="unknown SAM 2 checkpoint"):
        get_config("facebook/sam3")
    with pytest.raises(ValueError, match="unknown config keys"):
        Sam2Config.from_dict({**get_config("tiny").to_dict(), "mask_decoder_config": {"bogus": 1}})
    with pytest.raises(ValueError, match="not a SAM 2 config"):
        Sam2Config.from_dict({"model_type": "bert"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_config("tiny").vision_config.fpn_hidden_size = 3  # frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_config("tiny").video_config.num_maskmem = 3


def test_at_image_size_moves_every_size_and_no_param_shape():
    import jax
    import jax.numpy as jnp

    from sam2_jax import Sam2Model

    full = get_config("facebook/sam2.1-hiera-tiny")
    assert full.at_image_size(1024) is full
    small = full.at_image_size(512)
    assert small.prompt_encoder_config.image_size == small.video_config.image_size == 512
    assert small.vision_config.backbone_config.image_size == (512, 512)
    assert small.vision_config.backbone_feature_sizes == ((128, 128), (64, 64), (32, 32))
    assert small.video_config.memory_attention_rope_feat_sizes == (32, 32)
    small.check_video()  # the video model accepts it
    assert small.at_image_size(1024) == full

    def shapes(cfg):
        size = cfg.prompt_encoder_config.image_size
        x = jnp.zeros((1, size, size, 3))
        tree = jax.eval_shape(lambda: Sam2Model(cfg).init(jax.random.PRNGKey(0), x, method="get_image_embeddings"))
        return jax.tree_util.tree_map(lambda a: a.shape, tree)

    assert shapes(small) == shapes(full.at_image_size(256))  # the params of one checkpoint fit any size
    for bad in (100, 0, -16):
        with pytest.raises(ValueError, match="multiple of 16"):
            full.at_image_size(bad)
