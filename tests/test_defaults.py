"""Defaults fitted to the data (input.size from the headers, lr/epochs by how the model starts) and
model.stem_stride (small images keep their resolution through the stem)."""

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from train_utils import folded_workdir, quiet

from comp.config import FINETUNE, SCRATCH, load_config
from comp.data.sizes import summarize_sizes
from comp.train.defaults import fit_defaults, fitted_size
from comp.train.model import create_model


def test_fitted_size_rounds_and_clamps():
    assert fitted_size(28, gpu=False) == 32
    assert fitted_size(10, gpu=True) == 32
    assert fitted_size(70, gpu=True) == 64 and fitted_size(81, gpu=True) == 96
    assert fitted_size(600, gpu=True) == 384 and fitted_size(600, gpu=False) == 224


def test_sizes_from_real_headers(tmp_path, competition):
    paths = sorted(str(p) for p in (competition / "train_images").glob("*.png"))
    s = summarize_sizes(paths)
    assert (s.median_w, s.median_h, s.median_short) == (28, 28, 28) or s.median_short == 8  # Fashion-MNIST / digits
    for i, (w, h) in enumerate([(640, 480), (500, 700), (800, 300)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f"{i}.jpg")
    s = summarize_sizes(sorted(str(p) for p in tmp_path.glob("*.jpg")))
    assert (s.median_w, s.median_h, s.median_short) == (640, 480, 480)


def test_unset_size_fitted_and_user_value_wins(workdir, competition):
    paths = sorted(str(p) for p in (competition / "train_images").glob("*.png"))
    cfg = load_config(workdir / "comp.yaml", exp="fit")
    assert cfg.input.size is None and cfg.train.lr == SCRATCH["lr"] and cfg.train.epochs == SCRATCH["epochs"]
    said = []
    fit_defaults(cfg, lambda: paths, echo=said.append, workers=0)
    assert cfg.input.size == 32
    assert any(s.startswith("input.size 32 (median image 28x28") and "set input.size to change" in s for s in said)
    assert any(s.startswith("train.batch_size 64 (no GPU") for s in said)
    assert any(s.startswith("train.num_workers 0") for s in said)
    from comp.accel import has_accelerator

    if not has_accelerator():  # a CPU: 128 from 2048 rows (1.6x the images/s of 64), 64 below
        big = load_config(workdir / "comp.yaml", exp="fit-big")
        fit_defaults(big, lambda: paths * 4, echo=said.append)
        assert big.train.batch_size == 128 and cfg.train.batch_size == 64
    cfg = load_config(workdir / "comp.yaml", exp="fit", overrides=["input.size=48", "model.pretrained=true"])
    fit_defaults(cfg, lambda: paths, echo=quiet)
    assert cfg.input.size == 48 and "input.size" not in cfg.derived
    assert cfg.train.lr == FINETUNE["lr"] and cfg.train.epochs == FINETUNE["epochs"]
    cfg = load_config(workdir / "comp.yaml", exp="fit", overrides=["train.lr=0.01"])
    assert cfg.train.lr == 0.01 and "train.lr" not in cfg.derived


def test_stem_stride_keeps_resolution():
    cfg = load_config("missing.yaml", require_data=False, overrides=["model.name=resnet18"])
    plain = create_model(cfg, 10)
    cfg.model.stem_stride = 1
    sharp = create_model(cfg, 10)
    x = torch.zeros(2, 3, 32, 32)
    assert plain.forward_features(x).shape[-1] == 1  # 32 / 32
    assert sharp.forward_features(x).shape[-1] == 4  # 32 / 8: the stem kept all 32 px
    sharp.load_state_dict(plain.state_dict())  # same parameters: fold weights load either way


@pytest.mark.slow
def test_stem_stride_trains_and_predicts(tmp_path_factory, competition):
    from comp.infer.models import find_fold_models, load_model
    from comp.train import train_fold

    with folded_workdir(tmp_path_factory, competition, "stem") as wd:
        cfg = load_config(wd / "comp.yaml", exp="stem", overrides=[
            "model.name=test_resnet", "model.stem_stride=1", "train.epochs=2", "train.batch_size=32"])
        out = train_fold(cfg, 0, echo=quiet)
        assert out["score"] > 0.15 and cfg.input.size == 32
        recorded = yaml.safe_load((wd / "runs" / "stem" / "config.yaml").read_text())
        assert recorded["input"]["size"] == 32 and recorded["model"]["stem_stride"] == 1  # the fitted value is kept
        (fm,) = find_fold_models(wd / "runs" / "stem")[:1]
        assert fm.meta["stem_stride"] == 1 and fm.meta["input_size"] == 32
        model = load_model(cfg, fm, torch.device("cpu"))
        assert model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-1] > 1


