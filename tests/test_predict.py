import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from accelerate import Accelerator

from comp.config import ConfigError, load_config
from comp.data.cache import load_images
from comp.data.competition import DataError, class_names, load_test, load_train
from comp.infer.models import find_fold_models, predict_images
from comp.infer.predict import predict
from comp.train.model import create_model, normalization, save_checkpoint

SIZE = 32
MODEL = "resnet10t"


def make_run(workdir: Path, exp: str = "e1", n_folds: int = 2, seed: int = 0) -> dict:
    """Fold models as the trainer leaves them (untrained resnet10t, 32px) and a constructed OOF."""
    cfg = load_config(workdir / "comp.yaml", exp=exp, overrides=[f"model.name={MODEL}", f"input.size={SIZE}"])
    train = load_train(cfg)
    classes = class_names(train["label"])
    torch.manual_seed(seed)
    models = {}
    for k in range(n_folds):
        m = create_model(cfg, len(classes)).eval()
        mean, std = normalization(cfg, m)
        meta = {"classes": classes, "input_size": SIZE, "resize": "stretch", "mean": mean, "std": std,
                "model_name": MODEL, "epoch": 1, "score": 0.0, "fold": k, "exp": exp}
        save_checkpoint(workdir / "runs" / exp / f"fold_{k}" / "model.safetensors", m, meta)
        models[k] = (m, mean, std)
    folds = np.arange(len(train)) % n_folds
    oof = pd.DataFrame({"image_id": train["id"], "fold": folds, "label": train["label"]})
    for c in classes:
        oof[c] = 1.0 / len(classes)
    oof.to_csv(workdir / "runs" / exp / "oof.csv", index=False)
    return {"cfg": cfg, "classes": classes, "models": models, "train": train, "folds": folds}


@torch.inference_mode()
def reference_probs(model, mean, std, images: np.ndarray) -> np.ndarray:
    """Plain torch, no comp code: normalise, forward, softmax."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return model(x).softmax(1).numpy()


def test_predict_writes_fold_averaged_test_csv(workdir):
    run = make_run(workdir)
    cfg = run["cfg"]
    out = predict(cfg, tta=["identity"], echo=lambda s: None)

    path = workdir / "runs/e1/test.csv"
    df = pd.read_csv(path, dtype={"image_id": str})
    assert list(df.columns) == ["image_id", *run["classes"]]
    test = load_test(cfg)
    assert df["image_id"].tolist() == test["id"].tolist()  # sample_submission order, each id once
    probs = df[run["classes"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)

    images = load_images(test["path"].tolist(), SIZE, progress=False)
    expect = np.mean([reference_probs(*run["models"][k], images) for k in (0, 1)], axis=0)
    np.testing.assert_allclose(probs, expect, atol=1e-5)
    np.testing.assert_allclose(out[run["classes"]].to_numpy(), expect, atol=1e-5)
    assert out.attrs["timing"].images == 2 * len(test)

    # issue 35: the same request again is a no-op (nothing written); another one is refused naming --overwrite
    stamp, said = path.stat().st_mtime_ns, []
    again = predict(cfg, tta=["identity"], echo=said.append)
    assert "nothing to do" in said[-1] and path.stat().st_mtime_ns == stamp and len(again) == len(df)
    with pytest.raises(FileExistsError, match="--overwrite"):
        predict(cfg, tta=["identity", "hflip"], echo=lambda s: None)
    predict(cfg, tta=["identity", "hflip"], overwrite=True, echo=lambda s: None)
    both = pd.read_csv(path)[run["classes"]].to_numpy()
    flipped = images[:, :, ::-1].copy()
    expect_h = np.mean([reference_probs(*run["models"][k], flipped) for k in (0, 1)], axis=0)
    np.testing.assert_allclose(both, (expect + expect_h) / 2, atol=1e-5)


def test_flipped_images_through_hflip_view_match_originals(workdir):
    run = make_run(workdir, n_folds=1)
    model, mean, std = run["models"][0]
    test = load_test(run["cfg"])
    images = load_images(test["path"].tolist(), SIZE, progress=False)
    flipped = np.ascontiguousarray(images[:, :, ::-1])
    acc = Accelerator(cpu=True)
    rows = np.arange(len(images))
    a = predict_images(model, images, rows, ["identity"], mean, std, acc, batch_size=64)
    b = predict_images(model, flipped, rows, ["hflip"], mean, std, acc, batch_size=64)
    c = predict_images(model, flipped, rows, ["identity"], mean, std, acc, batch_size=64)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - c).max() > 1e-3  # the model is not flip-invariant, so the check above means something


def test_predict_oof_rewrites_each_folds_validation_rows(workdir):
    run = make_run(workdir)
    cfg = run["cfg"]
    before = pd.read_csv(workdir / "runs/e1/oof.csv", dtype=str, keep_default_na=False)
    predict(cfg, tta=["identity", "vflip"], oof=True, echo=lambda s: None)
    after = pd.read_csv(workdir / "runs/e1/oof.csv", dtype=str, keep_default_na=False)
    assert after[["image_id", "fold", "label"]].equals(before[["image_id", "fold", "label"]])
    assert (workdir / "runs/e1/oof.train.csv").read_text() == (
        before.to_csv(index=False, lineterminator="\n"))
    train = run["train"]
    images = load_images(train["path"].tolist(), SIZE, progress=False)
    probs = after[run["classes"]].astype(float).to_numpy()
    for k in (0, 1):
        rows = np.flatnonzero(run["folds"] == k)
        m = run["models"][k]
        expect = (reference_probs(*m, images[rows]) + reference_probs(*m, images[rows][:, ::-1].copy())) / 2
        np.testing.assert_allclose(probs[rows], expect, atol=1e-5)


def test_predict_refuses_bad_input(workdir):
    run = make_run(workdir, n_folds=3)
    cfg = run["cfg"]
    with pytest.raises(ConfigError, match=r"--tta: Unknown TTA view 'flip'.*'hflip'"):
        predict(cfg, tta=["flip"], echo=lambda s: None)
    (workdir / "runs/e1/fold_2/model.safetensors").unlink()
    with pytest.raises(DataError, match=r"no model for fold\(s\) \[2\].*comp train --exp e1 --fold 2"):
        predict(cfg, echo=lambda s: None)
    cfg2 = load_config(workdir / "comp.yaml", exp="nothing")
    with pytest.raises(DataError, match="no fold models.*comp train --exp nothing"):
        predict(cfg2, echo=lambda s: None)
    assert [m.fold for m in find_fold_models(workdir / "runs/e1")] == [0, 1]


@pytest.mark.slow
def test_predict_under_two_processes_matches_one(workdir):
    make_run(workdir)
    venv = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(venv / "torchrun"), "--nproc_per_node", "2", "-m", "comp", "predict", "--exp", "e1",
           "--tta", "identity,hflip", "--set", "infer.batch_size=16"]
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stdout
    multi = pd.read_csv(workdir / "runs/e1/test.csv", dtype={"image_id": str})
    cfg = load_config(workdir / "comp.yaml", exp="e1")
    single = predict(cfg, tta=["identity", "hflip"], overwrite=True, echo=lambda s: None)
    assert multi["image_id"].tolist() == single["image_id"].tolist()  # 150 ids: 16-row batches end padded
    assert multi["image_id"].is_unique
    np.testing.assert_allclose(multi.iloc[:, 1:].to_numpy(), single.iloc[:, 1:].to_numpy(), atol=1e-5)
