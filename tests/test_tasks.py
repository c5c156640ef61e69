"""comp.tasks: one Task per data.task, chosen once; ordinal, the third task, on a real graded sample
(``comp sample --graded``) through comp init and comp auto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from sklearn.metrics import cohen_kappa_score

from comp.cli import cli
from comp.config import ConfigError, TrainConfig, from_dict
from comp.data.competition import DataError, class_names
from comp.data.sample_graded import COUNTED, make_graded_sample
from comp.infer.decision import cv_thresholds, expected_grade
from comp.metrics import METRICS, MULTILABEL_METRICS
from comp.tasks import TASKS, task_of
from comp.tasks.grade_head import GradeKernel, grade_of


def test_task_of_every_source_and_the_metric_names_each_scores():
    cfg = from_dict({"data": {"task": "multilabel", "label_sep": "|", "metric": "f2"}})
    for source in (cfg, cfg.data, {"task": "multilabel", "label_sep": "|"}):
        t = task_of(source)
        assert t.name == "multilabel" and t.sep == "|"
    assert task_of("ordinal").name == "ordinal" and task_of({}).name == "multiclass"
    with pytest.raises(ConfigError, match="data.task 'regression'"):
        task_of("regression")
    # What a config is checked against when it is read is what comp.metrics scores
    assert TASKS["multiclass"].metric_names == tuple(METRICS)
    assert TASKS["multilabel"].metric_names == tuple(MULTILABEL_METRICS)
    assert set(TASKS["ordinal"].metric_names) < set(METRICS)
    with pytest.raises(ConfigError, match="data.task ordinal is scored from grade decisions"):
        from_dict({"data": {"task": "ordinal", "metric": "log_loss"}})


def test_reading_a_config_loads_no_torch():
    code = ("import sys; from comp.config import from_dict; from_dict({'data': {'task': 'ordinal', 'metric': 'qwk'}});"
            "print(sorted(m for m in ('torch', 'timm', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["resnet18", "tf_efficientnet_lite0", "convnext_atto", "vit_tiny_patch16_224"])
def test_ordinal_head_is_one_regression_output_read_as_grades(name):
    """The classifier becomes one output (started at the middle grade) and a fixed kernel: the logits' softmax is
    a Gaussian around it, so its argmax is the nearest grade and its expected grade rises with it."""
    import timm

    task = task_of("ordinal")
    model = timm.create_model(name, num_classes=5)
    task.adapt_head(model, 5)
    head = model.get_submodule(model.pretrained_cfg["classifier"])
    assert head[0].out_features == 1 and head[0].bias.item() == 2.0
    size = 224 if "vit" in name else 32
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 5) and torch.allclose(grade_of(logits), torch.full((2,), 2.0))
    x = torch.linspace(-1, 5, 61) + 0.03  # off the midpoints, where two grades tie
    kernel = head[1](x[:, None])
    assert torch.allclose(grade_of(kernel), x, atol=1e-5)
    probs = task.activation(kernel).numpy()
    assert (probs.argmax(1) == np.clip(np.floor(x.numpy() + 0.5), 0, 4)).all()
    assert (np.diff(expected_grade(probs, np.arange(5.0))) > 0).all()
    # The loss is regression on the grade position: indices, or a Mixup distribution's expected position
    loss = task.loss(TrainConfig(), np.array([0, 4]), np.array([0, 4]), 5)
    at = head[1](torch.tensor([[1.0], [3.0]]))
    assert loss(at, torch.tensor([1, 3])).item() == 0.0
    assert loss(at, torch.tensor([[0, .5, .5, 0, 0], [0, 0, 0, 1.0, 0]])).item() == pytest.approx(0.125 / 2)


@pytest.mark.slow
def test_ordinal_thresholds_do_not_rise_on_labels_they_cannot_know():
    """Leak suite, ordinal cut points: on grades independent of the predictions, cut points fitted and scored on
    the same OOF look better than none; cross-fitted (what comp ensemble reports), they do not (means over 8 draws:
    one draw's qwk on noise spreads by about 0.04)."""
    task, kernel = task_of("ordinal"), GradeKernel(5)
    plain, in_sample, cv = [], [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        x = torch.as_tensor(rng.normal(2, 1.2, (600, 1)), dtype=torch.float32)
        rep = cv_thresholds(task.activation(kernel(x)).numpy(), rng.integers(0, 5, 600), np.arange(5.0), 5, 0)
        plain.append(rep.plain), in_sample.append(rep.in_sample), cv.append(rep.cv)
    assert np.mean(cv) <= np.mean(plain) + 0.01 and np.mean(in_sample) > np.mean(cv) + 0.03, (plain, in_sample, cv)


def test_ordinal_grades_must_be_numbers_in_one_order():
    task = task_of("ordinal")
    assert task.classes(["0", "3", "1"], None, class_names) == ["0", "1", "3"]
    with pytest.raises(DataError, match="numeric grades; label 'mild'"):
        task.classes(["0", "mild"], None, class_names)
    with pytest.raises(DataError, match="zero-padded"):
        task.classes(["1", "2", "10"], None, class_names)
    with pytest.raises(ConfigError, match="train.loss 'focal' is not used by data.task ordinal"):
        task.check_train(from_dict({"data": {"task": "ordinal", "metric": "qwk"}, "train": {"loss": "focal"}}))


def test_graded_sample_grades_count_the_tops(tmp_path):
    info = make_graded_sample(tmp_path / "g", n_train=60, n_test=20, imbalance=4.0, seed=3)
    train = pd.read_csv(tmp_path / "g" / "train.csv", dtype=str)
    assert list(train.columns) == ["id_code", "diagnosis"] and info.classes == ["0", "1", "2", "3", "4"]
    assert sum(info.counts.values()) == 60 and info.counts["0"] > info.counts["4"]  # the long tail
    sol = pd.read_csv(tmp_path / "g" / "solution.csv", dtype=str)
    sample = pd.read_csv(tmp_path / "g" / "sample_submission.csv", dtype=str)
    assert sol["id_code"].tolist() == sample["id_code"].tolist() and list(sample.columns) == list(sol.columns)
    # Every grade is on the picture: items fill at most grade + 3 cells, never fewer than the grade
    for r in train.head(20).itertuples():
        img = np.asarray(Image.open(tmp_path / "g" / "train_images" / f"{r.id_code}.png"))
        filled = sum(img[i:i + 28, j:j + 28].max() > 60 for i in (0, 28, 56) for j in (0, 28, 56))
        assert img.shape == (84, 84) and int(r.diagnosis) <= filled <= int(r.diagnosis) + 3
    assert len(COUNTED) == 4


def test_init_offers_ordinal_for_integer_labels_and_sets_it(tmp_path, competition, monkeypatch):
    make_graded_sample(tmp_path / "g", n_train=40, n_test=10, seed=0)
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    offered = runner.invoke(cli, ["init", str(tmp_path / "g"), "-c", "plain.yaml"])
    assert offered.exit_code == 0 and "comp init --task ordinal" in offered.output
    chosen = runner.invoke(cli, ["init", str(tmp_path / "g"), "--task", "ordinal", "-c", "ordinal.yaml"])
    assert chosen.exit_code == 0 and "task: ordinal (--task ordinal)" in chosen.output
    text = (tmp_path / "ordinal.yaml").read_text()
    assert "task: ordinal" in text and "metric: qwk" in text
    named = runner.invoke(cli, ["init", str(competition), "--task", "ordinal", "-c", "named.yaml"])
    assert named.exit_code == 1 and "numeric grades" in named.output and "Traceback" not in named.output


@pytest.mark.slow
def test_ordinal_through_comp_auto(tmp_path):
    """data.task ordinal end to end: comp init --task ordinal, comp auto, comp score. The models have one
    regression output, the submission holds grades, and its cut points were fitted on the OOF."""
    root = tmp_path / "graded"
    make_graded_sample(root, n_train=300, n_test=80, imbalance=3.0, seed=1)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(Path(__file__).parents[1]))
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "comp", *a], cwd=tmp_path, env=env,  # noqa: E731
                                          capture_output=True, text=True, **kw)
    assert run("init", str(root), "--task", "ordinal").returncode == 0
    out = run("auto", "--budget", "75s", "--models", "test_resnet", timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "thresholds: OOF qwk plain" in out.stdout and "cv qwk of this submission" in out.stdout
    meta = json.loads(next((tmp_path / "runs" / "auto-a").glob("fold_0/model.json")).read_text())
    assert meta["task"] == "ordinal"
    weights = load_file(str(tmp_path / "runs" / "auto-a" / "fold_0" / "model.safetensors"))
    head = [k for k in weights if k.endswith(".0.weight") and weights[k].ndim == 2]
    assert head and weights[head[-1]].shape[0] == 1  # one regression output
    sub = pd.read_csv(tmp_path / "submissions" / "auto.csv", dtype=str)
    sol = pd.read_csv(root / "solution.csv", dtype=str)
    assert sub["id_code"].tolist() == sol["id_code"].tolist() and set(sub["diagnosis"]) <= set("01234")
    assert cohen_kappa_score(sol["diagnosis"], sub["diagnosis"], weights="quadratic") > 0.5  # it learned
    led = pd.read_csv(tmp_path / "submissions" / "ledger.csv")
    assert led["metric"].iloc[-1] == "qwk"


def test_pseudo_thresholds_read_wide_labels_joined_by_their_separator(tmp_path, monkeypatch):
    """A wide multi-label target (data.label_cols, class names with spaces, label_sep '|') keeps its OOF labels
    joined by '|': the teacher's fold thresholds read them through the task (they split on ' ' before, and a
    class called 'Ankle boot' broke comp pseudo)."""
    from comp.techniques.pseudo import fold_rules

    monkeypatch.chdir(tmp_path)
    classes = ["Ankle boot", "Bag", "T-shirt/top"]
    rng = np.random.default_rng(0)
    hot = rng.random((40, 3)) < 0.4
    labels = ["|".join(c for c, h in zip(classes, row) if h) for row in hot]
    probs = np.clip(hot + rng.normal(0, 0.3, hot.shape), 0, 1)
    oof = pd.DataFrame({"StudyInstanceUID": [f"i{k}" for k in range(40)], "label": labels,
                        **{c: probs[:, j] for j, c in enumerate(classes)}, "fold": np.arange(40) % 2})
    (tmp_path / "runs" / "t").mkdir(parents=True)
    oof.to_csv(tmp_path / "runs" / "t" / "oof.csv", index=False)
    cfg = from_dict({"data": {"task": "multilabel", "label_cols": classes, "label_sep": "|",
                              "id_col": "StudyInstanceUID", "metric": "macro_f1"}})
    cuts = {k: r.cuts for k, r in fold_rules(cfg, "t", classes, [0, 1]).items()}
    assert sorted(cuts) == [0, 1] and all(len(c) == 3 and ((c > 0) & (c < 1)).all() for c in cuts.values())
