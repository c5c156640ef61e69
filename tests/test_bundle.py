"""comp bundle: a ledger submission as a Kaggle code-competition notebook, run here as Kaggle runs it.

For a single-label, a wide-probability and a multi-label submission: build the project with the real CLI (tiny
test_resnet models on real Fashion-MNIST images), bundle the submission, then run its notebook with nbclient in a
fresh virtual environment that gets comp only from the bundle's wheels (pip --no-index) and sees none of comp's
files, with the network cut off (unshare -n) where the machine allows it. The notebook's submission.csv must equal
comp ensemble's: labels identical, probabilities within 1e-5.
"""

import json

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from comp.cli import cli
from comp.config import ConfigError, load_config
from comp.serve.bundle import Request, make
from comp.serve.kaggle_check import network_prefix
from comp.serve.wheels import fits, repack

TINY = ["--set", "model.name=test_resnet", "--set", "input.size=32", "--set", "train.epochs=2",
        "--set", "train.batch_size=32"]


def call(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, f"comp {' '.join(map(str, args))}:\n{r.output}\n{r.exception!r}"
    return r.output


def _project(work, kind):
    """A trained project in ``work`` (the cwd) with ledger submission 'sub' of the given shape ('auto': comp auto's
    submission 'auto', as the Kaggle walkthrough makes it)."""
    if kind == "auto":
        call("sample", "data", "--n-train", "300", "--n-test", "60")
        call("init", "data")
        call("auto", "--budget", "40s")
        return "auto"
    if kind == "multilabel":
        call("sample", "data", "--multilabel", "--layout", "hpa", "--n-train", "240", "--n-test", "60")
    else:
        call("sample", "data", "--n-train", "300", "--n-test", "80")
    if kind == "wide":  # one probability column per class: the blend writes probabilities, scored in log loss
        classes = sorted(pd.read_csv("data/train.csv", dtype=str)["label"].unique())
        sample = pd.read_csv("data/sample_submission.csv", dtype=str)
        pd.DataFrame({"image_id": sample["image_id"], **{c: 0.1 for c in classes}}).to_csv(
            "data/sample_submission.csv", index=False)
    call("init", "data")
    if kind == "wide":
        cfg = yaml.safe_load(open("comp.yaml"))
        cfg["data"]["metric"] = "log_loss"
        with open("comp.yaml", "w") as f:
            yaml.safe_dump(cfg, f)
    call("folds", "--n-splits", "3")
    call("train", "--exp", "a", "--all-folds", *TINY)
    call("predict", "--exp", "a", "--oof", "--tta", "identity,hflip")
    flags = {"label": ["--tune-bias", "--label-shift", "on"], "wide": ["--temperature"], "multilabel": []}[kind]
    call("ensemble", "--exp", "a", "--name", "sub", *flags)
    return "sub"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["label", "wide", "multilabel", "auto"])
