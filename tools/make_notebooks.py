"""Writes the notebooks in notebooks/ from the cell sources below (outputs cleared). Run after editing a cell.

python tools/make_notebooks.py
"""

from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parents[1] / "notebooks"

SETUP = """import os
# Tests point SAM2_JAX_CHECKPOINT at a randomised local checkpoint; otherwise the official one comes from the Hub.
CHECKPOINT = os.environ.get("SAM2_JAX_CHECKPOINT", "facebook/sam2.1-hiera-tiny")
print("checkpoint:", CHECKPOINT)"""

NOTEBOOKS = {
    "checkpoint_conversion.ipynb": [
        (
            "md",
            "# Converting a SAM 2 checkpoint\n\nsam2-jax reads the Hub's transformers `model.safetensors` "
            "(image or video layout), the original facebookresearch `.pt`, or a converted directory. Conversion is a "
            "table of key patterns applied once and checked against the model's param shapes.",
        ),
        ("code", SETUP),
        (
            "code",
            """import tempfile, pathlib, subprocess, sys
out = pathlib.Path(tempfile.mkdtemp()) / "converted"
proc = subprocess.run([sys.executable, "-m", "convert", CHECKPOINT, str(out)], capture_output=True, text=True)
print(proc.stderr)
assert proc.returncode == 0
sorted(p.name for p in out.iterdir())""",
        ),
        ("md", "The converted directory loads without torch; `sam2_jax.load` also accepts the source directly."),
        (
            "code",
            """import jax, sam2_jax
from flax.traverse_util import flatten_dict
model, params = sam2_jax.load(out)
flat = flatten_dict(params, sep="/")
print(len(flat), "tensors,", sum(v.size for v in flat.values()) / 1e6, "M parameters")
for key in list(flat)[:5]:
    print(key, flat[key].shape)""",
        ),
        ("md", "A checkpoint that does not fit the model fails with one error naming every offending key:"),
        (
            "code",
            """from sam2_jax.checkpoint import CheckpointError
try:
    sam2_jax.load(out, config="large")
except CheckpointError as e:
    print(str(e)[:500])""",
        ),
    ],
}


def build(cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src))
    return nb


def main():
    HERE.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
