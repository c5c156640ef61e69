"""``comp app``: a Gradio page that shows what an experiment's ensemble thinks of an image and where it looks.

    >>> from comp.serve.app import build_app, launch
    >>> ens = Ensemble.load("comp.yaml", ["base"])
    >>> blocks = build_app(ens)                        # gr.Blocks: mount it, or
    >>> launch(blocks, host="127.0.0.1", port=7860)    # serve it (blocks until Ctrl-C)

Input: upload, webcam and clipboard paste (one Image component). Output: the top-k classes with probabilities
(a Label), the Grad-CAM of the top class from the fold model the blend weighs most, and a status line. The
upload reaches comp's own checks untouched (Gradio does not decode it; :mod:`comp.serve.uploads`: extension,
format, pixel cap from the header), so a corrupt file or a decompression bomb gets a one-line message in the
page, and the server carries on. Beyond loopback (or with a share link) the app needs a login (``auth``);
the queue is bounded, temporary files are deleted (``delete_cache``), errors reach clients without tracebacks.

Offline by construction: analytics off (``GRADIO_ANALYTICS_ENABLED=False``, set before gradio is imported),
system fonts (no font files at all), Gradio's own frontend served from its package, no share link unless
asked for.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import tempfile
import traceback
import types
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402

from comp.data.competition import DataError  # noqa: E402
from comp.data.images import ImageProblem  # noqa: E402
from comp.serve import require  # noqa: E402
from comp.serve.ensemble import Ensemble  # noqa: E402
from comp.serve.synth_tab import build_synth_tab  # noqa: E402
from comp.serve.uploads import (  # noqa: E402
    DATA_URL_FOLDER,
    DEFAULT_MAX_PIXELS,
    guard_pillow,
    read_upload,
    save_data_url,
)
from comp.tasks import task_of  # noqa: E402

TOP_K = 5
N_TEST_EXAMPLES = 8
N_MISTAKES = 8
API_NAME = "predict"  # gradio_client: client.predict(handle_file(path), api_name="/predict")
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
# Competition images are often small (28 px): show them filling their box, pixels kept sharp.
CSS = """
#input-image img, #gradcam img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Consolas", "monospace"]
QUEUE_SIZE = 16  # requests waiting for the model beyond this are refused ("queue is full")
CACHE_TTL = 3600  # seconds an upload or a Grad-CAM file is kept (delete_cache)
AUTH_ENV = "COMP_APP_AUTH"


def theme():
    """Gradio's default theme with system fonts: nothing to download, not even Gradio's bundled font files."""
    import gradio as gr

    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)


def _raw_preprocess(self, payload):
    """The uploaded file's path, not opened: comp's loader decides what a usable image is.

    Only a file inside the upload folder is handed on: Gradio checks that only for payloads that carry its
    ``meta`` marker, and an image payload without one could name any file on the server. A webcam/paste data
    URL is decoded (size-capped) into the upload folder under a name comp picks (the sha1 of its bytes and the
    extension of the format found in them, never the client's MIME type); Gradio deletes it with the app's
    other temporary files (``delete_cache``)."""
    import gradio as gr

    if payload is None:
        return None
    cache = os.path.realpath(self.GRADIO_CACHE)
    try:
        if payload.url and payload.url.startswith("data:"):
            path = save_data_url(payload.url, Path(cache) / DATA_URL_FOLDER)
            self.temp_files.add(str(path))
            return str(path)
        if not payload.path or os.path.commonpath([cache, os.path.realpath(payload.path)]) != cache:
            raise ImageProblem("not_allowed", f"{Path(payload.path or '').name or 'the file'} was not uploaded "
                                              "to this app")
    except ImageProblem as e:
        raise gr.Error(f"Can't use this image ({e.problem}): {e.detail}", print_exception=False) from None
    return payload.path


