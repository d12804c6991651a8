"""Checkpoints: reading SAM 2 weights from any source and converting them into the Flax param tree.

``key_mapping`` (the tables of source keys -> Flax paths per layout, applied once), ``validation`` (the param
tree against the model's shapes), ``readers`` (safetensors, original ``.pt``, ``config.json``), ``hub`` (repo ids
through the huggingface_hub cache), ``official_yaml`` (an official model yaml -> ``Sam2Config``: trunk, input
size, video options), ``converted`` (the converted directory), ``loading`` (``load``,
``load_params``: any source to params), ``export`` (params back to transformers' layout or an original
``.pt``, the inverse of the same tables). Every error about a checkpoint's contents is a ``CheckpointError``.
"""

from .converted import save_converted
from .errors import CheckpointError, HubUnavailableError
from .export import export, to_official_state_dict, to_transformers_state_dict
from .key_mapping import convert_state_dict
from .loading import load, load_params

__all__ = [
    "CheckpointError",
    "HubUnavailableError",
    "convert_state_dict",
    "export",
    "load",
    "load_params",
    "save_converted",
    "to_official_state_dict",
    "to_transformers_state_dict",
]
