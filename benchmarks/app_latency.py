"""Per-request latency of a real ``comp app`` server, from gradio_client over loopback.

Starts ``comp app --exp E`` in a child process (comp.serve.server.AppServer) and sends ``--n`` requests (test
images in turn), one at a time, each timed from ``client.predict`` call to result: upload, the fold ensemble
with its TTA views, Grad-CAM, the response. Bounded in count (``--n``) and time (``--max-seconds``). Prints
p50/p95/max in ms and requests/s; the first (warm-up) request is reported apart.

    .venv/bin/python benchmarks/app_latency.py --workdir demo --exp base      # after `make demo`
    .venv/bin/python benchmarks/app_latency.py                                # a 2-fold resnet18 at 32 px, built here
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def build_run(work: Path, size: int, folds: int) -> None:
    """A sample competition and ``folds`` untrained resnet18 fold models (weights do not change the latency)."""
    from comp.config import load_config
    from comp.data.competition import class_names, load_train
    from comp.data.sample import make_sample
    from comp.train.model import create_model, normalization, save_checkpoint

    make_sample(work / "data", n_train=200, n_test=100, seed=0)
    (work / "comp.yaml").write_text("data: {root: data, id_has_ext: false, ext: .png}\n"
                                    f"model: {{name: resnet18}}\ninput: {{size: {size}}}\n"
                                    "infer: {tta: [identity, hflip]}\n")
    cfg = load_config(work / "comp.yaml", exp="base")
    classes = class_names(load_train(cfg)["label"])
    for k in range(folds):
        model = create_model(cfg, len(classes)).eval()
        mean, std = normalization(cfg, model)
        save_checkpoint(work / f"runs/base/fold_{k}/model.safetensors", model,
                        {"classes": classes, "input_size": size, "resize": "stretch", "mean": mean, "std": std,
                         "model_name": "resnet18", "fold": k, "exp": "base"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="a folder with comp.yaml and runs/EXP (default: build one in a temp dir)")
    ap.add_argument("--exp", default="base")
    ap.add_argument("--n", type=int, default=200, help="requests")
    ap.add_argument("--max-seconds", type=float, default=300.0, help="stop sending after this long")
    ap.add_argument("--size", type=int, default=32, help="input size of the built run")
    ap.add_argument("--folds", type=int, default=2, help="folds of the built run")
    args = ap.parse_args()

    from gradio_client import Client, handle_file

    from comp.config import load_config
    from comp.data.competition import load_test
    from comp.serve.server import AppServer

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="comp-app-bench-"))
    if not args.workdir:
        build_run(work, args.size, args.folds)
    old = os.getcwd()
    os.chdir(work)
    try:
        cfg = load_config("comp.yaml", exp=args.exp)
        images = [p for p in load_test(cfg)["path"] if isinstance(p, str)][:50]
    finally:
        os.chdir(old)
    t0 = time.perf_counter()
    with AppServer([args.exp], cwd=work, log=work / "app-bench.log") as url:
        started = time.perf_counter() - t0
        client = Client(url, verbose=False)
        t = time.perf_counter()
        client.predict(handle_file(images[0]), api_name="/predict")
        first = time.perf_counter() - t
        times = []
        stop = time.perf_counter() + args.max_seconds
        for i in range(args.n):
            if time.perf_counter() > stop:
                break
            t = time.perf_counter()
            label, _, _ = client.predict(handle_file(images[i % len(images)]), api_name="/predict")
            times.append(time.perf_counter() - t)
            assert label and label.get("label"), "the app returned no label"
    ms = np.array(times) * 1000
    # The same work without Gradio or HTTP: the handler (decode, ensemble with TTA, Grad-CAM) called in-process.
    from comp.serve.app import classify
    from comp.serve.ensemble import Ensemble

    os.chdir(work)
    try:
        ens = Ensemble.load("comp.yaml", [args.exp])
        classify(ens, images[0])
        inproc = []
        for i in range(min(len(ms), 50)):
            t = time.perf_counter()
            classify(ens, images[i % len(images)])
            inproc.append(time.perf_counter() - t)
    finally:
        os.chdir(old)
    h = np.array(inproc) * 1000
    print(f"comp app --exp {args.exp} ({work}): server up in {started:.1f} s (models loaded once); first request "
          f"{first * 1000:.0f} ms")
    print(f"{len(ms)} requests from gradio_client over loopback, one at a time: p50 {np.percentile(ms, 50):.0f} ms, "
          f"p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms, {len(ms) / (ms.sum() / 1000):.1f} requests/s")
    print(f"the handler alone, in-process ({len(h)} calls: decode, {sum(len(m.folds) for m in ens.members)} fold "
          f"model(s) x {len(ens.members[0].views)} view(s), Grad-CAM): p50 {np.percentile(h, 50):.0f} ms, "
          f"p95 {np.percentile(h, 95):.0f} ms; Gradio + HTTP + upload add the rest")


if __name__ == "__main__":
    main()
