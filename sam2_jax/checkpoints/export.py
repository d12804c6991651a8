"""Exporting (fine-tuned) params back to PyTorch: the inverse of ``key_mapping``, derived from its tables.

In: the nested Flax param dict of ``Sam2Model`` or ``Sam2VideoModel`` (NumPy or JAX arrays) and its ``Sam2Config``.
Out: ``to_transformers_state_dict`` -> ``{transformers key: np.ndarray}`` in torch layout (``Sam2Model`` for an
image tree, ``Sam2VideoModel`` for a video tree); ``to_official_state_dict`` -> the facebookresearch ``.pt`` state
dict; ``export`` -> on disk, either a transformers directory (``config.json`` + ``model.safetensors``, loadable by
``from_pretrained``) or an original ``.pt`` (``{"model": state_dict}``, torch float32; loadable by the official
``build_sam2`` / ``build_sam2_video_predictor``, hence video trees only).

No key name is written here: every Flax leaf finds its transformers key as the candidate name whose *forward*
rule (``TRANSFORMERS_RULES``) maps back onto that leaf, and the layout transform is undone by the inverse of that
rule's axis permutation. Official names come from running ``OFFICIAL_RENAMES`` backwards (each (pattern, template)
pair read the other way round); of the names that rename forward to the key, the one whose chain of applied rules
is lexicographically smallest wins (specific rules precede generic ones in the table, so ``norm1`` beats
``layer_norm1``). ``OFFICIAL_MERGES`` are split, ``OFFICIAL_COPIES`` collapsed (the copies must agree). Every
result is converted forward again and must reproduce the params exactly, or a ``CheckpointError`` is raised.
Writes are atomic and never replace an existing output without ``force``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from flax.traverse_util import flatten_dict

from ..config import Sam2Config
from ..utils.atomic import atomic_directory, atomic_write
from .errors import CheckpointError
from .key_mapping import (
    OFFICIAL_COPIES,
    OFFICIAL_MERGES,
    OFFICIAL_RENAMES,
    TRANSFORMERS_RULES,
    convert_state_dict,
    flax_path,
    full_pattern,
)
from .readers import CONFIG_FILE, TRANSFORMERS_WEIGHTS
from .validation import check_params

__all__ = ["FORMATS", "export", "to_official_state_dict", "to_transformers_state_dict"]

FORMATS = ("transformers", "pt")
_RENAMED_LEAVES = ("kernel", "scale", "embedding")  # Flax names of a torch ``weight``


# ---- transformers ------------------------------------------------------------------------------------------------
def _flat(params: Mapping) -> dict[tuple[str, ...], np.ndarray]:
    return {k: np.asarray(v, np.float32) for k, v in flatten_dict(dict(params)).items()}


def _inverse(transform: Callable[[np.ndarray], np.ndarray], ndim: int) -> Callable[[np.ndarray], np.ndarray]:
    """The inverse of a layout transform that permutes axes, read off the transform itself on a probe array."""
    probe = np.arange(np.prod(range(2, ndim + 2)), dtype=np.int64).reshape(tuple(range(2, ndim + 2)))
    out = transform(probe)
    perm = tuple(probe.shape.index(n) for n in out.shape)
    if not np.array_equal(out, probe.transpose(perm)):
        raise CheckpointError(f"layout transform {transform.__name__} is not an axis permutation")
    return lambda w: w.transpose(np.argsort(perm))


def _dotted_candidates(path: tuple[str, ...]) -> list[str]:
    """Every source name whose ``flax_path`` could be ``path``, preferred first: ``blocks_3`` as ``blocks.3`` (a
    torch ModuleList) before the literal name; the leaf as ``weight`` where Flax renames it, or as itself (biases,
    parameters, layer scales)."""
    names = [""]
    for part in path[:-1]:
        m = re.fullmatch(r"(.+)_(\d+)", part)
        options = [f"{m.group(1)}.{m.group(2)}", part] if m else [part]
        names = [f"{n}.{o}" if n else o for n in names for o in options]
    leaves = [path[-1], "weight"] if path[-1] in _RENAMED_LEAVES else [path[-1]]
    return [f"{n}.{leaf}" if n else leaf for n in names for leaf in leaves]


def _transformers_key(path: tuple[str, ...]) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The first candidate key that converts to ``path``, and the layout transform the converter applies to it."""
    for key in _dotted_candidates(path):
        for pattern, template, transform in TRANSFORMERS_RULES:
            if full_pattern(pattern).match(key):  # the first matching rule is the one the converter applies
                if flax_path(full_pattern(pattern).sub(template, key)) == path:
                    return key, transform
                break
    raise CheckpointError(f"{'/'.join(path)}: no transformers key converts to this leaf")


