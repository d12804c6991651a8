"""Shared fixtures: randomised transformers reference models, built once per session, and their conversions."""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# No global matmul precision here: the library sets it (Sam2Model(precision="highest")), so tests run as users do.


def rel_l2(actual, expected) -> float:
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != reference {e.shape}"
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30))


def assert_rel_close(actual, expected, tol: float = 1e-4, what: str = ""):
    err = rel_l2(actual, expected)
    print(f"[parity] {what}: relative L2 {err:.2e}")  # shown with -s; the closing notes quote these
    assert err <= tol, f"{what}: relative L2 error {err:.3g} > {tol:g}"
    return err


class Reference:
    """A randomised transformers model, its converted Flax params, and cached image embeddings."""

    def __init__(self, config, seed: int = 0, video: bool = False):
        import torch
        from reference import build_transformers_model, state_dict_numpy

        from sam2_jax import Sam2Model
        from sam2_jax.checkpoints.key_mapping import convert_state_dict

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        self.config = config
        self.torch_model = build_transformers_model(config, seed=seed, video=video)
        self.state = state_dict_numpy(self.torch_model)
        self.params = convert_state_dict(self.state, config)
        self.model = Sam2Model(config)
        self.size = config.prompt_encoder_config.image_size

        def apply(params, multimask_output=True, **kwargs):
            return self.model.apply({"params": params}, multimask_output=multimask_output, **kwargs)

        self.apply = jax.jit(apply, static_argnames=("multimask_output",))
        self.embed = jax.jit(
            lambda p, x: self.model.apply({"params": p}, x, method=type(self.model).get_image_embeddings)
        )

    def torch_forward(self, **kwargs):
        import torch

        def conv(v):
            if isinstance(v, np.ndarray):
                t = torch.from_numpy(v)
                return t.long() if v.dtype.kind == "i" else t
            return v

        if "pixel_values" in kwargs:
            kwargs["pixel_values"] = torch.from_numpy(kwargs["pixel_values"]).permute(0, 3, 1, 2)
        with torch.no_grad():
            return self.torch_model(**{k: conv(v) for k, v in kwargs.items()})


@pytest.fixture(scope="session")
def small_ref():
    """A small 256-px SAM 2 that still exercises every code path (windows, padding, pooling, global blocks)."""
    from reference import tiny_test_config

    return Reference(tiny_test_config(), seed=1)


@pytest.fixture(scope="session")
def tiny_ref():
    """The real sam2.1-hiera-tiny architecture at 1024 px, randomised."""
    from sam2_jax import get_config

    return Reference(get_config("facebook/sam2.1-hiera-tiny"), seed=2)


@pytest.fixture(scope="session")
def official_tiny(tmp_path_factory):
    """The official ``sam2`` package's tiny model, randomised, and its state dict saved as an original ``.pt``.

    Returns (torch model, path of the .pt, a random 1024x1024 uint8 image).
    """
    import torch  # the official sam2 package is part of the dev install (see README); no skipping
    from reference import build_official_model

    torch.manual_seed(0)
    model = build_official_model("tiny", seed=11)
    path = tmp_path_factory.mktemp("official") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    return model, path, image


@pytest.fixture(scope="session")
def official_converted(official_tiny, tmp_path_factory):
    """The official ``.pt`` converted by ``sam2-jax convert`` into a directory that ``sam2_jax.load`` reads."""
    from sam2_jax.cli import main

    out = tmp_path_factory.mktemp("conv") / "tiny"
    assert main(["convert", str(official_tiny[1]), str(out)]) == 0  # size inferred from the tensors
    return out


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TRUCK_JPG = os.path.join(EXAMPLES, "truck.jpg")  # 1800 x 1200
GROCERIES_JPG = os.path.join(EXAMPLES, "groceries.jpg")  # 800 x 534
