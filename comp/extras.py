"""Optional extras: a command that needs a package of an extra (``serve``: gradio, onnx, onnxruntime) says which
pip install brings it, instead of an ImportError traceback."""

from __future__ import annotations

import importlib

from comp.errors import MissingExtra


def require(*modules: str) -> None:
    """Import ``modules`` or raise ImportError saying which pip install brings them."""
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        raise MissingExtra(
            f"{', '.join(missing)} not installed; serving needs the 'serve' extra: "
            f"pip install -e \".[serve]\" (or: pip install {' '.join(m.replace('_', '-') for m in missing)})"
        )
