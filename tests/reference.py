"""Randomised reference models for parity tests (torch and transformers are test-time dependencies only)."""

from __future__ import annotations

import math

import numpy as np

from sam2_jax.config import Sam2Config


def tiny_test_config() -> Sam2Config:
    """A small but complete SAM 2 (4 stages, windowed + global attention, padding, q-pooling) at 256 px."""
    from sam2_jax.config import HieraConfig, MaskDecoderConfig, PromptEncoderConfig, VisionConfig

    backbone = HieraConfig(
        hidden_size=16,
        image_size=(256, 256),
        embed_dim_per_stage=(16, 32, 64, 128),
        num_attention_heads_per_stage=(1, 2, 4, 8),
        blocks_per_stage=(1, 2, 3, 2),
        window_size_per_stage=(8, 4, 6, 4),  # 6 on a 16x16 grid pads windows; 8 -> 4 on 64x64 pools
        global_attention_blocks=(4,),
        window_positional_embedding_background_size=(5, 5),
    )
    vision = VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=(128, 64, 32, 16),
        backbone_feature_sizes=((64, 64), (32, 32), (16, 16)),
        fpn_hidden_size=32,
    )
    return Sam2Config(
        vision_config=vision,
        prompt_encoder_config=PromptEncoderConfig(hidden_size=32, image_size=256, patch_size=16),
        mask_decoder_config=MaskDecoderConfig(
            hidden_size=32, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32
        ),
    )


def tiny_video_test_config() -> Sam2Config:
    """``tiny_test_config`` with a video part of the same width: 32-wide memory attention (4 layers, RoPE on the
    16x16 grid), 32-wide memory encoder with transformers' fixed 64-channel memories."""
    import dataclasses

    from sam2_jax.config import VideoConfig

    video = VideoConfig(
        image_size=256,
        memory_attention_hidden_size=32,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=(16, 16),
        memory_encoder_hidden_size=32,
        mask_downsampler_embed_dim=32,
        memory_fuser_embed_dim=32,
        memory_fuser_intermediate_dim=64,
    )
    return dataclasses.replace(tiny_test_config(), video_config=video)


def to_transformers_config(config: Sam2Config, video: bool = False):
    """transformers' ``Sam2Config``, or with ``video`` its ``Sam2VideoConfig`` with every video field."""
    import transformers

    d = config.to_dict()
    kwargs = dict(
        vision_config=d["vision_config"],
        prompt_encoder_config=d["prompt_encoder_config"],
        mask_decoder_config=d["mask_decoder_config"],
    )
    if video:
        from sam2_jax.config import VideoConfig

        # without the official-only options, which transformers hard-codes
        v = {k: x for k, x in config.video_config.to_dict().items() if k not in VideoConfig.OFFICIAL_ONLY_FIELDS}
        return transformers.Sam2VideoConfig(**kwargs, **v)
    return transformers.Sam2Config(**kwargs)


def randomize_(module, seed: int = 0) -> None:
    """Overwrite every parameter and buffer with random values of a sensible scale, in place.

    LayerNorm scales land around 1, biases around 0 with spread, matrices at 1/sqrt(fan_in), and the
    zero-initialised tensors (positional embeddings, ``no_memory_embedding``, tokens, the video model's memory
    encodings and pointers) and the memory fuser's layer scales (``scale`` / official ``gamma``, 1e-6 at init) get
    unit-scale noise.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensors = dict(module.named_parameters())
        # buffers saved with the weights; the non-persistent ones are derived constants (the memory attention's
        # RoPE frequencies) that no checkpoint carries, so they keep their values
        persistent = set(module.state_dict())
        tensors.update({n: b for n, b in module.named_buffers() if n in persistent})
        for name, t in sorted(tensors.items()):
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=gen, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight" and t.dim() == 1:  # every 1-D weight of SAM 2 is a LayerNorm scale
                value = 1.0 + 0.2 * r
            elif leaf == "bias":
                value = 0.2 * r
            elif t.dim() >= 2 and leaf == "weight":
                fan_in = math.prod(t.shape[1:]) if "upscale_conv" not in name else t.shape[0]
                value = r / math.sqrt(fan_in)
            else:  # embeddings, positional tables, tokens, no_memory_embedding, Fourier matrix
                value = r
            t.copy_(value.to(t.dtype))


def build_transformers_model(config: Sam2Config, seed: int = 0, video: bool = False):
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = transformers.Sam2VideoModel if video else transformers.Sam2Model
    model = cls(to_transformers_config(config, video=video)).eval()
    randomize_(model, seed)
    return model


def state_dict_numpy(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


OFFICIAL_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


def ensure_official_hydra() -> None:
    """The official package initialises Hydra's global config module on import; make sure it still is."""
    import sam2  # noqa: F401  (initialises on first import)
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        initialize_config_module("sam2", version_base="1.2")


def build_official_model(size: str, seed: int = 0):
    """The official facebookresearch SAM2Base (``build_sam2`` without a checkpoint), randomised in place."""
    from sam2.build_sam import build_sam2

    ensure_official_hydra()
    model = build_sam2(OFFICIAL_CONFIGS[size], ckpt_path=None, device="cpu", mode="eval")
    randomize_(model, seed)
    return model