def to_transformers_state_dict(params: Mapping, config: Sam2Config) -> dict[str, np.ndarray]:
    """The transformers state dict (torch layouts, float32) whose conversion gives back ``params`` exactly."""
    flat, state = _flat(params), {}
    check_params(flat, config)  # every leaf present and of the model's shape, or one error listing all
    for path, value in flat.items():
        key, transform = _transformers_key(path)
        back = value if key.endswith(".bias") else _inverse(transform, value.ndim)(value)
        state[key] = np.ascontiguousarray(back)
    _check_round_trip(state, flat, config, "transformers")
    return state


def _check_round_trip(state: Mapping, flat: Mapping, config: Sam2Config, layout: str) -> None:
    """Convert ``state`` forward again: it must give back every leaf of ``flat`` exactly (NaNs included)."""
    again = flatten_dict(convert_state_dict(state, config, layout))
    wrong = sorted(
        "/".join(k)
        for k in flat.keys() | again.keys()
        if k not in again or k not in flat or not np.array_equal(again[k], flat[k], equal_nan=True)
    )
    if wrong:
        raise CheckpointError(f"the exported {layout} state dict does not convert back to the params: {wrong[:10]}")


# ---- official (.pt) ------------------------------------------------------------------------------------------------
def _parts(pattern: str) -> tuple[list[str | int], list[str]]:
    """A rename pattern as literal text and top-level capturing groups (their 0-based index into ``groups``)."""
    out, depth, start, literal, i = [], 0, 0, "", 0
    groups: list[str] = []
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if depth == 0:
                if pattern[i + 1] not in r".\()[]{}?*+|^$":
                    raise CheckpointError(f"cannot invert {pattern!r}: a regex class outside a group")
                literal += pattern[i + 1]
            i += 2
            continue
        if c == "(":
            if depth == 0:
                out.append(literal)
                literal, start = "", i
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                groups.append(pattern[start : i + 1])
                out.append(len(groups) - 1)
        elif depth == 0:
            if c in ".[]{}?*+|^$":
                raise CheckpointError(f"cannot invert {pattern!r}: a regex construct outside a group")
            literal += c
        i += 1
    out.append(literal)
    return [p for p in out if p != ""], groups


@functools.cache
def _inverse_rule(pattern: str, template: str) -> tuple[re.Pattern, str]:
    """(regex matching the template's output, template giving back the input) of one (pattern, template) rule."""
    parts, groups = _parts(pattern)
    regex, seen = "", set()
    for piece in re.split(r"(\\\d+)", template):
        if re.fullmatch(r"\\\d+", piece):
            n = int(piece[1:])
            regex += f"(?P=g{n})" if n in seen else f"(?P<g{n}>{groups[n - 1]})"
            seen.add(n)
        else:
            regex += re.escape(piece)
    back = "".join(rf"\g<g{p + 1}>" if isinstance(p, int) else p.replace("\\", "\\\\") for p in parts)
    return re.compile(rf"^{regex}$"), back


