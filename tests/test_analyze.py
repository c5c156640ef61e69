"""comp analyze on a real 2-fold run (comp folds + comp train, test_resnet at 32 px), and Grad-CAM on its own."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import write_config
from PIL import Image
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from comp.cli import cli
from comp.config import load_config
from comp.data.competition import class_names
from comp.data.folds import make_folds
from comp.reports.analyze import cam_picks, run_analyze
from comp.reports.cam import find_target_layer, grad_cam, grad_cam_labels
from comp.train.session import train_folds

QUIET = {"echo": lambda s: None}


# comp train's own loop (timm's ~50k-parameter test_resnet, 32 px, 2 epochs): past chance in about a second a fold.
TRAIN = ["model.name=test_resnet", "input.size=32", "train.epochs=2", "train.batch_size=32", "train.lr=3e-3"]


def build_run(work: Path, root: Path, exp: str = "e1", n_folds: int = 2) -> dict:
    """runs/<exp>/ made by comp's own `comp folds` + `comp train --all-folds` in ``work`` (the cwd while it runs)."""
    write_config(work, root)
    old = os.getcwd()
    os.chdir(work)
    try:
        make_folds(load_config(work / "comp.yaml"), n_splits=n_folds, echo=QUIET["echo"])
        cfg = load_config(work / "comp.yaml", exp=exp, overrides=TRAIN)
        res = train_folds(cfg, echo=QUIET["echo"])
    finally:
        os.chdir(old)
    oof = pd.read_csv(work / "runs" / exp / "oof.csv", dtype={"image_id": str, "label": str}, keep_default_na=False)
    classes = class_names(oof["label"])
    return {"cfg": cfg, "oof": oof, "classes": classes, "run": work / "runs" / exp, "cv": res["cv_macro_f1"]}


@pytest.fixture(scope="module")
def trained(competition, tmp_path_factory):
    work = tmp_path_factory.mktemp("analyze")
    run = build_run(work, competition)
    old = os.getcwd()
    os.chdir(work)
    try:
        page = run_analyze(run["cfg"], "e1", out="reports/e1", **QUIET)
    finally:
        os.chdir(old)
    return {**run, "work": work, "page": work / page}


@pytest.mark.slow
def test_metrics_and_confusion_match_sklearn(trained):
    oof, classes = trained["oof"], trained["classes"]
    y = oof["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    pred = oof[classes].to_numpy().argmax(1)
    folder = trained["page"].parent
    per = pd.read_csv(folder / "per_class.csv", dtype={"class": str}, keep_default_na=False)
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=range(len(classes)), zero_division=0)
    assert per["class"].tolist() == classes
    np.testing.assert_allclose(per[["precision", "recall", "f1"]].to_numpy(), np.stack([p, r, f], 1), atol=1e-9)
    cm = pd.read_csv(folder / "confusion_matrix.csv").iloc[:, 1:].to_numpy()
    np.testing.assert_array_equal(cm, confusion_matrix(y, pred, labels=range(len(classes))))
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["macro_f1"] == pytest.approx(f.mean()) and summary["folds"] == [0, 1]
    assert summary["macro_f1"] == pytest.approx(trained["cv"])  # the trainer's CV score, recomputed
    assert summary["macro_f1"] > 0.2  # past chance (0.1): the models and OOF are real
    with Image.open(folder / "confusion_matrix.png") as im:
        assert im.size[0] > 400


