"""A search space file for ``comp tune``: config keys mapped to distributions.

    # configs/base.space.yaml
    train.lr: {loguniform: [1e-4, 1e-2]}
    train.weight_decay: {uniform: [0.0, 0.1]}
    train.epochs: {int: [3, 8]}                   # inclusive
    model.name: {choice: [resnet18, convnext_atto]}
    augment.preset: {choice: [light, medium]}
    train.loss: {choice: [ce, ce+soft_f1]}

Every key must be an experiment key (model, input, augment, train, infer sections) that comp's config accepts,
and every bound and choice must be a valid value of that key: the space is checked with comp's own config
validation (and model names against timm) before any trial runs.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from comp.config import EXPERIMENT_SECTIONS, ConfigError, load_config, read_yaml

KINDS = {
    "uniform": "[low, high] floats",
    "loguniform": "[low, high] positive floats, sampled on a log scale",
    "int": "[low, high] integers, inclusive",
    "logint": "[low, high] positive integers, inclusive, sampled on a log scale",
    "choice": "[value, value, ...] strings, numbers or booleans",
}


def read_space(path: str | Path) -> dict[str, tuple[str, list]]:
    """``{"train.lr": ("loguniform", [1e-4, 1e-2]), ...}`` from a space file; shape errors name the key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--space {path}: file not found (see `comp tune --help` for its format)")
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"{path}: the space is empty; map config keys to distributions, e.g. "
                          f"train.lr: {{loguniform: [1e-4, 1e-2]}}")
    space = {}
    for key, dist in raw.items():
        where = f"{path}: {key}"
        parts = str(key).split(".")
        if len(parts) != 2:
            raise ConfigError(f"{where}: expected section.key, e.g. train.lr")
        if parts[0] not in EXPERIMENT_SECTIONS:
            raise ConfigError(f"{where}: only experiment keys can be tuned ({', '.join(EXPERIMENT_SECTIONS)} "
                              f"sections), not {parts[0]}")
        if not isinstance(dist, dict) or len(dist) != 1:
            raise ConfigError(f"{where}: expected one distribution, e.g. {{loguniform: [1e-4, 1e-2]}}; kinds: "
                              + "; ".join(f"{k}: {v}" for k, v in KINDS.items()))
        (kind, args), = dist.items()
        if kind not in KINDS:
            raise ConfigError(f"{where}: unknown distribution {kind!r}; kinds: {', '.join(KINDS)}")
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {kind} takes a list: {KINDS[kind]}")
        if kind == "choice":
            bad = [v for v in args if not isinstance(v, (str, int, float, bool)) and v is not None]
            if bad:
                raise ConfigError(f"{where}: choice values must be strings, numbers or booleans, got {bad[0]!r}")
        else:
            if len(args) != 2:
                raise ConfigError(f"{where}: {kind} takes [low, high]")
            try:
                lo, hi = (float(a) for a in args)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: {kind} bounds must be numbers, got {args}") from None
            if kind in ("int", "logint") and not all(float(a).is_integer() for a in (lo, hi)):
                raise ConfigError(f"{where}: {kind} bounds must be integers, got {args}")
            if not lo < hi:
                raise ConfigError(f"{where}: low must be below high, got {args}")
            if kind.startswith("log") and lo <= 0:
                raise ConfigError(f"{where}: {kind} bounds must be positive, got {args}")
            args = [int(lo), int(hi)] if kind in ("int", "logint") else [lo, hi]
        space[str(key)] = (kind, args)
    return space


def as_set(key: str, value) -> str:
    """``--set`` form of one value (YAML, so strings, numbers and booleans keep their type)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def check_space(space: dict, config_path: str | Path, exp: str, overrides=()) -> None:
    """Every bound and choice of every key goes through comp's config validation (and check_config), so an
    unknown key, a wrong type or an unknown model name is an error now, not in trial 17."""
    from comp.techniques import check_experiment as check_config

    for key, (kind, args) in space.items():
        values = args if kind == "choice" else [args[0], args[1]]
        for v in values:
            try:
                cfg = load_config(config_path, exp=exp, overrides=[*overrides, as_set(key, v)])
                check_config(cfg)
            except ConfigError as e:
                raise ConfigError(f"search space {key}={v!r}: {e}") from None


def to_tune(space: dict) -> dict:
    """Ray Tune sampling domains (OptunaSearch turns them into Optuna distributions)."""
    from ray import tune

    out = {}
    for key, (kind, args) in space.items():
        if kind == "uniform":
            out[key] = tune.uniform(*args)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*args)
        elif kind == "int":
            out[key] = tune.randint(args[0], args[1] + 1)
        elif kind == "logint":
            out[key] = tune.lograndint(args[0], args[1] + 1)
        else:
            out[key] = tune.choice(args)
    return out


def nest(flat: dict) -> dict:
    """``{"train.lr": 0.01}`` -> ``{"train": {"lr": 0.01}}``."""
    out: dict = {}
    for key, v in flat.items():
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = v
    return out
