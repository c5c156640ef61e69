"""Serving: show a trained experiment to people and ship it.

    comp.serve.ensemble   an experiment's fold ensemble (or a blend of experiments) loaded once, one image at a time
    comp.serve.app        the Gradio app (``comp app``): upload / webcam / paste, top-k, Grad-CAM, examples, info
    comp.serve.uploads    what the app accepts from a client: extensions, formats, pixel cap, data URLs
    comp.serve.onnx       ONNX export with normalisation in the graph (``comp export``), parity check, and the
                          onnxruntime engine of ``comp predict --engine onnxruntime``

gradio, gradio_client, onnx and onnxruntime are the ``serve`` extra: ``pip install -e ".[serve]"``.
"""

from __future__ import annotations

import importlib


def require(*modules: str) -> None:
    """Import ``modules`` or raise ImportError saying which pip install brings them."""
    missing = []
    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        raise ImportError(
            f"{', '.join(missing)} not installed; serving needs the 'serve' extra: "
            f"pip install -e \".[serve]\" (or: pip install {' '.join(m.replace('_', '-') for m in missing)})"
        )