def _image_component():
    """gr.Image (upload, webcam, paste) that hands the handler the uploaded file's path without opening it.

    Gradio's own preprocessing opens the file with Pillow first, so a corrupt file or a bomb would fail inside
    Gradio with no useful message. Replaced on the instance: a gr.Image subclass would make Gradio write a
    .pyi stub beside this module at import time."""
    import gradio as gr

    img = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", height=320,
                   label="image (upload, webcam or paste)", elem_id="input-image")
    img.preprocess = types.MethodType(_raw_preprocess, img)
    return img


def classify(ens: Ensemble, path: str | None, top_k: int = TOP_K, max_pixels: int = DEFAULT_MAX_PIXELS
             ) -> tuple[dict | None, np.ndarray | None, str]:
    """({class: probability}, Grad-CAM overlay or None, status text) for one uploaded file, as the ensemble's
    decision answers it (the top ``top_k`` classes, or the labels over their thresholds: comp.serve.decisions).

    Unusable files (an extension or format comp does not read, over ``max_pixels`` by the header, corrupt) give
    (None, None, a message) instead of an exception.
    """
    if not path:
        return None, None, "Upload an image, take one with the webcam, or paste one."
    try:
        rgb, (w, h) = read_upload(path, min(max_pixels, ens.max_pixels), target=ens.input_side)
    except ImageProblem as e:
        name = Path(path).name
        return None, None, f"**Can't use this image** ({e.problem}): {e.detail.replace(str(path), name)}"
    return ens.decision.answer(ens, rgb, f"{Path(path).name}, {w}x{h}", top_k)


def guarded(fn):
    """``fn`` whose failures reach the client as comp's one-line message (gr.Error), never as traceback text or
    a server path: a user error (DataError) by its message with paths cut to file names, anything else by its
    type only; the traceback goes to the server's log."""
    import gradio as gr

    def call(*args):
        try:
            return fn(*args)
        except gr.Error:
            raise
        except DataError as e:
            raise gr.Error(scrub(str(e)), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - logged here, summarised there
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"the app failed on this request ({type(e).__name__}); the server's log has the "
                           "details", print_exception=False) from None

    return call


def scrub(text: str) -> str:
    """``text`` with every absolute path replaced by its file name."""
    return " ".join(Path(w).name if w.startswith("/") and len(w) > 1 else w for w in text.split(" "))


def info_markdown(ens: Ensemble) -> str:
    """The info panel: experiments, CV, classes, input size, views, weights, git commit."""
    rows = []

    metric_name = ens.members[0].cfg.data.metric
    metric = task_of(ens.members[0].cfg).metric(metric_name, ens.classes).title
    for m in ens.members:
        fm = m.folds[0]
        cv = f"{m.cv_score:.4f}" if m.cv_score is not None else "– (runs/E/oof.csv not written yet)"
        if m.cv_score is not None and metric_name != "macro_f1":
            cv += f" (macro F1 {m.cv_macro_f1:.4f})"
        commit = m.run_config.get("git_commit") or "–"
        rows.append(f"| {m.exp} | {fm.meta.get('model_name', m.cfg.model.name)} | {fm.size} px ({fm.resize}) | "
                    f"{', '.join(str(f.fold) for f in m.folds)} | {', '.join(m.views)} | {m.weight:.3f} | {cv} | "
                    f"`{str(commit)[:12]}` |")
    lines = [f"| experiment | model | input | folds | TTA views | weight | CV {metric} (OOF) | git commit |",
             "|---|---|---|---|---|---|---|---|", *rows, ""]
    if len(ens.members) > 1:
        cv = ens.ledger_row.get("cv_score") or ens.ledger_row.get("cv_macro_f1")
        lines.append(f"Blend: weights from {ens.weight_source}, method {ens.method}"
                     + (f"; the ledger's CV {metric} of this blend: {cv}" if cv else "") + ".")
        if ens.method_note:
            lines.append(f"Note: {ens.method_note}.")
    if ens.decision.note():
        lines.append(ens.decision.note())
    lines.append(f"\n**{len(ens.classes)} classes:** " + ", ".join(ens.classes))
    return "\n".join(lines)


