"""Checkpoints: the key-mapping table per source layout, reading (safetensors, original ``.pt``, the Hub),
conversion into the Flax param tree and writing converted directories."""
