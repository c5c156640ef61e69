"""`comp train` after `comp predict --oof`: a no-op re-run keeps the TTA OOF; a retrain drops its records."""

import json

import pytest
from train_utils import make_folds_file, quiet, tiny_cfg

from comp.infer.predict import predict
from comp.train.session import train_folds


@pytest.mark.slow
def test_rerun_keeps_predict_oof_and_retrain_forgets_its_views(workdir):
    make_folds_file(workdir)
    cfg = tiny_cfg(workdir, "keep", "train.epochs=1")
    train_folds(cfg, echo=quiet)
    run = workdir / "runs" / "keep"
    predict(cfg, tta=["identity", "hflip"], oof=True, echo=quiet, progress=False)
    tta_oof = (run / "oof.csv").read_bytes()
    assert tta_oof != (run / "oof.train.csv").read_bytes()  # predict --oof rewrote it with TTA views

    again = train_folds(cfg, echo=quiet)  # every fold finished: nothing trains, nothing is rewritten
    assert (run / "oof.csv").read_bytes() == tta_oof
    assert again["cv_macro_f1"] is not None

    train_folds(cfg, folds=[0], overwrite=True, echo=quiet)  # a retrain assembles a plain OOF again
    assert (run / "oof.csv").read_bytes() != tta_oof
    assert not (run / "oof.train.csv").exists()
    info = json.loads((run / "predict.json").read_text())
    assert "oof_views" not in info and info["test_views"] == ["identity", "hflip"]