def _copy_examples(paths: list[str], dest: Path) -> list[str]:
    """Copies (byte for byte) in a folder Gradio may serve; the competition folder need not be exposed."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, p in enumerate(paths):
        target = dest / f"{i:02d}_{Path(p).name}"
        shutil.copyfile(p, target)
        out.append(str(target))
    return out


def example_images(ens: Ensemble, n_test: int = N_TEST_EXAMPLES, n_mistakes: int = N_MISTAKES
                   ) -> tuple[list[str], list[tuple[str, str]]]:
    """(a few test images, the most confidently wrong OOF images as (path, caption)) of the first experiment.

    The mistakes are ``comp analyze``'s confident-wrong gallery (same ranking), from ``runs/E/oof.csv``.
    """
    import os as _os

    from comp.data.competition import load_test, load_train
    from comp.runs import read_oof, run_dir

    m = ens.members[0]
    test = []
    try:
        t = load_test(m.cfg)
        test = [p for p in t["path"].head(n_test * 2) if isinstance(p, str) and _os.path.isfile(p)][:n_test]
    except Exception:  # noqa: BLE001 - examples are a convenience; a competition without a test set has none
        test = []
    mistakes: list[tuple[str, str]] = []
    oof_path = run_dir(m.exp) / "oof.csv"
    if oof_path.exists():
        try:
            oof = read_oof(oof_path, m.cfg)
            paths = dict(zip(*[load_train(m.cfg)[c] for c in ("id", "path")]))
            mistakes = ens.decision.mistakes(m.cfg, oof, m.classes, paths, n_mistakes)
        except Exception:  # noqa: BLE001
            mistakes = []
    return test, mistakes


def build_app(ens: Ensemble, top_k: int = TOP_K, examples: bool = True, title: str | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, cache_ttl: int = CACHE_TTL):
    """The Gradio Blocks of the app for ``ens`` (not launched).

    ``examples=False`` leaves the competition's images (test images, OOF mistakes with their labels) out of the
    page. Uploads, decoded webcam/paste images and Grad-CAM files are deleted ``cache_ttl`` seconds after they
    were written (and all of them when the server stops)."""
    require("gradio")
    import gradio as gr

    exps = ", ".join(m.exp for m in ens.members)
    title = title or f"comp — {exps}"
    ttl = max(1, int(cache_ttl))
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(max(1, min(ttl, 60)), ttl)) as blocks:
        gr.Markdown(f"# {title}\nDrop an image, take one with the webcam, or paste one; the fold ensemble "
                    f"({sum(len(m.folds) for m in ens.members)} model(s)) predicts it with its TTA views.")
        with gr.Row():
            with gr.Column(scale=1):
                image = _image_component()
                button = gr.Button("Predict", variant="primary")
            with gr.Column(scale=1):
                shown, caption, cam_caption = ens.decision.widget(top_k)
                label = gr.Label(num_top_classes=shown, label=caption, elem_id="prediction")
                cam = gr.Image(label=cam_caption,
                               type="numpy", interactive=False, height=240, elem_id="gradcam", format="png")
                status = gr.Markdown("Upload an image, take one with the webcam, or paste one.", elem_id="status")
        layer, why = ens.cam_layer()
        if layer is None:
            gr.Markdown(f"*Grad-CAM skipped for this model: {why}* (as in `comp analyze`).", elem_id="cam-note")

        @guarded
        def run(path):
            return classify(ens, path, top_k, max_pixels)

        # One queue for every trigger: the models (and Grad-CAM's hooks on them) serve one image at a time.
        io = dict(fn=run, inputs=image, outputs=[label, cam, status], concurrency_id="model", concurrency_limit=1)
        button.click(**io, api_name=API_NAME)
        image.input(**io, api_name=False)  # upload, webcam capture, paste

        if examples:
            tmp = Path(tempfile.mkdtemp(prefix="comp-app-examples-"))
            test, mistakes = example_images(ens)
            shown = dict(inputs=image, outputs=[label, cam, status], fn=run, run_on_click=True, cache_examples=False,
                         api_name=False)
            if test:
                gr.Examples([[c] for c in _copy_examples(test, tmp / "test")], label="test images",
                            examples_per_page=len(test), **shown)
            if mistakes:
                copies = _copy_examples([p for p, _ in mistakes], tmp / "oof")
                gr.Examples([[c] for c in copies], examples_per_page=len(copies), **shown,
                            label="OOF mistakes, most confidently wrong first (comp analyze's gallery): "
                            + "; ".join(f"{i + 1}. {c}" for i, (_, c) in enumerate(mistakes)))
        with gr.Accordion("model", open=True):
            gr.Markdown(info_markdown(ens), elem_id="info")
        build_synth_tab(ens)  # "make an image": only when comp synth made generators for a served experiment
    return blocks


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``user:password`` (from --auth or COMP_APP_AUTH) as a pair; None when not given."""
    if text is None or text == "":
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise DataError(f"--auth (or {AUTH_ENV}) takes user:password, both non-empty")
    return user, password