@pytest.mark.slow
def test_size_and_epochs_fitted_to_the_machine_and_the_budget(monkeypatch):
    """Images above 64 px: a throughput probe at each candidate size, the largest that affords half the default
    epochs within train.fit_minutes (the estimate printed with it); a tiny budget gets the smallest size."""
    from comp.config import from_dict
    from comp.train import probe
    from comp.train.fit import fit_to_machine

    monkeypatch.setattr(probe, "PROBE_MIN_S", 0.05)  # short probes: the choice, not the figures, is tested
    roomy = from_dict({"model": {"name": "test_resnet", "pretrained": False}, "train": {"fit_minutes": 600}})
    why = fit_to_machine(roomy, 300, 3, 10, 128, "median image 500x400")
    assert roomy.input.size == 128 and roomy.train.epochs == SCRATCH["epochs"]
    assert "3 folds x 30 epochs" in why and "min in all" in why and "64px" in why and "96px" in why, why
    assert roomy.train.batch_size in (32, 64, 128) and "the fastest here at 96px" in roomy.derived["train.batch_size"]
    assert isinstance(roomy.train.channels_last, bool) and "channels_last at 96px" in \
        roomy.derived["train.channels_last"]
    tight = from_dict({"model": {"name": "test_resnet", "pretrained": False},
                       "train": {"fit_minutes": 0.2, "batch_size": 32, "channels_last": False}})
    why = fit_to_machine(tight, 30000, 3, 10, 128, "")
    assert tight.input.size == 64 and 1 <= tight.train.epochs < SCRATCH["epochs"], why
    assert "what train.fit_minutes affords at 64px" in tight.derived["train.epochs"]
    assert "train.batch_size" not in tight.derived and "train.channels_last" not in tight.derived  # the user's win
    mine = from_dict({"model": {"name": "test_resnet", "pretrained": False},
                      "train": {"fit_minutes": 0.2, "epochs": 2, "batch_size": 32, "channels_last": False}})
    fit_to_machine(mine, 30000, 3, 10, 128, "")
    assert mine.train.epochs == 2 and "train.epochs" not in mine.derived


def test_a_fine_tuned_size_needs_three_epochs_a_fold_as_in_comp_auto():
    """comp train's size rule for pretrained weights is comp auto's: the size whose folds afford 3 epochs (a
    fine-tuned backbone needs pixels more than epochs), where from scratch it is half the default epochs."""
    from comp.config import FINETUNE, from_dict
    from comp.orchestrate.auto_plan import MIN_FOLD_EPOCHS
    from comp.train.fit import min_fold_epochs

    tuned = from_dict({"model": {"name": "test_resnet", "pretrained": True}})
    assert min_fold_epochs(tuned, FINETUNE["epochs"]) == 3 == MIN_FOLD_EPOCHS["finetune"]
    scratch = from_dict({"model": {"name": "test_resnet", "pretrained": False}})
    assert min_fold_epochs(scratch, SCRATCH["epochs"]) == 15


def test_a_rerun_that_leaves_fitted_keys_unset_is_no_config_change(workdir, competition):
    """The fitted values are recorded in runs/E/config.yaml; a later command with the same (unset) keys compares
    equal (comp launch's check before its jobs), and a resumed run takes the recorded values back."""
    from comp import runs

    paths = sorted(str(p) for p in (competition / "train_images").glob("*.png"))
    cfg = load_config(workdir / "comp.yaml", exp="again")
    fit_defaults(cfg, lambda: paths, echo=quiet)
    cfg.train.channels_last, cfg.train.epochs = True, 7  # as a machine fit would have recorded them
    runs.prepare_run(cfg, echo=quiet)
    fresh = load_config(workdir / "comp.yaml", exp="again")
    assert fresh.input.size is None and fresh.train.batch_size is None and fresh.train.channels_last is None
    assert runs.check_run(fresh) == []
    fit_defaults(fresh, lambda: paths, echo=quiet)
    assert (fresh.train.epochs, fresh.train.channels_last, fresh.input.size) == (7, True, cfg.input.size)
    assert "as recorded" in fresh.derived["train.epochs"]
    with pytest.raises(ValueError, match=r"train.batch_size: \d+ -> 7"):
        runs.check_run(load_config(workdir / "comp.yaml", exp="again", overrides=["train.batch_size=7"]))
