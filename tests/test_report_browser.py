"""The eda and analyze pages rendered in headless Chromium: every section is there and every image loads."""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_config

from comp.config import load_config
from comp.data.cache import load_images
from comp.data.competition import class_names, load_train
from comp.data.dataset import to_tensor_batch
from comp.data.folds import make_folds
from comp.data.sample import make_sample
from comp.files import write_csv
from comp.reports.analyze import run_analyze
from comp.reports.eda import run_eda
from comp.train.model import create_model, normalization, save_checkpoint

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
EDA_SECTIONS = ["overview", "class-counts", "sizes", "formats", "pixels", "brightness", "samples", "duplicates",
                "dup-label-conflicts", "dup-across-folds", "dup-within-a-class", "problems"]
ANALYZE_SECTIONS = ["overview", "per-class", "confusion", "confused-pairs", "confident-wrong", "gradcam", "curves"]
QUIET = {"echo": lambda s: None}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian packages chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A small competition (with a broken file and a label conflict), its eda report and an analyze report of
    two untrained test_resnet fold models whose real outputs make the OOF; all served over localhost http."""
    work = tmp_path_factory.mktemp("site")
    root = work / "comp"
    make_sample(root, n_train=150, n_test=20, seed=3)
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    (root / "train_images" / "broken.png").write_bytes(b"")
    shutil.copy(root / "train_images" / f"{train['image_id'][0]}.png", root / "train_images" / "copy.png")
    other = next(lab for lab in train["label"] if lab != train["label"][0])
    train = pd.concat([train, pd.DataFrame({"image_id": ["broken", "copy"], "label": [train["label"][1], other]})])
    train.to_csv(root / "train.csv", index=False)
    write_config(work, root, model={"name": "test_resnet"}, input={"size": 32})
    old = os.getcwd()
    os.chdir(work)
    try:
        cfg = load_config(work / "comp.yaml", exp="e1")
        make_folds(cfg, n_splits=2, skip_bad=True, echo=QUIET["echo"])
        run_eda(cfg, out="reports/eda", progress=False, **QUIET)
        _untrained_run(cfg, work / "runs" / "e1")
        run_analyze(cfg, "e1", out="reports/e1", **QUIET)
    finally:
        os.chdir(old)
    handler = functools.partial(_QuietHandler, directory=str(work / "reports"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"work": work, "url": f"http://127.0.0.1:{server.server_address[1]}"}
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _untrained_run(cfg, run: Path) -> None:
    """Fold models as comp train leaves them, with an OOF from their own (untrained) outputs."""
    train = load_train(cfg)
    folds = pd.read_csv(cfg.folds.file, dtype=str, keep_default_na=False)
    train = train.merge(folds[["image_id", "fold"]].rename(columns={"image_id": "id"}), on="id")
    train["fold"] = train["fold"].astype(int)
    classes = class_names(train["label"])
    images = load_images(train["path"].tolist(), 32, progress=False)
    torch.manual_seed(0)
    parts = []
    for k in (0, 1):
        model = create_model(cfg, len(classes)).eval()
        mean, std = normalization(cfg, model)
        meta = {"classes": classes, "input_size": 32, "resize": "stretch", "mean": mean, "std": std,
                "model_name": "test_resnet", "epoch": 2, "score": 0.1, "fold": k, "exp": "e1"}
        save_checkpoint(run / f"fold_{k}" / "model.safetensors", model, meta)
        write_csv(run / f"fold_{k}" / "metrics.csv", pd.DataFrame({
            "epoch": [1, 2], "train_loss": [2.3, 2.1], "val_loss": [2.3, 2.2], "val_macro_f1": [0.08, 0.1],
            "val_acc": [0.1, 0.12], "lr": [1e-3, 5e-4], "seconds": [1.0, 1.0], "images_per_s": [100.0, 100.0]}))
        va = np.flatnonzero(train["fold"].to_numpy() == k)
        with torch.no_grad():
            probs = model(to_tensor_batch(images[va], mean, std)).softmax(1).numpy().astype(np.float64)
        oof = pd.DataFrame({"image_id": train["id"].to_numpy()[va], "fold": k, "label": train["label"].to_numpy()[va]})
        parts.append(pd.concat([oof, pd.DataFrame(probs, columns=classes)], axis=1))
    write_csv(run / "oof.csv", pd.concat(parts, ignore_index=True))


def _check_page(driver, url: str, sections: list[str]) -> dict:
    from selenium.webdriver.common.by import By

    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    for sid in sections:
        el = driver.find_element(By.ID, sid)
        assert el.is_displayed(), sid
        assert el.find_element(By.TAG_NAME, "h2").text.strip(), sid
    nav = driver.find_elements(By.CSS_SELECTOR, "nav a")
    assert len(nav) == len(driver.find_elements(By.TAG_NAME, "section"))
    imgs = driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    broken = [src for src, complete, w in imgs if not (complete and w > 0)]
    assert imgs and not broken, f"images that did not load: {broken[:5]}"
    return {src: w for src, _, w in imgs}


@pytest.mark.slow
def test_eda_page_renders_with_every_image(browser, site):
    widths = _check_page(browser, site["url"] + "/eda/index.html", EDA_SECTIONS)
    assert widths["class_counts.png"] > 300 and widths["class_counts_by_fold.png"] > 300
    assert sum(src.startswith("thumbs/") for src in widths) >= 20
    from selenium.webdriver.common.by import By

    problems = browser.find_element(By.ID, "problems").text
    assert "broken" in problems and "empty_file" in problems
    conflicts = browser.find_element(By.ID, "dup-label-conflicts").text
    assert "copy" in conflicts
    assert "T-shirt/top" in browser.find_element(By.ID, "samples").text


def test_analyze_page_renders_with_every_image(browser, site):
    widths = _check_page(browser, site["url"] + "/e1/index.html", ANALYZE_SECTIONS)
    assert widths["confusion_matrix.png"] > 400 and widths["training_curves.png"] > 400
    cams = [src for src in widths if src.startswith("cam_")]
    assert cams and all(widths[c] >= 2 * 100 for c in cams)


def test_pages_work_from_file_urls_too(browser, site):
    """The report folder is self-contained: opened from disk, not served, every image still loads."""
    _check_page(browser, (site["work"] / "reports" / "eda" / "index.html").as_uri(), EDA_SECTIONS)
    _check_page(browser, (site["work"] / "reports" / "e1" / "index.html").as_uri(), ANALYZE_SECTIONS)
