"""What a bundle's notebook runs on Kaggle (comp.serve.bundle writes the bundle): the recipe of one ledger
submission, replayed with comp's own ``predict`` and ``ensemble`` on the competition's (hidden) test images.

The dataset is flat (the Kaggle CLI uploads a folder's files, not its subfolders): ``comp-bundle.json`` maps each
file to its place in a working copy of the project (``runs/E/fold_k/model.safetensors``, ``runs/E/oof.csv``,
``comp.yaml``, ...). That copy is laid out in a temporary folder (weights linked, not copied), ``data.root`` is
pointed at the competition's input folder, every member is predicted with the views, models and input size its
``comp predict`` used, and the blend is made with the options its ``comp ensemble`` used; the submission is
copied to ``WORKING/submission.csv`` and the temporary folder removed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from comp.files import working_dir

MANIFEST = "comp-bundle.json"


def find_competition(inputs: Path, slug: str, sample: str | None) -> Path:
    """``inputs/<slug>``, else the one folder under ``inputs`` (two levels deep) that holds the sample submission:
    Kaggle has mounted competitions at more than one depth over the years."""
    direct = inputs / slug
    if direct.is_dir():
        return direct
    name = Path(sample or "sample_submission.csv").name
    found = sorted(p.parent for p in list(inputs.glob(f"*/{name}")) + list(inputs.glob(f"*/*/{name}")))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(f"competition {slug!r} not found under {inputs} (looked for {direct} and for one folder "
                            f"holding {name}; found {len(found)}): add the competition as the notebook's input")


def _lay_out(dataset: Path, manifest: dict, ws: Path, competition: Path) -> None:
    """The working copy: each dataset file at its project path (linked), comp.yaml pointed at the competition."""
    for flat, rel in manifest["files"].items():
        dst = ws / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel == "comp.yaml":
            values = yaml.safe_load((dataset / flat).read_text(encoding="utf-8")) or {}
            values.setdefault("data", {})["root"] = str(competition)
            for key in ("relabel", "pseudo", "synthetic"):  # training inputs only; predict and blend read none
                values["data"].pop(key, None)
            dst.write_text(yaml.safe_dump(values, allow_unicode=True, sort_keys=False), encoding="utf-8")
        else:
            os.symlink((dataset / flat).resolve(), dst)


def replay(ws: Path, manifest: dict, echo: Callable[[str], None], progress: bool) -> Path:
    """Predict every member and blend them, inside the working copy ``ws``; returns the submission's path."""
    from comp.config import load_config
    from comp.infer.ensemble import ensemble
    from comp.infer.predict import predict

    with working_dir(ws):
        for m in manifest["members"]:
            cfg = load_config(ws / "comp.yaml", exp=m["exp"], overrides=m["overrides"])
            predict(cfg, tta=m["views"], use=m["use"], engine=m["engine"], echo=echo, progress=progress)
        e = manifest["ensemble"]
        cfg = load_config(ws / "comp.yaml", overrides=e.get("overrides", []))
        ensemble(cfg, e["exps"], weights=e["weights"], method=e["method"], tune_bias=e["tune_bias"],
                 name=manifest["name"], bias_folds=e["bias_folds"], echo=echo, tune_thresholds=e["tune_thresholds"],
                 temperature=e["temperature"], use=e["use"], label_shift=e["label_shift"])
    return ws / "submissions" / f"{manifest['name']}.csv"


def run_bundle(dataset: str | Path, inputs: str | Path, working: str | Path, echo: Callable[[str], None] = print,
               progress: bool = False) -> Path:
    """Write ``working/submission.csv`` from the bundle in ``dataset`` and the competition under ``inputs``."""
    start = time.perf_counter()
    dataset, inputs, working = Path(dataset), Path(inputs), Path(working)
    manifest = json.loads((dataset / MANIFEST).read_text(encoding="utf-8"))
    competition = find_competition(inputs, manifest["competition"], manifest.get("sample_submission"))
    echo(f"comp bundle {manifest['name']}: {len(manifest['members'])} member(s) "
         f"{', '.join(m['exp'] for m in manifest['members'])}; competition data {competition}")
    ws = Path(tempfile.mkdtemp(prefix="comp-bundle-"))
    try:
        _lay_out(dataset, manifest, ws, competition)
        made = replay(ws, manifest, echo, progress)
        working.mkdir(parents=True, exist_ok=True)
        out = working / "submission.csv"
        shutil.copyfile(made, out)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    echo(f"wrote {out} in {time.perf_counter() - start:.1f} s (the local estimate was "
         f"{manifest.get('estimate_s', 0):.0f} s of inference at {manifest.get('estimate_rate', '?')} images/s)")
    return out
