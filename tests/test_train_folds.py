"""One fold, one training context: a fold's state holds its own objects only, a finished fold is released from
memory and leaves no state behind, a state of another fold or config is refused, and `comp clean` sizes/removes
what is left."""

from __future__ import annotations

import gc
import json
import shutil
import weakref

import pytest
from click.testing import CliRunner
from train_utils import make_folds_file, quiet, tiny_cfg

import comp.train.fold
from comp.cli import cli
from comp.config import ConfigError
from comp.train.session import train_folds


@pytest.fixture
def folded(workdir):
    make_folds_file(workdir)
    return workdir


@pytest.mark.slow
def test_fold_2_state_holds_one_model_and_one_optimizer(folded):
    res = train_folds(tiny_cfg(folded, "one", "train.epochs=1", "train.keep_state=true"), [0, 1, 2], echo=quiet)
    state = folded / "runs" / "one" / "fold_2" / "state"
    assert sorted(p.name for p in state.glob("model*")) == ["model.safetensors"]
    assert sorted(p.name for p in state.glob("optimizer*")) == ["optimizer.bin"]
    assert json.loads((state / "trainer.json").read_text())["fold"] == 2
    # Each fold writes the same amount per epoch (fold 2 used to write three models and three optimizers).
    sizes = [res["folds"][k]["state_bytes_per_epoch"] for k in range(3)]
    assert sizes[0] > 0 and max(sizes) < 1.05 * min(sizes), sizes


@pytest.mark.slow
def test_a_finished_fold_is_released_and_its_state_removed(folded, monkeypatch):
    refs, alive_at_start = [], []
    real = comp.train.fold.create_model

    def create_model(cfg, num_classes):  # the real factory; only remembers a weak reference to each model
        alive_at_start.append([r() is not None for r in refs])
        model = real(cfg, num_classes)
        refs.append(weakref.ref(model))
        return model

    monkeypatch.setattr(comp.train.fold, "create_model", create_model)
    msgs = []
    train_folds(tiny_cfg(folded, "rel", "train.epochs=1", "train.ema=true"), [0, 1], echo=msgs.append)
    assert alive_at_start == [[], [False]], "fold 0's model was still alive when fold 1 started"
    gc.collect()
    assert refs[1]() is None
    for k in (0, 1):
        fd = folded / "runs" / "rel" / f"fold_{k}"
        assert not (fd / "state").exists()
        assert {"done.json", "model.safetensors", "metrics.csv", "oof.csv"} <= {p.name for p in fd.iterdir()}
    assert any("written per epoch, removed" in m for m in msgs)


@pytest.mark.slow
def test_a_state_of_another_fold_or_config_is_refused_and_clean_sizes_and_removes(folded):
    train_folds(tiny_cfg(folded, "fp", "train.stop_after_epochs=1"), [0], echo=quiet)
    run = folded / "runs" / "fp"
    shutil.copytree(run / "fold_0" / "state", run / "fold_1" / "state")
    with pytest.raises(ConfigError, match=r"fold_1/state holds the state of fold 0, not of fold 1.*--overwrite"):
        train_folds(tiny_cfg(folded, "fp"), [1], resume=True, echo=quiet)
    trainer = run / "fold_0" / "state" / "trainer.json"
    rec = json.loads(trainer.read_text())
    trainer.write_text(json.dumps(dict(rec, config_digest="0123456789abcdef")))
    with pytest.raises(ConfigError, match=r"saved with a different config"):
        train_folds(tiny_cfg(folded, "fp"), [0], resume=True, echo=quiet)
    trainer.write_text(json.dumps(rec))

    # fold 1 finishes with its state kept; fold 0 stays unfinished.
    train_folds(tiny_cfg(folded, "fp", "train.keep_state=true"), [1], overwrite=True, echo=quiet)
    r = CliRunner().invoke(cli, ["clean", "--exp", "fp", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "would remove runs/fp/fold_1/state (" in r.output and "kept runs/fp/fold_0/state" in r.output
    assert "runs/.cache" in r.output and "would free" in r.output
    assert (run / "fold_1" / "state").exists()
    r = CliRunner().invoke(cli, ["clean", "--exp", "fp"])
    assert r.exit_code == 0, r.output
    assert not (run / "fold_1" / "state").exists() and (run / "fold_0" / "state").exists()
    assert (run / "fold_1" / "model.safetensors").exists()
    r = CliRunner().invoke(cli, ["clean", "--exp", "nope"])
    assert r.exit_code == 1 and "runs/nope does not exist" in r.output