def check_exposure(host: str, share: bool, auth) -> None:
    """Refuse to serve beyond loopback (another --host, or --share) without a login."""
    if auth:
        return
    if share:
        raise DataError("--share puts the app on a public link: add --auth user:password "
                        f"(or set {AUTH_ENV}), or serve on 127.0.0.1 without --share")
    if not is_loopback(host):
        raise DataError(f"--host {host} lets other machines in: add --auth user:password (or set {AUTH_ENV}), "
                        "or serve on --host 127.0.0.1")


def launch(blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           block: bool = True, quiet: bool = False, auth: tuple[str, str] | None = None,
           queue_size: int = QUEUE_SIZE):
    """Serve ``blocks`` (analytics off, system-font theme, no SSR, a bounded queue, errors without their
    traceback, Gradio's login when ``auth`` is given); returns (app, local_url, share_url)."""
    check_exposure(host, share, auth)
    blocks.queue(max_size=max(1, int(queue_size)), default_concurrency_limit=1)
    return blocks.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                         theme=theme(), css=CSS, quiet=quiet, ssr_mode=False, show_error=False,
                         footer_links=["api"], max_file_size="64mb", auth=[auth] if auth else None)


def serve(config_path: str, exps: list[str], host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          top_k: int = TOP_K, echo=print, auth: str | tuple[str, str] | None = None,
          max_pixels: int = DEFAULT_MAX_PIXELS, examples: bool = True, queue_size: int = QUEUE_SIZE,
          cache_ttl: int = CACHE_TTL) -> None:
    """``comp app``: load the models once, build the page, serve it until interrupted."""
    auth = parse_auth(auth) if isinstance(auth, str) or auth is None else auth
    check_exposure(host, share, auth)  # before minutes of model loading
    if max_pixels <= 0:
        raise DataError(f"--max-pixels must be positive (got {max_pixels})")
    require("gradio")
    guard_pillow(max_pixels)
    ens = Ensemble.load(config_path, exps)
    n = sum(len(m.folds) for m in ens.members)
    echo(f"app: {', '.join(m.exp for m in ens.members)}: {n} fold model(s) loaded on {ens.device}, "
         f"{len(ens.classes)} classes; weights: {ens.weight_source}")
    blocks = build_app(ens, top_k=top_k, examples=examples, max_pixels=max_pixels, cache_ttl=cache_ttl)
    echo(f"app: serving on http://{host}:{port}" + (" (login required)" if auth else "") + " (Ctrl-C stops it)")
    launch(blocks, host, port, share, auth=auth, queue_size=queue_size)
