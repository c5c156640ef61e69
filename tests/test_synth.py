"""Synthetic images (comp synth, data.synthetic) are fold-safe: fold k trains on its own generator's images only.

The leak synthetic data invites: a generator trained on every row can reproduce a validation image into training.
The memorising test makes that leak as large as it can be: the synthetic folders of folds 1 and 2 hold exact
copies of fold 0's validation images with their true labels; fold 0 must not change at all.
"""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from train_utils import folded_workdir, make_folds_file

from comp.cli import cli
from comp.config import ConfigError, load_config
from comp.techniques import sources
from comp.techniques.pseudo import folds_digest
from comp.train.session import train_folds

TINY_GEN = ["--channels", "32,16,8,8", "--steps", "3", "--batch-size", "16"]  # the default kind: gan
RECIPE = ["model.name=test_resnet", "input.size=32", "augment.preset=none", "train.batch_size=32",
          "train.lr=0.01", "train.epochs=2", "folds.n_splits=3"]


def _weights(workdir, exp, fold):
    return load_file(str(workdir / "runs" / exp / f"fold_{fold}" / "model.safetensors"))


def _same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.fixture(scope="module")
def folded(tmp_path_factory, competition):
    with folded_workdir(tmp_path_factory, competition, "synth") as cwd:
        yield cwd


@pytest.mark.slow
def test_synth_cli_per_fold_files_resume_and_refusals(folded, monkeypatch):
    monkeypatch.chdir(folded)
    run = CliRunner().invoke
    base = ["synth", "--exp", "g", "--set", "input.size=32", *TINY_GEN, "--no-report"]
    folds = pd.read_csv(folded / "folds" / "folds.csv", dtype=str)
    two = sorted(folds["label"].unique())[:2]
    pick = ["--per-class", "2", "--classes", ",".join(two)]
    r = run(cli, [*base, *pick])
    assert r.exit_code == 0, r.output
    out = folded / "folds" / "synth" / "g"
    for k in range(3):
        df = pd.read_csv(out / f"fold_{k}" / "images.csv", dtype={"class": str})
        assert list(df.columns) == ["id", "class", "seed", "step"]
        assert sorted(df["class"]) == sorted(two * 2) and set(df["step"]) == {3}
        img = Image.open(out / f"fold_{k}" / df["id"].iloc[0])
        assert img.size == (32, 32)  # the experiment's input.size (under the generator's 64-px cap)
        meta = json.loads((out / f"fold_{k}" / "generator.json").read_text())
        assert meta["fold"] == k and meta["train_rows"] == int((folds["fold"] != str(k)).sum())
        assert (out / f"fold_{k}" / "generator.safetensors").exists() and not (out / f"fold_{k}" / "state").exists()
        assert meta["spec"]["kind"] == "gan"
    assert "cost: generator" in r.output and "never fold 0's" in r.output and "gan generator" in r.output
    # The diffusion generator stays an option, with the same files.
    r = run(cli, ["synth", "--exp", "gd", "--set", "input.size=32", "--no-report", "--kind", "diffusion", "--channels",
                  "8,16,16", "--steps", "2", "--batch-size", "8", "--sample-steps", "2", "--fold", "0", *pick])
    assert r.exit_code == 0, r.output
    gd = folded / "folds" / "synth" / "gd" / "fold_0"
    assert json.loads((gd / "generator.json").read_text())["spec"]["kind"] == "diffusion"
    assert Image.open(gd / pd.read_csv(gd / "images.csv")["id"].iloc[0]).size == (32, 32)
    r = run(cli, ["synth", "--exp", "gb", "--set", "input.size=32", "--channels", "8,16,16", "--steps", "1", *pick,
              "--no-report"])
    assert r.exit_code != 0 and "4 widths for --channels" in r.output and "Traceback" not in r.output, r.output
    # Outputs are never overwritten silently: the same command again is a no-op, other options are refused.
    r = run(cli, [*base, *pick])
    assert r.exit_code == 0 and "nothing to do" in r.output, r.output
    r = run(cli, [*base, "--per-class", "3", "--classes", ",".join(two)])
    assert r.exit_code != 0 and "--resume" in r.output and "--overwrite" in r.output
    r = run(cli, [*base, "--per-class", "3", "--classes", ",".join(two), "--resume"])
    assert r.exit_code != 0 and "other options" in r.output
    r = run(cli, [*base, "--per-class", "2", "--fill-to", "5"])
    assert r.exit_code != 0 and "choose one of" in r.output
    r = run(cli, [*base, "--per-class", "2", "--classes", "Cat", "--overwrite"])
    assert r.exit_code != 0 and "'Cat' is not a class" in r.output
    # Folds of another digest are refused, by comp synth and by data.synthetic.
    saved = (folded / "folds" / "folds.csv").read_bytes()
    try:
        (folded / "folds" / "folds.csv").write_bytes(saved.replace(b"\n", b"\r\n"))
        r = run(cli, [*base, *pick, "--resume"])
        assert r.exit_code != 0 and "another folds file" in r.output, r.output
        cfg = load_config(folded / "comp.yaml", exp="s", overrides=[*RECIPE, "data.synthetic=g"])
        with pytest.raises(Exception, match="another folds file"):
            train_folds(cfg, folds=[0], echo=lambda s: None, sources=sources(cfg))
    finally:
        (folded / "folds" / "folds.csv").write_bytes(saved)


