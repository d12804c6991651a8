"""The networks: Hiera trunk, vision encoder with its FPN neck, prompt encoder, two-way transformer, mask decoder
and the image model that joins them (Flax Linen, channels-last, params as a plain pytree)."""
