"""The memory attention against transformers' ``Sam2VideoModel.memory_attention`` (small config, every parameter
randomised) and the official ``MemoryAttention`` of the sam2.1 tiny model (converted through the key table):
several memory frames plus object-pointer tokens (RoPE repeated per frame, pointers excluded), and a fixed-size
memory bank whose empty slots are masked out."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from conftest import assert_rel_close

from sam2_jax.checkpoints.key_mapping import convert_state_dict
from sam2_jax.modeling.sam2_video_model import Sam2VideoModel


class VideoReference:
    """A randomised transformers ``Sam2VideoModel`` (small config), its converted params and our model."""

    def __init__(self, seed: int = 3):
        from reference import build_transformers_model, state_dict_numpy, tiny_video_test_config

        self.config = tiny_video_test_config()
        self.torch_model = build_transformers_model(self.config, seed=seed, video=True)
        self.state = state_dict_numpy(self.torch_model)
        self.params = convert_state_dict(self.state, self.config)


@pytest.fixture(scope="module")
def video_ref():
    return VideoReference()


def _attend(config, implementation="reference"):
    model = Sam2VideoModel(config, implementation=implementation)

    @functools.partial(jax.jit, static_argnames="num_pointers")
    def run(params, feats, pos, memory, memory_pos, num_pointers=0, mask=None):
        method = Sam2VideoModel.attend_to_memory
        return model.apply({"params": params}, feats, pos, memory, memory_pos, num_pointers, mask, method=method)

    return run


def _inputs(rng, batch, grid, channels, frames, pointers, mem=64):
    feats = rng.standard_normal((batch, grid, grid, channels)).astype(np.float32)
    pos = rng.standard_normal((batch, grid, grid, channels)).astype(np.float32)
    n = frames * grid * grid + pointers
    memory = rng.standard_normal((batch, n, mem)).astype(np.float32)
    memory_pos = rng.standard_normal((batch, n, mem)).astype(np.float32)
    return feats, pos, memory, memory_pos


def _seq_first(x):  # (B, h, w, C) or (B, T, C) -> (T, B, C) torch
    import torch

    return torch.from_numpy(x.reshape(x.shape[0], -1, x.shape[-1])).transpose(0, 1).contiguous()


def _transformers(module, feats, pos, memory, memory_pos, pointers):
    import torch

    with torch.no_grad():
        out = module(
            current_vision_features=_seq_first(feats),
            memory=_seq_first(memory),
            current_vision_position_embeddings=_seq_first(pos),
            memory_posision_embeddings=_seq_first(memory_pos),
            num_object_pointer_tokens=pointers,
        )
    return out.reshape(feats.shape).numpy()  # (1, B, HW, C) batch-first inside


@pytest.mark.parametrize("implementation", ["reference", "fast"])
@pytest.mark.parametrize("frames,pointers", [(1, 0), (3, 16), (7, 64)])
def test_matches_transformers(video_ref, frames, pointers, implementation):
    rng = np.random.default_rng(frames * 100 + pointers)
    c = video_ref.config
    grid, width = c.prompt_encoder_config.image_embedding_size, c.vision_config.fpn_hidden_size
    inputs = _inputs(rng, 2, grid, width, frames, pointers)
    ours = _attend(c, implementation)(video_ref.params, *inputs, num_pointers=pointers)
    ref = _transformers(video_ref.torch_model.memory_attention, *inputs, pointers)
    assert_rel_close(ours, ref, 1e-5, f"memory attention vs transformers, {frames} frames + {pointers} pointer tokens")


def test_masked_bank_equals_unpadded_call(video_ref):
    """A fixed-size bank (4 frame slots, 16 pointer slots) with empty slots masked gives each object the answer of
    the call with only its own memories, which is transformers' answer; an all-True mask changes nothing."""
    rng = np.random.default_rng(5)
    c = video_ref.config
    grid, width, hw = c.prompt_encoder_config.image_embedding_size, c.vision_config.fpn_hidden_size, 16 * 16
    slots, pointer_slots = 4, 16
    feats, pos, memory, memory_pos = _inputs(rng, 2, grid, width, slots, pointer_slots)
    valid_frames = [[0, 2], [1, 2, 3]]  # object 0: two memory frames, object 1: three
    valid_pointers = [8, 12]  # pointer tokens in use (the first ones)
    mask = np.zeros(memory.shape[:2], bool)
    for b in range(2):
        for f in valid_frames[b]:
            mask[b, f * hw : (f + 1) * hw] = True
        mask[b, slots * hw : slots * hw + valid_pointers[b]] = True
    run = _attend(c)
    padded = np.asarray(run(video_ref.params, feats, pos, memory, memory_pos, num_pointers=pointer_slots, mask=mask))
    for b in range(2):
        keep = mask[b]
        unpadded = run(
            video_ref.params, feats[b : b + 1], pos[b : b + 1], memory[b : b + 1, keep], memory_pos[b : b + 1, keep],
            num_pointers=valid_pointers[b],
        )  # fmt: skip
        assert_rel_close(padded[b : b + 1], unpadded, 1e-6, f"object {b}: masked bank vs unpadded call")
        ref = _transformers(
            video_ref.torch_model.memory_attention, feats[b : b + 1], pos[b : b + 1], memory[b : b + 1, keep],
            memory_pos[b : b + 1, keep], valid_pointers[b],
        )  # fmt: skip
        assert_rel_close(padded[b : b + 1], ref, 1e-5, f"object {b}: masked bank vs transformers unpadded")
    unmasked = run(video_ref.params, feats, pos, memory, memory_pos, num_pointers=pointer_slots)
    all_true = run(
        video_ref.params, feats, pos, memory, memory_pos, num_pointers=pointer_slots, mask=np.ones_like(mask)
    )
    np.testing.assert_array_equal(np.asarray(all_true), np.asarray(unmasked))


def test_matches_official_tiny(official_tiny):
    """The official sam2.1 tiny memory attention (64x64 grid, 256 wide, 4 layers), its .pt converted through the
    key table: two memory frames and 4 object pointers (16 tokens), batch 1, the CPU default implementation."""
    import torch

    import sam2_jax

    model_pt, path, _ = official_tiny
    state = {k: v.numpy() for k, v in torch.load(path, weights_only=True)["model"].items()}
    config = sam2_jax.get_config("tiny")
    params = convert_state_dict(state, config, "official")
    rng = np.random.default_rng(9)
    feats, pos, memory, memory_pos = _inputs(rng, 1, 64, 256, 2, 16)
    ours = _attend(config, "auto")(params, feats, pos, memory, memory_pos, num_pointers=16)
    with torch.no_grad():
        ref = model_pt.memory_attention(
            curr=_seq_first(feats),
            memory=_seq_first(memory),
            curr_pos=_seq_first(pos),
            memory_pos=_seq_first(memory_pos),
            num_obj_ptr_tokens=16,
        )
    ref = ref.transpose(0, 1).reshape(feats.shape).numpy()
    assert_rel_close(ours, ref, 1e-5, "memory attention vs official tiny, 2 frames + 16 pointer tokens")


def test_bad_inputs(video_ref):
    rng = np.random.default_rng(0)
    feats, pos, memory, memory_pos = _inputs(rng, 1, 16, 32, 1, 4)
    run = _attend(video_ref.config)
    with pytest.raises(ValueError, match="not whole frames"):
        run(video_ref.params, feats, pos, memory, memory_pos, num_pointers=3)
    with pytest.raises(ValueError, match="memory_mask must be"):
        run(video_ref.params, feats, pos, memory, memory_pos, num_pointers=4, mask=np.ones((1, 7), bool))