def test_page_sections_gallery_and_curves(trained):
    html = trained["page"].read_text(encoding="utf-8")
    for sid in ("overview", "per-class", "confusion", "confused-pairs", "confident-wrong", "gradcam", "curves"):
        assert f'<section id="{sid}">' in html, sid
    wrong = re.search(r'<section id="confident-wrong">(.*?)</section>', html, re.DOTALL).group(1)
    oof, classes = trained["oof"], trained["classes"]
    probs = oof[classes].to_numpy()
    y = oof["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    bad = np.flatnonzero(probs.argmax(1) != y)
    top = bad[np.argmax(probs[bad].max(1))]
    assert oof["image_id"].iloc[top] in wrong  # the most confident mistake leads the gallery
    assert f"p={probs[top].max():.2f}" in wrong
    assert "training_curves.png" in html and (trained["page"].parent / "training_curves.png").exists()
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (trained["page"].parent / src).is_file(), src


def test_gradcam_files_per_class_with_safe_names(trained):
    folder = trained["page"].parent
    cams = sorted(p.name for p in folder.glob("cam_*.png"))
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert cams == summary["cams"] and len(cams) >= len(trained["classes"])
    assert all(re.fullmatch(r"cam_\d{3}_[A-Za-z0-9_-]+_(correct|wrong)_\d\.png", c) for c in cams)
    tshirt = trained["classes"].index("T-shirt/top")
    assert any(c.startswith(f"cam_{tshirt:03d}_T-shirt-top_") for c in cams)
    with Image.open(folder / cams[0]) as im:
        w, h = im.size
        assert w == 2 * h  # input | overlay
        a = np.asarray(im.convert("RGB"), dtype=np.int16)
    # the overlay half is coloured by a heat map that varies (not a flat 1x1 map); the input half is gray
    right = a[:, w // 2 :]
    assert np.abs(right[..., 0] - right[..., 2]).mean() > 10
    assert right[..., 0].std() > 10
    html = trained["page"].read_text(encoding="utf-8")
    for c in cams:
        assert f'src="{c}"' in html


def test_cam_picks_are_right_and_wrong():
    y = np.array([0, 0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.95, 0.05]])
    right, wrong = cam_picks(y, probs, 0, 2)
    assert right.tolist() == [0, 1] and wrong.tolist() == [2]
    right, wrong = cam_picks(y, probs, 1, 2)
    assert right.tolist() == [3] and wrong.tolist() == [4]


def test_gradcam_highlights_the_evidence():
    """A class whose logit is the brightness of the image: the map must sit on the bright square."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.fill_(0.1)
        model[0].bias.zero_()
        model[4].weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
        model[4].bias.zero_()
    layer, name = find_target_layer(model)
    assert layer is model[0] and name == "0"
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 4:14, 18:28] = 1.0  # bright square top right
    mask = grad_cam(model, x, [0], layer)[0]
    assert mask.shape == (32, 32)
    assert mask[4:14, 18:28].mean() > 0.5 > mask[20:, :12].mean()


def test_target_layer_for_timm_models():
    import timm

    cnn = timm.create_model("resnet10t", num_classes=3)
    layer, name = find_target_layer(cnn)
    assert name == "layer4" and layer is cnn.layer4
    assert find_target_layer(cnn, 224)[1] == "layer4"  # 7x7 map
    assert find_target_layer(cnn, 32)[1] == "layer2"  # layer4 would be 1x1 at 32 px: a flat map
    vit = timm.create_model("test_vit", num_classes=3)
    layer, name = find_target_layer(vit)
    assert name == f"blocks.{len(vit.blocks) - 1}.norm1" and layer is vit.blocks[-1].norm1


# tiny timm backbones of each family (pretrained=False), 32 px: token (class / distillation tokens), NHWC, NCHW
CAM_MODELS = {
    "vit_tiny_patch16_224": dict(img_size=32, patch_size=4, depth=2),
    "deit_tiny_distilled_patch16_224": dict(img_size=32, patch_size=4, depth=1),
    "swin_tiny_patch4_window7_224": dict(img_size=32, window_size=2, embed_dim=24, depths=(1, 1, 1, 1),
                                         num_heads=(1, 1, 1, 1)),
    "convnext_atto": {},
    "test_resnet": {},
}


@pytest.mark.parametrize("name", list(CAM_MODELS))
def test_gradcam_for_every_timm_family(name):
    """Target layer and reshape from the model's own structure: a finite, non-flat map at the image's size for
    every family, and one map per label (multi-label) that matches the single-image map of that label."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5, **CAM_MODELS[name])
    layer, lname = find_target_layer(model, 32)
    assert layer is not None, lname
    x = torch.rand(1, 3, 32, 32)
    maps = grad_cam_labels(model, x, list(range(5)), layer)
    assert maps.shape == (5, 32, 32) and np.isfinite(maps).all()
    assert maps.std(axis=(1, 2)).max() > 0.05  # a random network's map varies for some label (not all flat)
    best = int(maps.std(axis=(1, 2)).argmax())
    np.testing.assert_allclose(grad_cam(model, x, [best], layer)[0], maps[best], atol=1e-4)
    if "vit" in name or "deit" in name:
        assert lname.endswith(".norm1") and model.num_prefix_tokens == (2 if "deit" in name else 1)
    if "swin" in name:
        assert lname == "layers.1"  # 4x4 NHWC map at 32 px (layers.2/3 would be 2x2/1x1)


def test_analyze_before_every_fold_is_done_and_cli(trained, tmp_path, monkeypatch):
    import shutil

    work = trained["work"]
    monkeypatch.chdir(work)
    shutil.copytree(work / "runs" / "e1", work / "runs" / "part")
    (work / "runs" / "part" / "oof.csv").unlink()
    shutil.rmtree(work / "runs" / "part" / "fold_1")
    res = CliRunner().invoke(cli, ["analyze", "--exp", "part"])
    assert res.exit_code == 0, res.output
    html = (work / "reports" / "part" / "index.html").read_text(encoding="utf-8")
    assert "not every fold is done" in html and "fold_0" in html
    res = CliRunner().invoke(cli, ["analyze", "--exp", "nothing"])
    assert res.exit_code == 1 and "comp train --exp nothing" in res.output