def tracking_test_config() -> Sam2Config:
    """A small video model that transformers' ``Sam2VideoModel`` can track with: ``tiny_test_config``'s backbone at
    256 px with a 128-wide neck, decoder and memory attention, so that the 64-channel memories split each 128-wide
    object pointer into 2 tokens (as 256 into 4 at full size)."""
    import dataclasses

    from sam2_jax.config import VideoConfig

    base = tiny_test_config()
    width = 128
    vision = dataclasses.replace(base.vision_config, fpn_hidden_size=width)
    video = VideoConfig(
        image_size=256,
        memory_attention_hidden_size=width,
        memory_attention_feed_forward_hidden_size=256,
        memory_attention_rope_feat_sizes=(16, 16),
        memory_encoder_hidden_size=width,
        mask_downsampler_embed_dim=width,
        memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=256,
    )
    return dataclasses.replace(
        base,
        vision_config=vision,
        prompt_encoder_config=dataclasses.replace(base.prompt_encoder_config, hidden_size=width),
        mask_decoder_config=dataclasses.replace(
            base.mask_decoder_config, hidden_size=width, mlp_dim=256, iou_head_hidden_dim=width
        ),
        video_config=video,
    )


def official_config_at(image_size: int, size: str = "tiny") -> Sam2Config:
    """Our config of the official ``size`` architecture run at ``image_size`` px (``official_video_predictor``)."""
    from sam2_jax import get_config

    return get_config(f"facebook/sam2.1-hiera-{size.replace('_', '-')}").at_image_size(image_size)


def official_video_predictor(
    image_size: int = 1024, seed: int = 11, score_shift: float = 1.0, overrides: tuple[str, ...] = ()
):
    """The official ``SAM2VideoPredictor`` (``build_sam2_video_predictor``, tiny, ``apply_postprocessing=True``)
    at ``image_size`` px (plus the hydra ``overrides``), randomised, with what it needs to run on a CPU:

    - hole filling off (``fill_hole_area=0``: the official one needs CUDA; ours is tested on its own);
    - its memory attention casts the bfloat16 memories back to float32 at its input (it expects CUDA autocast),
      which keeps the bfloat16 rounding of the stored memories;
    - ``score_shift`` added to the object-score head's output bias: randomised, the head says "absent" (about
      -1 +- 0.02) for every input, which would make every mask -1024; shifted by 1, objects come and go.
    """
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    ensure_official_hydra()
    torch.manual_seed(0)
    overrides = list(overrides) + ([] if image_size == 1024 else [f"++model.image_size={image_size}"])
    model = build_sam2_video_predictor(OFFICIAL_CONFIGS["tiny"], None, device="cpu", hydra_overrides_extra=overrides)
    randomize_(model, seed)
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += score_shift
    model.fill_hole_area = 0
    attend = model.memory_attention.forward

    def float32_memory(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return attend(curr, memory.float(), curr_pos, memory_pos.float(), num_obj_ptr_tokens)

    model.memory_attention.forward = float32_memory
    return model


def random_params(config: Sam2Config, seed: int = 0, score_shift: float = 0.0, video: bool = True) -> dict:
    """NumPy params of ``config``'s video model, or with ``video=False`` its image model (every tensor random, at a
    sensible scale: norm scales 1 +- 0.2, biases ~ 0.2 N(0, 1), kernels ~ N(0, 1 / fan_in), other tensors N(0, 1)),
    drawn in a second where compiling ``init_params`` takes most of a minute on two cores; for tests that need a
    working model, not a reference.
    ``score_shift`` is added to the object-score head's output bias (positive: objects judged present more often)."""
    import jax

    from sam2_jax.modeling import sam2_model, sam2_video_model

    param_shapes = (sam2_video_model if video else sam2_model).param_shapes
    rng = np.random.default_rng(seed)

    def leaf(path, shape):
        name, r = path[-1].key, rng.standard_normal(shape.shape).astype(np.float32)
        if name == "scale" and len(shape.shape) == 1:
            return 1 + 0.2 * r
        if name == "bias":
            return 0.2 * r
        return r / np.sqrt(np.prod(shape.shape[:-1])) if name == "kernel" else r

    params = jax.tree_util.tree_map_with_path(leaf, param_shapes(config))
    params["mask_decoder"]["pred_obj_score_head"]["proj_out"]["bias"] += score_shift
    return params


def write_bedroom_frames(directory, n: int, width: int, height: int):
    """The first ``n`` bundled bedroom frames resized to ``width`` x ``height`` as ``directory/<i>.jpg`` (a frames
    directory ``VideoFrames`` and ``sam2-jax annotate`` read); returns the directory."""
    from pathlib import Path

    from PIL import Image

    bedroom = Path(__file__).parent / "data" / "videos" / "bedroom"
    for i in range(n):
        frame = Image.open(bedroom / f"{i:05d}.jpg").convert("RGB").resize((width, height))
        frame.save(Path(directory) / f"{i}.jpg", quality=95)
    return directory


def save_tracking_model(path):
    """``tracking_test_config`` with random params (``score_shift=5``: objects found) as a converted directory."""
    from sam2_jax import save_converted

    config = tracking_test_config()
    return save_converted(path, config, random_params(config, score_shift=5.0))
