"""Optional extras: a command that needs a package of an extra (``serve``: gradio, onnx, onnxruntime; ``ray``;
``synth``; ``kaggle``: nbclient, ipykernel) says which pip install brings it, instead of an ImportError
traceback."""

from __future__ import annotations

import importlib

from comp.errors import MissingExtra

# the extra (setup.py extras_require) that brings each optional module
EXTRA = {"gradio": "serve", "gradio_client": "serve", "onnx": "serve", "onnxruntime": "serve", "ray": "ray",
         "optuna": "ray", "diffusers": "synth", "nbclient": "kaggle", "nbformat": "kaggle", "ipykernel": "kaggle"}


def require(*modules: str) -> None:
    """Import ``modules`` or raise MissingExtra naming the extra (and the pip install) that brings them."""
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        extras = sorted({EXTRA.get(m.split(".")[0], "serve") for m in missing})
        names = ",".join(extras)
        raise MissingExtra(
            f"{', '.join(missing)} not installed; this needs the {' and '.join(repr(e) for e in extras)} "
            f"extra{'s' if len(extras) > 1 else ''}: "
            f"pip install \"comp[{names}]\" (in a checkout: pip install -e \".[{names}]\"; or: pip install "
            f"{' '.join(m.split('.')[0].replace('_', '-') for m in missing)})"
        )