def test_generator_resumes_to_the_same_weights(tmp_path):
    from comp.techniques.generator import GenSpec, train_generator

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 20)
    spec = GenSpec(size=16, n_classes=3, channels=[8, 8, 16])
    args = dict(batch_size=4, lr=1e-3, seed=1, echo=lambda s: None, block=2)
    straight, info = train_generator(spec, images, labels, 4, state_dir=tmp_path / "a", **args)
    train_generator(spec, images, labels, 2, state_dir=tmp_path / "b", **args)  # "killed" after step 2
    lines = []
    resumed, info_b = train_generator(spec, images, labels, 4, state_dir=tmp_path / "b",
                                      **{**args, "echo": lines.append})
    assert any("resumed the generator at step 2" in s for s in lines) and info_b.step == info.step == 4
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    # --max-minutes: the time budget stops training early and says at which step.
    lines = []
    _, info_c = train_generator(spec, images, labels, 4, state_dir=tmp_path / "c",
                                **{**args, "echo": lines.append, "max_seconds": 1e-9})
    assert info_c.step == 1 and any("time budget" in s and "step 1/4" in s for s in lines), lines


@pytest.mark.slow
def test_gan_trains_on_real_images_resumes_to_the_same_weights_and_makes_images_of_its_size(tmp_path, competition):
    from comp.data.cache import load_images
    from comp.techniques import synth_models
    from comp.techniques.gan import balanced_weights
    from comp.techniques.generator import GenSpec, TrainInfo, save_generator

    df = pd.read_csv(competition / "train.csv", dtype=str).iloc[:48]
    images = load_images([str(competition / "train_images" / f"{i}.png") for i in df["image_id"]], 16, "stretch",
                         10**8, cache="memory", progress=False)
    classes = sorted(df["label"].unique())
    labels = np.array([classes.index(c) for c in df["label"]])
    spec = GenSpec(size=16, n_classes=len(classes), channels=[32, 16, 8, 8], kind="gan")
    args = dict(batch_size=8, lr=2e-4, seed=3, echo=lambda s: None, block=2)
    straight, info = synth_models.train(spec, images, labels, 4, state_dir=tmp_path / "a", **args)
    synth_models.train(spec, images, labels, 2, state_dir=tmp_path / "b", **args)  # "stopped" after step 2
    assert (tmp_path / "b" / "model.safetensors").exists() and (tmp_path / "b" / "optimizer.safetensors").exists()
    lines = []
    resumed, info_b = synth_models.train(spec, images, labels, 4, state_dir=tmp_path / "b",
                                         **{**args, "echo": lines.append})
    assert any("resumed the generator at step 2" in s for s in lines) and info_b.step == info.step == 4
    assert any("steps/s" in s for s in lines), lines  # progress with its cost
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)
    assert not np.array_equal(sa["out.weight"].numpy(), synth_models.gan.Generator(spec).state_dict()["out.weight"])
    # Saved and loaded by kind; an image per (class, seed), of the spec's size, the same image for the same seed.
    save_generator(tmp_path / "generator.safetensors", straight, spec, TrainInfo(4), {})
    model, spec2, _ = synth_models.load(tmp_path / "generator.safetensors")
    assert spec2 == spec
    imgs = synth_models.sample(model, spec2, np.array([0, 1, 0]), np.array([7, 8, 7]))
    assert imgs.shape == (3, 16, 16, 3) and imgs.dtype == np.uint8 and np.array_equal(imgs[0], imgs[2])
    # Class-balanced: the rarest class is drawn as often as the most common one.
    w = balanced_weights(labels).numpy()
    assert np.allclose(np.bincount(labels, weights=w)[np.bincount(labels) > 0], 1.0)