def test_bundle_reproduces_the_submission_offline(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = _project(tmp_path, kind)
    req = Request(name=name, competition="fmnist-demo", dataset_id="me/fmnist-demo-models")
    res = make(load_config("comp.yaml"), "comp.yaml", req, check=True, echo=lambda s: None)
    got = res["check"]
    assert got["same"], got["why"]
    assert got["max_abs_diff"] <= 1e-5 and got["rows"] == len(pd.read_csv(f"submissions/{name}.csv"))
    assert got["working"] == ["submission.csv"]  # the notebook leaves only the submission in /kaggle/working
    if network_prefix()[0]:
        assert got["network_cut"] and "unreachable" in got["network"]
    assert "installed offline: comp-" in got["log"] and "Downloading" not in got["log"]

    ds = tmp_path / "bundle" / name / "dataset"
    assert all(p.is_file() for p in ds.iterdir())  # flat: the Kaggle CLI uploads files, not subfolders
    manifest = json.loads((ds / "comp-bundle.json").read_text())
    assert manifest["members"][0]["views"] == ["identity", "hflip"]  # comp auto's TTA too
    assert {n.split("-")[0] for n in manifest["wheels"]} >= {"comp"}
    kernel = json.loads((tmp_path / "bundle" / name / "notebook" / "kernel-metadata.json").read_text())
    assert kernel["enable_internet"] is False and kernel["dataset_sources"] == ["me/fmnist-demo-models"]
    assert kernel["competition_sources"] == ["fmnist-demo"]
    nb = (tmp_path / "bundle" / name / "notebook" / "submission.ipynb").read_text()
    assert "--no-index" in nb and "run_bundle" in nb
    if kind == "label":
        _check_requests(tmp_path, req)


def _check_requests(work, req):
    """Re-running is a no-op; --onnx reproduces it with onnxruntime; a run-time estimate near Kaggle's limit warns;
    a stale input, an unknown name and bad slugs are clear errors."""
    cfg = load_config("comp.yaml")
    again = make(cfg, "comp.yaml", req, echo=lambda s: None)
    assert again["already"] and again["bytes"] > 0
    call("export", "--exp", "a", "--all-folds")
    onnx = make(cfg, "comp.yaml", Request("sub", "fmnist-demo", "me/fmnist-onnx", out="bundle_onnx"), onnx=True,
                check=True, echo=lambda s: None)
    assert onnx["check"]["same"], onnx["check"]["why"]
    manifest = json.loads((work / "bundle_onnx" / "sub" / "dataset" / "comp-bundle.json").read_text())
    assert manifest["members"][0]["engine"] == "onnxruntime" and any("onnxruntime" in w for w in manifest["wheels"])
    said = []
    tight = make(cfg, "comp.yaml", Request("sub", "fmnist-demo", "me/fmnist-tight", limit_h=30 / 3600,
                                           out="bundle_tight"), echo=said.append)
    assert tight["near_limit"] and any("WARNING: over half the limit" in s for s in said)
    assert tight["estimate_s"] > tight["inference_s"] > 0
    for bad, key in ((Request("nope", "fmnist-demo", "me/fmnist-demo-models"), "no submission 'nope'"),
                     (Request("sub", "Bad Slug", "me/fmnist-demo-models"), "--competition"),
                     (Request("sub", "fmnist-demo", "nobody"), "--dataset-id"),
                     (Request("sub", "fmnist-demo", "me/x-models", exclude=("comp",)), "always ships")):
        with pytest.raises(Exception, match=key):
            make(cfg, "comp.yaml", bad, echo=lambda s: None)
    test = work / "runs" / "a" / "test.csv"
    test.write_text(test.read_text().replace("0.", "0.0", 1))  # the member's predictions changed since the blend
    with pytest.raises(ConfigError, match="changed since submissions/sub.csv was made"):
        make(cfg, "comp.yaml", Request("sub", "fmnist-demo", "me/other-models"), echo=lambda s: None)


def test_wheel_tags_and_repack(tmp_path):
    """Kaggle's platform takes manylinux wheels up to its glibc; an installed distribution repacks into a wheel that
    pip installs with no index, every file's hash in its RECORD checked."""
    assert fits("cp311-cp311-manylinux_2_28_x86_64", "manylinux_2_35_x86_64", "3.11")
    assert fits("cp310-abi3-manylinux2014_x86_64", "manylinux_2_35_x86_64", "3.11")
    assert fits("py3-none-any", "manylinux_2_35_x86_64", "3.11")
    assert not fits("cp311-cp311-manylinux_2_39_x86_64", "manylinux_2_35_x86_64", "3.11")
    assert not fits("cp312-cp312-manylinux_2_17_x86_64", "manylinux_2_35_x86_64", "3.11")
    assert not fits("cp311-cp311-manylinux_2_17_aarch64", "manylinux_2_35_x86_64", "3.11")
    import importlib.metadata as md
    import subprocess
    import sys
    import zipfile

    whl = repack(md.distribution("iterative-stratification"), tmp_path)
    assert whl.name.startswith("iterative_stratification-") and whl.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
    assert any(n.endswith(".dist-info/RECORD") for n in names) and "iterstrat/ml_stratifiers.py" in names
    assert not any(n.endswith((".pyc", "INSTALLER", "direct_url.json")) for n in names)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", "--target",
                           str(tmp_path / "t"), str(whl)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "t" / "iterstrat" / "ml_stratifiers.py").exists()
