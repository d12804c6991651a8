"""The batch both hosts of the two-host test segment (and the in-process reference too)."""

import numpy as np


def inputs(config):
    s = config.prompt_encoder_config.image_size
    rng = np.random.default_rng(42)
    return dict(
        pixel_values=rng.standard_normal((3, s, s, 3)).astype(np.float32),
        input_points=rng.uniform(0, s, (3, 2, 2, 2)).astype(np.float32),
        input_labels=np.tile(np.array([[1, 0], [1, 1]]), (3, 1, 1)),
    )