def _rename_chain(name: str) -> tuple[str, tuple[int, ...]]:
    """``official_to_transformers``' renaming of one key, and the indices of the rules that applied."""
    chain = []
    for i, (pattern, template) in enumerate(OFFICIAL_RENAMES):
        if full_pattern(pattern).match(name):
            name = full_pattern(pattern).sub(template, name)
            chain.append(i)
    return name, tuple(chain)


def official_key(key: str) -> str:
    """The official name of a transformers key: the rules run backwards give the candidates; of those renaming
    forward to ``key``, the one whose chain of applied rule indices is lexicographically smallest."""
    candidates = {key}
    for pattern, template in reversed(OFFICIAL_RENAMES):
        regex, back = _inverse_rule(pattern, template)
        earlier = {m.expand(back) for c in candidates if (m := regex.match(c))}
        candidates |= {c for c in earlier if full_pattern(pattern).match(c)}
    chains = {c: chain for c in candidates for name, chain in [_rename_chain(c)] if chain and name == key}
    if not chains:
        raise CheckpointError(f"no official key renames to {key}")
    return min(chains, key=lambda c: chains[c])


def to_official_state_dict(params: Mapping, config: Sam2Config) -> dict[str, np.ndarray]:
    """The facebookresearch state dict (float32 NumPy) whose conversion gives back ``params`` exactly."""
    flat = _flat(params)
    state = dict(to_transformers_state_dict(params, config))
    out: dict[str, np.ndarray] = {}
    for merged, sources in OFFICIAL_MERGES.items():
        if merged in state:
            for src, part in zip(sources, np.split(state.pop(merged), len(sources), axis=0), strict=True):
                out[src] = np.ascontiguousarray(part)
    for src, copies in OFFICIAL_COPIES.items():
        values = [state.pop(c) for c in copies if c in state]
        if values:
            if len(values) != len(copies) or any(not np.array_equal(v, values[0]) for v in values):
                raise CheckpointError(f"{', '.join(copies)} must be equal: the official model has one {src}")
            out[src] = values[0]
    for key, value in state.items():
        out[official_key(key)] = value
    _check_round_trip(out, flat, config, "official")
    return out


# ---- files ---------------------------------------------------------------------------------------------------------
def _transformers_config(config: Sam2Config, video: bool) -> dict:
    """config.json for ``Sam2Model`` (the three sub-configs) or ``Sam2VideoModel`` (and the video fields)."""
    data = config.to_dict()
    if not video:
        data = {k: data[k] for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
    data["model_type"] = "sam2_video" if video else "sam2"
    data["architectures"] = ["Sam2VideoModel" if video else "Sam2Model"]
    return data


def export(
    params: Mapping, config: Sam2Config, out: str | os.PathLike, format: str = "transformers", force: bool = False
) -> Path:
    """Write ``params`` as a transformers directory (``format="transformers"``) or an original ``.pt`` file
    (``"pt"``: video trees only, since the official models always hold the memory modules). Returns ``out``."""
    from ..modeling.sam2_video_model import has_video_params

    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r} (known: {', '.join(FORMATS)})")
    out, video = Path(out), has_video_params(params)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force (force=True) to overwrite it")
    if format == "transformers":
        from safetensors.numpy import save_file

        state = to_transformers_state_dict(params, config)
        with atomic_directory(out, force) as tmp:
            save_file(state, str(tmp / TRANSFORMERS_WEIGHTS), metadata={"format": "pt"})
            text = json.dumps(_transformers_config(config, video), indent=2, sort_keys=True)
            (tmp / CONFIG_FILE).write_text(text + "\n")
        return out
    if not video:
        raise CheckpointError(
            "an original .pt needs the video model's params (build_sam2 builds the memory modules too); "
            "this tree is the image model's: export it with format='transformers'"
        )
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise CheckpointError("writing a .pt needs torch: pip install 'sam2-jax[convert]'") from e
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
        for k, v in to_official_state_dict(params, config).items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda f: torch.save({"model": state}, f))
