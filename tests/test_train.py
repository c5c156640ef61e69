"""`comp train`: short real runs (test_resnet, 32 px, 600 Fashion-MNIST images, 3 folds) and their files."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from train_utils import TINY, make_folds_file, quiet, read_oof, tiny_cfg

from comp.cli import cli
from comp.config import ConfigError
from comp.data.competition import class_names
from comp.runs import METRICS_COLUMNS
from comp.tasks.losses import LOSSES
from comp.train.model import create_model, load_checkpoint
from comp.train.session import train_fold, train_folds

CHANCE = 0.1  # 10 balanced classes


@pytest.fixture
def folded(workdir):
    make_folds_file(workdir)
    return workdir


def check_fold_files(workdir, exp, fold, epochs, classes):
    fd = workdir / "runs" / exp / f"fold_{fold}"
    metrics = pd.read_csv(fd / "metrics.csv")
    assert list(metrics.columns) == METRICS_COLUMNS
    assert metrics["epoch"].tolist() == list(range(1, epochs + 1))
    assert (metrics["images_per_s"] > 0).all() and (metrics["seconds"] > 0).all()
    meta = json.loads((fd / "model.json").read_text())
    for key in ("classes", "input_size", "resize", "mean", "std", "model_name", "epoch", "score", "fold", "exp"):
        assert key in meta
    assert meta["classes"] == classes and meta["input_size"] == 32 and meta["fold"] == fold
    assert meta["score"] == pytest.approx(metrics["val_macro_f1"].max())
    oof = read_oof(fd / "oof.csv")
    assert list(oof.columns) == ["image_id", "fold", "label", *classes]
    assert (oof["fold"] == fold).all()
    assert np.allclose(oof[classes].sum(1), 1, atol=1e-5)
    pred = np.asarray(classes)[oof[classes].to_numpy().argmax(1)]
    assert f1_score(oof["label"], pred, average="macro") == pytest.approx(meta["score"], abs=1e-6)
    assert (fd / "curves.png").stat().st_size > 1000
    return meta, oof


@pytest.mark.slow
@pytest.mark.parametrize("loss", LOSSES)
def test_short_run_per_loss_writes_the_files_and_beats_chance(folded, competition, loss):
    cfg = tiny_cfg(folded, f"l_{loss.replace('+', '_')}", f"train.loss={loss}")
    res = train_folds(cfg, [0], echo=quiet)
    classes = class_names(pd.read_csv(competition / "train.csv", dtype=str)["label"])
    meta, oof = check_fold_files(folded, cfg.exp, 0, 2, classes)
    assert res["folds"][0]["score"] == pytest.approx(meta["score"])
    assert meta["score"] > 2 * CHANCE, f"{loss}: macro F1 {meta['score']:.3f} is not above chance"
    # The checkpoint loads into the model the predict step builds, and reproduces the OOF probabilities.
    model = create_model(cfg, len(classes))
    load_checkpoint(folded / "runs" / cfg.exp / "fold_0" / "model.safetensors", model)
    assert res["cv_macro_f1"] is None  # folds 1 and 2 are not trained yet


@pytest.mark.slow
def test_all_folds_assemble_oof_then_skip_finished_folds(folded, competition):
    cfg = tiny_cfg(folded, "all", "train.epochs=1")
    msgs = []
    res = train_folds(cfg, echo=msgs.append)
    train = pd.read_csv(competition / "train.csv", dtype=str, keep_default_na=False)
    classes = class_names(train["label"])
    oof = read_oof(folded / "runs" / "all" / "oof.csv")
    assert oof["image_id"].tolist() == train["image_id"].tolist()  # every row exactly once, in train.csv order
    assert oof["label"].tolist() == train["label"].tolist()
    assert sorted(oof["fold"].unique()) == [0, 1, 2]
    pred = np.asarray(classes)[oof[classes].to_numpy().argmax(1)]
    assert res["cv_macro_f1"] == pytest.approx(f1_score(oof["label"], pred, average="macro"))
    assert any("CV macro F1" in m for m in msgs)
    banner = next(m for m in msgs if m.startswith("fold 0:") and "model test_resnet" in m)
    for setting in ("input 32px", "epochs 1", "batch 32", "lr 0.003 adamw", "scheduler cosine, warmup 0",
                    "loss ce", "precision no", "device cpu", "processes 1"):
        assert setting in banner
    conf = yaml.safe_load((folded / "runs" / "all" / "config.yaml").read_text())
    assert conf["model"]["name"] == "test_resnet" and conf["train"]["epochs"] == 1
    assert {"comp", "torch", "timm"} <= set(conf["versions"]) and "git_commit" in conf
    # A second run skips every finished fold and reports the same CV score.
    msgs.clear()
    again = train_folds(cfg, echo=msgs.append)
    assert sum("already finished" in m for m in msgs) == 3
    assert again["cv_macro_f1"] == pytest.approx(res["cv_macro_f1"])


@pytest.mark.slow
def test_changed_config_is_refused_unless_overwrite(folded):
    train_folds(tiny_cfg(folded, "cfgx", "train.epochs=1"), [0], echo=quiet)
    changed = tiny_cfg(folded, "cfgx", "train.epochs=1", "train.lr=0.01")
    with pytest.raises(ConfigError, match=r"different config \(train\.lr: 0\.003 -> 0\.01\).*--overwrite"):
        train_folds(changed, [0], echo=quiet)
    res = train_folds(changed, [0], overwrite=True, echo=quiet)
    assert res["folds"][0]["epoch"] == 1
    conf = yaml.safe_load((folded / "runs" / "cfgx" / "config.yaml").read_text())
    assert conf["train"]["lr"] == 0.01

    # A run written by an older comp lacks the keys added since: at their defaults they are no change.
    path = folded / "runs" / "cfgx" / "config.yaml"
    del conf["train"]["teacher"], conf["train"]["distill_t"], conf["data"]["pseudo"]
    path.write_text(yaml.safe_dump(conf))
    assert train_folds(changed, [0], echo=quiet)["folds"][0]["epoch"] == 1  # skipped as finished, not refused
    path.write_text(yaml.safe_dump(conf))
    with pytest.raises(ConfigError, match=r"different config \(train\.distill_t: '<missing>' -> 3\.0\)"):
        train_folds(tiny_cfg(folded, "cfgx", "train.epochs=1", "train.lr=0.01", "train.distill_t=3"), [0],
                    echo=quiet)


@pytest.mark.slow
def test_fold_epochs_train_the_later_folds_longer_and_change_only_for_folds_not_started(folded):
    train_folds(tiny_cfg(folded, "fe", "train.epochs=1"), [0], echo=quiet)
    msgs = []
    res = train_folds(tiny_cfg(folded, "fe", "train.epochs=1", "train.fold_epochs={1: 2}"), [0, 1], echo=msgs.append)
    assert res["folds"][0]["epochs_run"] == 1 and res["folds"][1]["epochs_run"] == 2  # fold 0 kept, not refused
    assert any(m.startswith("fold 1:") and "epochs 2 |" in m for m in msgs)
    conf = yaml.safe_load((folded / "runs" / "fe" / "config.yaml").read_text())
    assert conf["train"]["epochs"] == 1 and conf["train"]["fold_epochs"] == {1: 2}
    with pytest.raises(ConfigError, match=r"different config \(train\.fold_epochs\.0: '<missing>' -> 3\)"):
        train_folds(tiny_cfg(folded, "fe", "train.epochs=1", "train.fold_epochs={0: 3, 1: 2}"), [2], echo=quiet)
    with pytest.raises(ConfigError, match=r"train\.fold_epochs: 1: 0 must map a fold number"):
        tiny_cfg(folded, "fe", "train.fold_epochs={1: 0}")


@pytest.mark.slow
def test_interrupted_fold_needs_resume_or_overwrite(folded):
    cfg = tiny_cfg(folded, "intr", "train.stop_after_epochs=1")
    res = train_folds(cfg, [0], echo=quiet)
    assert res["interrupted"] and not (folded / "runs" / "intr" / "fold_0" / "done.json").exists()
    with pytest.raises(ConfigError, match=r"interrupted run \(epoch 1 of 2.*--resume.*--overwrite"):
        train_folds(tiny_cfg(folded, "intr"), [0], echo=quiet)
    with pytest.raises(ConfigError, match="one of them"):
        train_folds(tiny_cfg(folded, "intr"), [0], resume=True, overwrite=True, echo=quiet)


@pytest.mark.slow
def test_options_together_class_weights_balanced_sampler_accum_clip_ema_freeze(folded):
    cfg = tiny_cfg(
        folded, "opts", "train.class_weights=effective_num", "train.sampler=balanced", "train.accum_steps=2",
        "train.grad_clip=1.0", "train.ema=true", "train.ema_decay=0.9", "train.channels_last=true",
        "train.label_smoothing=0.1", "augment.preset=heavy", "augment.mixup=0.2", "augment.cutmix=1.0",
        "model.freeze_stages=1", "model.drop_rate=0.1", "train.optimizer=sgd", "train.lr=0.05",
        "train.scheduler=step", "train.epochs=3", "train.patience=1", "train.keep_state=true",
    )
    res = train_folds(cfg, [0], echo=quiet)
    fd = folded / "runs" / "opts" / "fold_0"
    ema = pd.read_csv(fd / "metrics_ema.csv")
    assert list(ema.columns) == METRICS_COLUMNS and len(ema) == res["folds"][0]["epochs_run"]
    # freeze_stages=1: the stem and the first stage keep their initial weights.
    torch.manual_seed(cfg.train.seed)  # the trainer seeds the same way, so these are its initial weights
    init = create_model(cfg, 10).state_dict()
    trained = load_file(str(fd / "state" / "model.safetensors"))
    assert np.array_equal(trained["conv1.0.weight"].numpy(), init["conv1.0.weight"].numpy())
    assert not np.array_equal(trained["fc.weight"].numpy(), init["fc.weight"].numpy())
    assert json.loads((fd / "model.json").read_text())["ema"] in (True, False)


@pytest.mark.slow
def test_freeze_epochs_trains_only_the_head_first(folded):
    cfg = tiny_cfg(folded, "frz", "model.freeze_epochs=1", "train.stop_after_epochs=1")
    train_folds(cfg, [0], echo=quiet)
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg, 10)
    init = model.state_dict()
    after1 = load_file(str(folded / "runs" / "frz" / "fold_0" / "state" / "model.safetensors"))
    conv = [k for k, _ in model.named_parameters() if not k.startswith("fc.")]  # BN running stats still move
    assert conv and all(np.array_equal(after1[k].numpy(), init[k].numpy()) for k in conv)
    assert not np.array_equal(after1["fc.weight"].numpy(), init["fc.weight"].numpy())
    train_folds(tiny_cfg(folded, "frz", "model.freeze_epochs=1", "train.keep_state=true"), [0], resume=True,
                echo=quiet)
    after2 = load_file(str(folded / "runs" / "frz" / "fold_0" / "state" / "model.safetensors"))
    assert not all(np.array_equal(after2[k].numpy(), init[k].numpy()) for k in conv)


@pytest.mark.parametrize(("sets", "match"), [
    (["train.loss=hinge"], r"train\.loss: unknown loss 'hinge'"),
    (["train.optimizer=adamz"], r"train\.optimizer: unknown optimizer 'adamz'"),
    (["train.scheduler=cosin"], r"train\.scheduler: unknown scheduler 'cosin'"),
    (["train.class_weights=inverted"], r"train\.class_weights: unknown method"),
    (["model.name=resnet_nope"], r"model\.name: unknown timm model"),
    (["model.freeze_stages=9"], r"model\.freeze_stages=9, but test_resnet has 4 stages"),
    (["model.freeze_epochs=2"], r"model\.freeze_epochs must be smaller than train\.epochs"),
    (["train.precision=fp16"], r"train\.precision: fp16 needs a GPU"),
    (["train.trackers=[neptune]"], r"train\.trackers: unknown tracker 'neptune'"),
    (["augment.pipeline={transform: {__class_fullname__: Nope}}"], r"augment\.pipeline"),
])
def test_config_errors_name_the_key(folded, sets, match):
    with pytest.raises(ConfigError, match=match):
        train_folds(tiny_cfg(folded, "bad", *sets), [0], echo=quiet)


def test_unknown_fold_and_stale_folds_file(folded):
    with pytest.raises(ConfigError, match=r"--fold 7: .* has folds \[0, 1, 2\]"):
        train_folds(tiny_cfg(folded, "f7"), [7], echo=quiet)
    folds = pd.read_csv(folded / "folds" / "folds.csv", dtype=str)
    folds.iloc[1:].to_csv(folded / "folds" / "folds.csv", index=False)
    with pytest.raises(Exception, match=r"1 train rows have no fold .*comp folds --overwrite"):
        train_folds(tiny_cfg(folded, "stale"), [0], echo=quiet)


@pytest.mark.slow
def test_cli_train_and_lr_find(folded):
    sets = [a for s in TINY for a in ("--set", s)]
    r = CliRunner().invoke(cli, ["train", "--exp", "cli", "--fold", "1", *sets, "--set", "train.epochs=1"])
    assert r.exit_code == 0, r.output
    assert "fold 1: best macro F1" in r.output and "processes 1" in r.output
    assert (folded / "runs" / "cli" / "fold_1" / "model.safetensors").exists()
    r = CliRunner().invoke(cli, ["train", "--exp", "cli", *sets])
    assert r.exit_code == 2 and "--all-folds" in r.output
    r = CliRunner().invoke(cli, ["train", "--exp", "cli", "--fold", "0", *sets, "--set", "train.loss=hinge"])
    assert r.exit_code == 1 and "train.loss" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["lr-find", "--exp", "cli", "--steps", "30", *sets])
    assert r.exit_code == 0, r.output
    assert "suggested lr" in r.output
    lr = pd.read_csv(folded / "runs" / "cli" / "lr_find.csv")
    assert list(lr.columns) == ["lr", "loss", "smoothed"] and len(lr) >= 10
    assert (lr["lr"].diff().dropna() > 0).all()
    assert (folded / "runs" / "cli" / "lr_find.png").stat().st_size > 1000


@pytest.mark.slow
def test_train_fold_api_and_tensorboard_tracker(folded):
    cfg = tiny_cfg(folded, "tb", "train.epochs=1", "train.trackers=[tensorboard]", "train.scheduler=plateau")
    summary = train_fold(cfg, 2, echo=quiet)
    assert summary["fold"] == 2 and summary["epochs_run"] == 1 and summary["score"] > CHANCE
    events = list((folded / "runs" / "tb").rglob("events.out.tfevents.*"))
    assert events, "tensorboard wrote no event file under runs/tb"


def test_exactly_once_drops_gather_padding_and_refuses_lost_rows():
    """Leak suite: the validation rows are scored each exactly once.

    Today's code (before issue 17) accepted any number of repeated rows (e.g. every row gathered twice, or one
    row ten times), so a bug that doubled part of the validation set went unseen; the world-size bound fails
    there."""
    from comp.train.evaluate import exactly_once

    rows = np.array([2, 0, 1, 3, 2, 0])  # untrimmed gather over 3 processes: the padding repeats rows 2 and 0
    pos = exactly_once(rows, 4, world_size=3)
    assert rows[pos].tolist() == [0, 1, 2, 3]
    assert exactly_once(np.array([1, 0, 2, 0]), 3, world_size=2).tolist() == [1, 0, 2]
    with pytest.raises(RuntimeError, match="covering 3 of the 4"):
        exactly_once(np.array([0, 1, 3, 3]), 4, world_size=2)
    with pytest.raises(RuntimeError, match="at most 1"):
        exactly_once(np.array([0, 1, 2, 3, 0, 1]), 4, world_size=2)  # two repeats, two processes
    with pytest.raises(RuntimeError, match="at most 0"):
        exactly_once(np.array([0, 1, 2, 2]), 3)  # one process pads nothing
    with pytest.raises(RuntimeError, match="repeat"):
        exactly_once(np.concatenate([np.arange(5), np.arange(5)]), 5, world_size=4)  # every row twice
    with pytest.raises(RuntimeError, match="covering"):
        exactly_once(np.array([0, 1, 2, 7]), 3, world_size=2)  # a row out of range is no padding


@pytest.mark.slow
def test_fixed_epoch_cv_picks_each_folds_epoch_from_the_other_folds(tmp_path, folded):
    """Leak suite, best epoch: each fold's best epoch is chosen on the rows that make its OOF (standard, slightly
    optimistic, and before issue 17 never measured: no per-epoch validation probabilities were kept). Now every
    epoch's are (fold_k/val_epochs.npz) and the fixed-epoch CV scores fold k at the epoch the other folds chose."""
    from comp.metrics import create_metric
    from comp.train.epochs import fixed_epoch_cv, record_epoch

    rng = np.random.default_rng(0)
    classes = ["a", "b"]
    y = rng.integers(0, 2, 50)
    good, bad = np.eye(2)[y] * 0.8 + 0.1, np.eye(2)[1 - y] * 0.8 + 0.1
    run = tmp_path / "runs" / "E"
    best_at = {0: 1, 1: 3, 2: 3, 3: 3}  # fold 0's own curve peaks at epoch 1, the others at epoch 3
    for k, b in best_at.items():
        for e in (1, 2, 3):
            record_epoch(run / f"fold_{k}", e, [f"{k}_{i}" for i in range(50)], y, good if e == b else bad, classes)
    fixed = fixed_epoch_cv(run, create_metric("macro_f1"))
    assert fixed.epochs == {0: 3, 1: 3, 2: 3, 3: 3} and fixed.own_score == 1.0 and fixed.score < 0.8
    record_epoch(run / "fold_0", 2, [f"0_{i}" for i in range(50)], y, good, classes)  # resumed: epoch 3 redone
    with np.load(run / "fold_0" / "val_epochs.npz") as z:
        assert z["epochs"].tolist() == [1, 2]

    out = train_folds(tiny_cfg(folded, "ep", "train.epochs=2"), echo=quiet)
    for k in range(3):
        with np.load(folded / "runs" / "ep" / f"fold_{k}" / "val_epochs.npz") as z:
            assert z["epochs"].tolist() == [1, 2] and z["probs"].shape[0] == 2
    real = fixed_epoch_cv(folded / "runs" / "ep", create_metric("macro_f1"))
    assert real.own_score == pytest.approx(out["cv_score"], abs=2e-3)  # own best epochs: the CV (float16 kept)
    assert out["cv_fixed_epoch"] == real.score and set(real.epochs.values()) <= {1, 2}
