"""Typed, validated config: unknown keys suggest the closest, wrong types name the key, --set and experiments."""

import pytest
import yaml
from click.testing import CliRunner

from comp.cli import cli
from comp.config import ConfigError, dump_config, load_config, parse_set


def _write(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


def test_defaults_and_types(tmp_path):
    cfg = load_config(_write(tmp_path / "comp.yaml", {"data": {"root": "."}, "train": {"lr": "1e-3"}}))
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.model.name == "resnet18" and cfg.folds.n_splits == 5
    assert cfg.root == tmp_path.resolve()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"modle": {}}, "unknown config key 'modle' (did you mean 'model'?)"),
        ({"train": {"lrr": 0.1}}, "unknown config key 'train.lrr' (did you mean 'lr'"),
        ({"train": {"epochs": "ten"}}, "train.epochs: expected an integer, got 'ten'"),
        ({"train": {"ema": "yes please"}}, "train.ema: expected true or false"),
        ({"input": {"resize": "squash"}}, "input.resize: 'squash' is not one of 'stretch', 'letterbox', 'crop'"),
        ({"folds": {"n_splits": 1}}, "folds.n_splits must be at least 2"),
        ({"input": {"mean": [0.5, 0.5]}}, "input.mean must list 3 numbers"),
    ],
)
def test_bad_values_name_the_key(tmp_path, values, message):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path / "comp.yaml", values))
    assert message in str(e.value)


def test_set_overrides_parse_yaml_values():
    d = parse_set(["train.lr=0.01", "infer.tta=[identity,hflip]", "model.pretrained=true", "data.group_col="])
    assert d == {"train": {"lr": 0.01}, "infer": {"tta": ["identity", "hflip"]}, "model": {"pretrained": True},
                 "data": {"group_col": None}}
    for bad in ["train.lr", "lr=0.1", "train.=3"]:
        with pytest.raises(ConfigError, match="section.key=value"):
            parse_set([bad])


def test_experiment_file_merges_then_set_wins(tmp_path):
    path = _write(tmp_path / "comp.yaml", {"data": {"root": "."}, "train": {"epochs": 3, "lr": 0.1}})
    _write(tmp_path / "configs" / "big.yaml", {"model": {"name": "resnet10t"}, "train": {"epochs": 7}})
    cfg = load_config(path, exp="big", overrides=["train.epochs=9", "infer.tta=[identity,hflip]"])
    assert cfg.model.name == "resnet10t" and cfg.train.lr == 0.1  # untouched keys survive the merge
    assert cfg.train.epochs == 9 and cfg.infer.tta == ["identity", "hflip"] and cfg.exp == "big"
    assert load_config(path, exp="big").train.epochs == 7
    assert load_config(path, exp="nofile").train.epochs == 3  # an experiment without a file uses comp.yaml
    _write(tmp_path / "configs" / "leak.yaml", {"data": {"root": "/elsewhere"}})
    # The competition's data keys stay in comp.yaml; an experiment may set only its own (data.relabel).
    with pytest.raises(ConfigError, match="data.root describes the competition and belongs in comp.yaml"):
        load_config(path, exp="leak")
    _write(tmp_path / "configs" / "leak.yaml", {"folds": {"n_splits": 3}})
    with pytest.raises(ConfigError, match="section 'folds' does not belong"):
        load_config(path, exp="leak")
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        load_config(path, overrides=["train.epoch=2"])
    # the resolved config round-trips
    again = _write(tmp_path / "again.yaml", yaml.safe_load(dump_config(cfg)))
    assert load_config(again).to_dict() == cfg.to_dict()


def test_cli_config_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["check"])
    assert r.exit_code == 1 and "comp.yaml not found" in r.output and "comp init" in r.output
    _write(tmp_path / "other.yaml", {"data": {"root": "."}, "trian": {}})
    r = CliRunner().invoke(cli, ["folds", "-c", "other.yaml"])
    assert r.exit_code == 1 and "did you mean 'train'" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("key, value, message", [
    ("train.lr", 0, "train.lr must be positive (or left empty); got 0"),
    ("train.ema_decay", 1.0, "train.ema_decay must be in (0, 1); got 1.0"),
    ("augment.mix_prob", 2, "augment.mix_prob must be in [0, 1]"),
    ("input.size", 4, "input.size must be at least 8 (or left empty)"),
    ("train.label_smoothing", 1.0, "train.label_smoothing must be in [0, 1)"),
    ("model.freeze_stages", -1, "model.freeze_stages must be >= 0"),
])
def test_ranges_sit_on_their_fields(tmp_path, key, value, message):
    """The range of a key is its field's metadata (config.ranged): validate checks every one, and the generated
    reference shows it; no separate list to drift."""
    import dataclasses

    from comp.config import SECTIONS, Config

    section, name = key.split(".")
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path / "comp.yaml", {"data": {"root": "."}, section: {name: value}}))
    assert message in str(e.value)
    ranged = [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(Config(), s))
              if f.metadata.get("range")]
    assert len(ranged) >= 30 and key in ranged
