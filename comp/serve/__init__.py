"""Serving: show a trained experiment to people and ship it.

    comp.serve.ensemble   an experiment's fold ensemble (or a blend of experiments) loaded once, one image at a time
    comp.serve.app        the Gradio app (``comp app``): upload / webcam / paste, top-k, Grad-CAM, examples, info
    comp.serve.uploads    what the app accepts from a client: extensions, formats, pixel cap, data URLs
    comp.serve.onnx       ONNX export with normalisation in the graph (``comp export``), parity check, and the
                          onnxruntime engine of ``comp predict --engine onnxruntime``

gradio, gradio_client, onnx and onnxruntime are the ``serve`` extra: ``pip install -e ".[serve]"``.
"""

from __future__ import annotations

from comp.extras import require

__all__ = ["require"]
