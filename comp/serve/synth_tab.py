"""The app's "make an image" tab: pick a class, press "make", see images of it from the experiment's generators.

The generators are ``comp synth``'s (folds/synth/E/fold_k/generator.safetensors of each experiment served); the
images are made on the server in memory and sent to the browser as PNGs (Gradio's own temporary cache serves
them, outside the competition folder); nothing is written into the competition's folders.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_IMAGES = 16


@dataclass
class Generator:
    name: str  # "E fold k"
    path: Path
    classes: list[str]
    sample_steps: int
    guidance: float
    model: object = None
    spec: object = None

    def make(self, cls: str, n: int, seed: int) -> list[np.ndarray]:
        """``n`` uint8 RGB images of class ``cls``, image i from seed ``seed + i`` (loaded on first use)."""
        from comp.techniques.synth_models import load, sample

        if self.model is None:
            self.model, self.spec, _ = load(self.path)
        labels = np.full(n, self.classes.index(cls), np.int64)
        seeds = np.arange(seed, seed + n, dtype=np.int64)
        return list(sample(self.model, self.spec, labels, seeds, self.sample_steps, self.guidance))


def find_generators(ens) -> list[Generator]:
    """Every finished fold generator of the experiments ``ens`` serves (none: the tab says how to make them)."""
    from comp.techniques.synth import synth_dir

    out = []
    for m in ens.members:
        folder = synth_dir(m.cfg, m.exp)
        summary = folder / "summary.json"
        if not summary.exists():
            continue
        info = json.loads(summary.read_text(encoding="utf-8"))
        opts = info.get("options", {})
        for path in sorted(folder.glob("fold_*/generator.safetensors")):
            out.append(Generator(f"{m.exp} {path.parent.name.replace('_', ' ')}", path, list(info["classes"]),
                                 int(opts.get("sample_steps", 20)), float(opts.get("guidance", 1.0))))
    return out


def build_synth_tab(ens) -> None:
    """The tab, inside the caller's gr.Blocks."""
    import gradio as gr

    gens = find_generators(ens)
    if not gens:  # no tab: an app without generators looks as it did
        return
    lock = threading.Lock()
    with gr.Tab("make an image", elem_id="synth-tab"):
        gr.Markdown("Images of a class from a fold's generator (`comp synth`), made on the server in memory and "
                    "sent to this page; nothing is saved in the competition folder.")
        with gr.Row():
            cls = gr.Dropdown(gens[0].classes, value=gens[0].classes[0], label="class", elem_id="synth-class")
            which = gr.Dropdown([g.name for g in gens], value=gens[0].name, label="generator", elem_id="synth-gen")
            n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="images", elem_id="synth-n")
            seed = gr.Number(0, precision=0, label="seed", elem_id="synth-seed")
        button = gr.Button("make", variant="primary", elem_id="synth-make")
        gallery = gr.Gallery(label="generated (download with the gallery's button)", format="png", columns=8,
                             elem_id="synth-gallery", type="numpy")
        status = gr.Markdown("", elem_id="synth-status")

        def make(c, name, count, s):
            g = next(g for g in gens if g.name == name)
            if c not in g.classes:
                return None, f"**{c!r} is not a class of {g.name}**"
            count = int(min(max(int(count or 1), 1), MAX_IMAGES))
            with lock:  # one generation at a time: the CPU serves the classifier too
                images = g.make(c, count, int(s or 0))
            h, w = images[0].shape[:2]
            return images, f"{count} image(s) of **{c}** from {g.name}, {w}x{h} px, seeds {int(s or 0)}.."

        button.click(make, inputs=[cls, which, n, seed], outputs=[gallery, status], api_name="make",
                     concurrency_id="synth", concurrency_limit=1)