def _write_synth(folder, cfg, frames: dict[int, pd.DataFrame], src_dir):
    """A hand-made folds/synth/E: fold k's images.csv and PNGs copied from ``src_dir``."""
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"folds_digest": folds_digest(cfg)}))
    for k, df in frames.items():
        fd = folder / f"fold_{k}"
        fd.mkdir()
        for i in df["image_id"]:
            shutil.copyfile(src_dir / f"{i}.png", fd / f"{i}.png")
        pd.DataFrame({"id": df["image_id"] + ".png", "class": df["label"], "seed": 0, "step": 0}).to_csv(
            fd / "images.csv", index=False)


@pytest.mark.slow
def test_memorising_generator_cannot_change_fold_0(tmp_path, competition, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from conftest import write_config

    write_config(tmp_path, competition)
    make_folds_file(tmp_path)
    folds = pd.read_csv(tmp_path / "folds" / "folds.csv", dtype=str)
    val0 = folds[folds["fold"] == "0"]
    cfg = load_config(tmp_path / "comp.yaml", exp="base", overrides=RECIPE)
    src = competition / "train_images"
    none = val0.iloc[:0]
    _write_synth(tmp_path / "folds" / "synth" / "mem", cfg, {0: none, 1: val0, 2: val0}, src)
    _write_synth(tmp_path / "folds" / "synth" / "leak", cfg, {0: val0}, src)

    def train(exp, synth, folds_):
        c = load_config(tmp_path / "comp.yaml", exp=exp,
                        overrides=[*RECIPE, *([f"data.synthetic={synth}"] if synth else [])])
        lines = []
        train_folds(c, folds=folds_, echo=lines.append, sources=sources(c))
        return lines

    train("base", None, [0, 1])
    lines = train("syn", "mem", [0, 1])
    assert any(s.startswith(f"fold 1: + {len(val0)} synthetic images") for s in lines), lines
    assert any(s.startswith("fold 0: + 0 synthetic images") for s in lines), lines
    # Fold 0 never saw fold 1's and 2's folders: bit-identical weights and OOF, so the same CV.
    assert _same_weights(_weights(tmp_path, "base", 0), _weights(tmp_path, "syn", 0))
    oof = [(tmp_path / "runs" / e / "fold_0" / "oof.csv").read_bytes() for e in ("base", "syn")]
    assert oof[0] == oof[1]
    assert not _same_weights(_weights(tmp_path, "base", 1), _weights(tmp_path, "syn", 1))  # fold 1 used them
    # What the per-fold folders guard against: the same copies in fold 0's own folder raise its score.
    train("leak", "leak", [0])
    score = {e: json.loads((tmp_path / "runs" / e / "fold_0" / "done.json").read_text())["score"]
             for e in ("base", "leak")}
    assert score["leak"] > score["base"] + 0.03, score


def test_synthetic_key_is_typed_plugged_in_and_refused_where_it_cannot_apply(folded):
    from comp.config import ConfigError
    from comp.techniques.plugins import SynthSource
    from comp.train.refit import plan_full
    from comp.train.rows import check_sources

    cfg = load_config(folded / "comp.yaml", exp="s", overrides=["data.synthetic=g"])
    assert cfg.data.synthetic == "g" and [type(s) for s in sources(cfg)] == [SynthSource]
    with pytest.raises(ConfigError, match="data.synthetic is set, but no source"):
        check_sources(cfg, [])
    with pytest.raises(ConfigError, match="--full: data.synthetic"):
        plan_full(cfg)
    with pytest.raises(ConfigError, match="data.synthetic"):
        load_config(folded / "comp.yaml", overrides=["data.synthetic=[1, 2]"])


def test_default_amount_tops_each_class_up_to_the_median():
    """With neither --per-class nor --fill-to (comp synth's default), each chosen class is topped up to the median
    class count. The default once crashed before training (a median of no counts) and no test ran it."""
    from comp.techniques.synth import SynthOptions, check_amount, wanted

    check_amount(SynthOptions())  # the default is a valid choice
    assert wanted(np.array([10, 2, 6]), ["a", "b", "c"], SynthOptions()).tolist() == [0, 4, 0]
    assert wanted(np.array([10, 2, 6]), ["a", "b", "c"], SynthOptions(classes=["a"])).tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="--per-class N"):
        check_amount(SynthOptions(per_class=2, fill_to=5))
