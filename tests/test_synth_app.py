"""comp synth's quality report (the fold's own classifier, nearest-neighbour copies, grids) and the app's "make an
image" tab (a real comp app on loopback, clicked in headless Chromium with the network blocked), on one tiny
3-fold run and a tiny fold-0 generator."""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_config
from PIL import Image

from comp.cli import cli
from comp.config import load_config
from comp.data.folds import make_folds
from comp.train.session import train_folds

pytestmark = pytest.mark.slow
GEN = ["--channels", "32,16,8,8", "--steps", "3", "--batch-size", "16"]  # the default kind: gan


@pytest.fixture(scope="module")
def run(tmp_path_factory, competition):
    """Experiment base (test_resnet, 32 px, 1 epoch, 3 folds) and folds/synth/base with fold 0's generator."""
    work = tmp_path_factory.mktemp("synth_app")
    write_config(work, competition, model={"name": "test_resnet"}, input={"size": 32}, folds={"n_splits": 3},
                 train={"epochs": 1, "batch_size": 32, "lr": 3e-3})
    old = os.getcwd()
    os.chdir(work)
    try:
        cfg = load_config("comp.yaml", exp="base")
        make_folds(cfg, echo=lambda s: None)
        train_folds(cfg, echo=lambda s: None)
        r = CliRunner().invoke(cli, ["synth", "--exp", "base", *GEN, "--per-class", "2", "--fold", "0",
                                     "--no-report"])
        assert r.exit_code == 0, r.output
    finally:
        os.chdir(old)
    return {"work": work, "root": competition, "classes": sorted(pd.read_csv(competition / "train.csv")["label"]
                                                                 .astype(str).unique())}


def test_quality_report_flags_copies_and_uses_the_folds_own_classifier(run, monkeypatch):
    work = run["work"]
    monkeypatch.chdir(work)
    fd = work / "folds" / "synth" / "base" / "fold_0"
    folds = pd.read_csv(work / "folds" / "folds.csv", dtype=str)
    row = folds[folds["fold"] == "1"].iloc[0]  # a training row of fold 0: its copy must be flagged
    shutil.copyfile(run["root"] / "train_images" / f"{row['image_id']}.png", fd / "copy.png")
    csv = pd.read_csv(fd / "images.csv", dtype=str)
    pd.concat([csv, pd.DataFrame([{"id": "copy.png", "class": row["label"], "seed": "0", "step": "0"}])]).to_csv(
        fd / "images.csv", index=False)
    r = CliRunner().invoke(cli, ["synth", "--exp", "base", *GEN, "--per-class", "2", "--fold", "0", "--resume"])
    assert r.exit_code == 0, r.output
    assert "synth quality:" in r.output and "1 copies flagged" in r.output, r.output
    out = work / "reports" / "base" / "synth"
    q = json.loads((out / "quality.json").read_text())
    per = pd.read_csv(out / "images.csv", dtype={"id": str})
    copy = per[per["id"] == "copy.png"].iloc[0]
    assert copy["nn"] < 1e-6 and q["total"]["copies"] == 1
    # The fold-0 classifier judged every image (a real model: the copy of a real image is mostly recognised).
    assert per["intended"].notna().all() and 0 <= q["total"]["intended"] <= 1
    html = (out / "index.html").read_text()
    grids = sorted(out.glob("grid_*.png"))
    assert len(grids) == len(run["classes"]) and all(g.name in html for g in grids)
    assert Image.open(grids[0]).size[0] == 8 * 33 * 2  # 8 columns of 32 px + 1-px gaps, x2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1600", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "app.log"}


@pytest.mark.browser
def test_app_make_an_image_tab_in_chromium(run, tmp_path):
    pytest.importorskip("gradio")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs Debian packages chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from comp.serve.server import AppServer

    work, root = run["work"], run["root"]
    before = (_files(work), _files(root))
    with AppServer(["base"], cwd=work) as url:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for f in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
            opts.add_argument(f)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        driver.set_page_load_timeout(60)
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 90, poll_frequency=0.25)
            tab = wait.until(lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button[role=tab]")
                                        if "make an image" in b.text])[0]
            # The page still lays out (a table loads) while the tab is found: a native click there was intercepted
            # once in CI by a <td> drawn over it. A DOM click on the element itself does not miss.
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", tab)
            wait.until(lambda d: d.find_element(By.ID, "synth-make").is_displayed())
            make = driver.find_element(By.ID, "synth-make")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", make)
            sizes = wait.until(lambda d: d.execute_script(
                "return Array.from(document.querySelectorAll('#synth-gallery img'))"
                ".filter(i => i.complete && i.naturalWidth > 0).map(i => [i.naturalWidth, i.naturalHeight])"))
            status = driver.find_element(By.ID, "synth-status").text
        finally:
            driver.quit()
    assert sizes and all(s == [32, 32] for s in sizes), sizes  # the generator's size: the experiment's input.size
    assert "from base fold 0" in status and "32x32" in status, status
    assert (_files(work), _files(root)) == before  # nothing written into the working or competition folder
