"""Typed, validated configuration.

One YAML file (``comp.yaml``) describes the competition (``data``) and default experiment settings; an
experiment file ``configs/<exp>.yaml`` overrides any section; ``--set section.key=value`` overrides last.
Every key is checked against the dataclasses below: an unknown key is an error naming the closest valid ones,
a wrong type is an error naming the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from comp.errors import ConfigError  # noqa: F401  (ConfigError: imported from here too)


@dataclass(frozen=True)
class Range:
    """The values a config key accepts (``field(metadata={"range": ...})``, made by ``ranged``): checked by
    ``validate`` with a message naming the key, and shown in the generated configuration reference."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def text(self) -> str:
        if self.hi is None:
            if self.lo_open:
                return "positive" if self.lo == 0 else f"above {self.lo:g}"
            return ">= 0" if self.lo == 0 else f"at least {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


def ranged(default, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """A dataclass field with ``default`` whose values must lie in the range (None, where allowed, always passes)."""
    return field(default=default, metadata={"range": Range(lo, hi, lo_open, hi_open)})


@dataclass
class DataConfig:
    """Where the competition lives and how its csv is laid out (written by ``comp init``)."""

    root: str = "."  # competition folder, relative to the config file's folder
    layout: Literal["csv", "folders"] = "csv"  # folders: <train_dir>/<class>/<image>
    train_csv: Optional[str] = "train.csv"
    train_dir: str = "train_images"
    test_dir: Optional[str] = "test_images"
    sample_submission: Optional[str] = "sample_submission.csv"
    id_col: str = "image_id"
    label_col: str = "label"  # with label_cols: the name of the derived label column in folds/oof files
    label_cols: Optional[list[str]] = None  # one-hot / probability columns of train.csv: the label is their argmax
    group_col: Optional[str] = None
    test_csv: Optional[str] = None  # test ids (first column or id_col); must agree with the sample submission
    label_map: Optional[str] = None  # json {"0": "Healthy", ...}: readable class names in reports only
    # the competition's metric; micro_f1, samples_f1, f2 (samples F2) and map are multi-label only
    metric: Literal["macro_f1", "accuracy", "log_loss", "qwk", "roc_auc", "micro_f1", "samples_f1", "f2",
                    "map"] = "macro_f1"
    # multilabel: several labels per image (sigmoid); ordinal: graded labels, one regression output (comp.tasks)
    task: Literal["multiclass", "multilabel", "ordinal"] = "multiclass"
    label_sep: str = " "  # multilabel: the separator of the class names in one label cell ("0 5 25")
    id_has_ext: bool = True  # ids carry their file extension (``a.png``) or not (``a`` + ``ext``)
    ext: str = ""  # appended to ids when id_has_ext is false
    test_ext: Optional[str] = None  # appended to test ids when id_has_ext is false (None: ext; .jpg beside .png)
    # larger images are refused as decompression bombs (Pillow's own limit)
    max_pixels: int = ranged(89_478_485, lo=0, lo_open=True)
    relabel: Optional[str] = None  # comp relabel's relabel.csv: accepted/dropped rows change TRAINING labels only
    pseudo: Optional[str] = None  # comp pseudo folder: fold k also trains on test rows its teacher fold k labelled
    synthetic: Optional[str] = None  # comp synth --exp E: fold k also trains on folds/synth/E/fold_k/'s images


@dataclass
class FoldsConfig:
    n_splits: int = ranged(5, lo=2)
    seed: int = 42
    file: str = "folds/folds.csv"


@dataclass
class ModelConfig:
    name: str = "resnet18"  # any timm model name
    # auto: hub weights when the local Hugging Face cache has them or the hub answers, else from scratch (comp.weights);
    # resolved to true or false where the config is built, with the reason in cfg.derived
    pretrained: Union[bool, Literal["auto"]] = "auto"
    pretrained_file: Optional[str] = None  # local safetensors / timm checkpoint; wins over pretrained; head may differ
    # the new classifier's weights x this at the start (timm train.py --head-init-scale); None: 0 when the backbone is
    # pretrained (every logit 0, the first loss ln(classes) for any backbone), timm's own init from scratch
    head_init_scale: Optional[float] = None
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    # train only the head for this many epochs (a linear probe: BN statistics kept), then all
    freeze_epochs: int = ranged(0, lo=0)
    freeze_bn: bool = False  # batch-norm statistics stay the pretrained ones (BN in eval mode); scale and shift train
    freeze_stages: int = ranged(0, lo=0)  # keep the stem and the first N stages frozen for the whole run
    # 1: first convolution stride 1 and no max-pool (small images keep their resolution); 2: no max-pool;
    # None: the model's own stem (ResNet: /4)
    stem_stride: Optional[Literal[1, 2, 4]] = None


@dataclass
class InputConfig:
    # None: fitted at train time to the images (median short side; comp.train.defaults)
    size: Optional[int] = ranged(None, lo=8)
    resize: Literal["stretch", "letterbox", "crop"] = "stretch"
    mean: Optional[list[float]] = None  # default: the model's pretrained config
    std: Optional[list[float]] = None


@dataclass
class AugmentConfig:
    preset: Literal["none", "light", "medium", "heavy"] = "light"
    pipeline: Optional[dict] = None  # albumentations dict form (A.to_dict); replaces the preset
    mixup: float = ranged(0.0, lo=0)  # timm Mixup alpha; 0 = off
    cutmix: float = ranged(0.0, lo=0)  # timm CutMix alpha; 0 = off
    mix_prob: float = ranged(1.0, lo=0, hi=1)
    on: Literal["device", "cpu"] = "device"  # presets: batched tensor ops on the device, or albumentations per image


@dataclass
class TrainConfig:
    epochs: Optional[int] = ranged(None, lo=1)  # None: 30 from scratch, 10 fine-tuning (SCRATCH / FINETUNE below)
    # {fold: epochs}: these folds train that many epochs instead (comp auto re-fits the folds still to train to fold
    # 0's measured seconds). A fold not started yet may change it without --overwrite (comp.runs.check_run).
    fold_epochs: Optional[dict[int, int]] = None
    # None: CPU 128 from 2048 rows, else 64; GPU: the largest that fits (a probe)
    batch_size: Optional[int] = ranged(None, lo=1)
    lr: Optional[float] = ranged(None, lo=0, lo_open=True)  # None: 3e-3 from scratch, 2e-3 fine-tuning
    seed: int = 42
    optimizer: str = "adamw"  # timm create_optimizer_v2 names
    weight_decay: float = 0.05
    # lr x layer_decay^(depth from the head) per layer group (timm param_groups_layer_decay); None or 1: one lr
    layer_decay: Optional[float] = ranged(None, lo=0, hi=1, lo_open=True)
    # progressive resizing (FFCV, fastai): the first epoch trains at this fraction of input.size, growing in steps of
    # 16 px to input.size for the last quarter of the epochs; validation always at input.size. None: off
    progressive: Optional[float] = ranged(None, lo=0, hi=1, lo_open=True)
    momentum: float = 0.9
    scheduler: str = "cosine"  # timm create_scheduler_v2 names: cosine, step, exponential, plateau, ...
    warmup_epochs: Optional[int] = None  # None: derived from epochs (about 10%, 0 for runs under 5 epochs)
    min_lr: float = 0.0
    loss: str = "ce"  # ce, focal, soft_f1, ce+soft_f1, bce; multi-label: bce, asl, focal, soft_f1, bce+soft_f1
    label_smoothing: float = ranged(0.0, lo=0, hi=1, hi_open=True)
    focal_gamma: float = ranged(2.0, lo=0)
    soft_f1_weight: float = ranged(0.5, lo=0)  # weight of soft_f1 in ce+soft_f1 (bce+soft_f1 with data.task multilabel)
    asl_gamma_neg: float = ranged(4.0, lo=0)  # multilabel loss asl: focusing exponent of the negatives
    asl_gamma_pos: float = ranged(0.0, lo=0)  # multilabel loss asl: focusing exponent of the positives
    # multilabel loss asl: probability margin below which negatives cost nothing
    asl_clip: float = ranged(0.05, lo=0, hi=1, hi_open=True)
    class_weights: Optional[str] = None  # balanced, inverse, sqrt_inverse, effective_num (timm compute_class_weights)
    sampler: Literal["random", "balanced"] = "random"
    grad_clip: Optional[float] = ranged(None, lo=0, lo_open=True)
    accum_steps: int = ranged(1, lo=1)
    precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16 on GPU that has it, else fp32
    ema: bool = False
    ema_decay: float = ranged(0.998, lo=0, hi=1, lo_open=True, hi_open=True)
    channels_last: Optional[bool] = None  # None: fitted (a probe takes it when it is faster here), else false
    compile: bool = False
    # val_score: data.metric (the best-epoch criterion); the others as metrics.csv names them
    early_stopping_metric: Literal["val_score", "val_macro_f1", "val_loss", "val_acc"] = "val_score"
    patience: Optional[int] = ranged(None, lo=1)  # epochs without improvement before stopping; None = never stop early
    num_workers: Optional[int] = None  # None: 0 on machines with <= 2 cores (workers would steal compute)
    cache: Literal["auto", "memory", "disk", "none"] = "auto"
    # input.size (and train.epochs) left unset for images above 64 px: fitted so that every fold trains in about
    # this many minutes on this machine (a throughput probe at candidate sizes; comp.train.fit)
    fit_minutes: float = ranged(60.0, lo=0, lo_open=True)
    trackers: list[str] = field(default_factory=list)  # tensorboard, wandb, mlflow (when installed)
    decay_epochs: Optional[float] = None  # step/multistep: epochs between decays (None: a third of the run)
    decay_rate: Optional[float] = None  # step: lr factor per decay (None: 0.1; exponential: to 1% by the end)
    plateau_patience: int = 2  # plateau: epochs without val_score (data.metric) improvement before the lr drops
    # tests/ops: stop this invocation after N epochs, as if killed
    stop_after_epochs: Optional[int] = ranged(None, lo=1)
    teacher: Optional[str] = None  # knowledge distillation: fold k learns from this experiment's fold-k model
    # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * train.loss
    distill_alpha: float = ranged(0.5, lo=0, hi=1)
    distill_t: float = ranged(2.0, lo=0, lo_open=True)  # softmax temperature T of both sides of the KL term
    keep_state: bool = False  # keep fold_k/state/ (model, optimizer, RNG) after the fold finishes
    # tests/ops: seconds to sleep after each step, so a run can be interrupted mid-epoch
    step_delay: float = ranged(0.0, lo=0)


@dataclass
class InferConfig:
    tta: list[str] = field(default_factory=lambda: ["identity"])
    batch_size: int = ranged(128, lo=1)
    # predict at this input size (None: the model's training size); above it, the FixRes effect (Touvron et al. 2019):
    # a model trained on random crops and flips sees objects larger than at test time
    size: Optional[int] = ranged(None, lo=8)
    at_least_one: bool = False  # multilabel: an image with no label above its threshold gets its most likely one
    top_k: Optional[int] = None  # multilabel: at most this many labels per image (the most likely)


@dataclass
class SearchConfig:
    """Where an experiment's settings came from: written by ``comp tune`` into configs/<exp>-best.yaml (and so
    into runs/E/config.yaml), not set by hand. Its CV is then scored on the folds the search never saw."""

    source: Optional[str] = None  # the searched experiment
    trials: int = 0  # how many trials the winner was chosen from
    folds: list[int] = field(default_factory=list)  # the folds it was chosen on (every fold: selected in-sample)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    # Not user keys: where the config came from, to resolve relative paths.
    base_dir: str = field(default=".", metadata={"internal": True})
    exp: Optional[str] = field(default=None, metadata={"internal": True})
    # Keys the user left unset and the value each was given, with why: {"train.lr": "3e-3 (from scratch; ...)"}.
    derived: dict = field(default_factory=dict, metadata={"internal": True})

    def __post_init__(self):
        fit_schedule(self)

    @property
    def root(self) -> Path:
        """The competition folder."""
        return (Path(self.base_dir) / self.data.root).resolve()

    def to_dict(self, internal: bool = False) -> dict:
        d = dataclasses.asdict(self)
        if not internal:
            for f in dataclasses.fields(self):
                if f.metadata.get("internal"):
                    d.pop(f.name)
        return d


# Default lr and epochs when the user sets neither, by how the model starts. From scratch (`comp sample`, 28 px,
# docs/configuration.md "Defaults fitted to the data"): a short run at 1e-3 underfits. Fine-tuning
# (docs/benchmarks.md, the photo sample, tf_efficientnet_lite0 with ImageNet weights at 96 px, 6 epochs, batch 32,
# two seeds): hold-out macro F1 0.070 at 1e-4, 0.200 at 2.5e-4, 0.335 at 5e-4, 0.424 at 1e-3, 0.448 at 2e-3,
# 0.420 at 3e-3, 0.341 at 5e-3.
# The 10 fine-tuning epochs are not measured: train.fit_minutes and comp auto fit the epochs to the time.
SCRATCH = {"lr": 3e-3, "epochs": 30}
FINETUNE = {"lr": 2e-3, "epochs": 10}


def fit_schedule(cfg: Config) -> None:
    """model.pretrained auto resolved to true or false (comp.weights), then train.lr and train.epochs left unset:
    from scratch or fine-tuning values; the reasons kept in cfg.derived."""
    from comp import weights

    w = weights.resolve(cfg.model.name, cfg.model.pretrained, resolve(cfg, cfg.model.pretrained_file))
    if cfg.model.pretrained == "auto":
        cfg.model.pretrained = w.source in ("hub-cache", "hub")
        cfg.derived["model.pretrained"] = f"{str(cfg.model.pretrained).lower()} ({w.describe()}; set " \
                                          f"model.pretrained to change)"
    table, why = (FINETUNE, "fine-tuning pretrained weights") if w.pretrained else (SCRATCH, "from scratch")
    for key in ("lr", "epochs"):
        if getattr(cfg.train, key) is None:
            setattr(cfg.train, key, table[key])
            cfg.derived[f"train.{key}"] = f"{table[key]:g} ({why}; set train.{key} to change)"


# Keys fitted where a run starts when the user leaves them unset (comp.config.fit_schedule, comp.train.defaults); a
# run with a recorded config keeps its own values of them, and a re-run that leaves them unset is no config change.
FITTED_KEYS = ("model.pretrained", "train.lr", "train.epochs", "input.size", "train.batch_size", "train.channels_last")

SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if not f.metadata.get("internal")}
EXPERIMENT_SECTIONS = ("model", "input", "augment", "train", "infer")
# data keys that describe an experiment's training set rather than the competition: allowed in experiment files.
EXPERIMENT_DATA_KEYS = ("relabel", "pseudo", "synthetic")


def _closest(key: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(repr(n) for n in near) + "?"
    return "valid keys: " + ", ".join(valid)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` coerced to ``tp`` (int -> float only), or raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not a valid value")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            if isinstance(value, (str, int, float)):
                value = [value]
            else:
                raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_check_type(k, kt, f"{where} key {k!r}"): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            full = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"unknown config key '{full}' ({_closest(str(key), names)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value or {}, f"{where}.{key}" if where else key)
        else:
            kwargs[key] = _check_type(value, tp, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "pipeline":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_set(items: typing.Iterable[str]) -> dict:
    """Turn ``["train.lr=0.01", "infer.tta=[identity,hflip]"]`` into a nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr=0.01")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.epochs=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e.problem})") from e
        d = out
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value
    return out


def read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (run `comp init DIR` to write one, or pass -c PATH)") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, ...)")
    return data


def from_dict(values: dict, base_dir: str = ".", exp: Optional[str] = None) -> Config:
    cfg = _build(Config, values, "")
    cfg.base_dir = str(base_dir)
    cfg.exp = exp
    validate(cfg)
    return cfg


def check_exp_name(name: str, option: str = "--exp") -> str:
    """An experiment name is one folder name under runs/ (and configs/NAME.yaml): letters, digits, '-', '_' and
    '.', not starting with '.' (so never '..', a path, or a hidden folder such as runs/.cache)."""
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("."):
        raise ConfigError(f"{option} {name!r}: use letters, digits, '-', '_' and '.' only, not starting with '.' "
                          f"(an experiment is a folder runs/NAME)")
    return name


def load_config(
    path: str | Path = "comp.yaml",
    exp: Optional[str] = None,
    overrides: typing.Iterable[str] = (),
    require_data: bool = True,
) -> Config:
    """Read ``path``, then ``configs/<exp>.yaml`` beside it (when it exists), then ``--set`` overrides."""
    path = Path(path)
    if path.exists() or require_data:
        values = read_yaml(path)
    else:
        values = {}
    base_dir = path.resolve().parent
    if exp:
        check_exp_name(exp)
        exp_file = base_dir / "configs" / f"{exp}.yaml"
        if exp_file.exists():
            exp_values = read_yaml(exp_file)
            bad = [k for k in exp_values if k not in EXPERIMENT_SECTIONS and k not in ("data", "search")]
            if bad:
                raise ConfigError(
                    f"{exp_file}: section '{bad[0]}' does not belong in an experiment file "
                    f"(allowed: {', '.join(EXPERIMENT_SECTIONS)}, search (comp tune writes it), and "
                    f"data.{', data.'.join(EXPERIMENT_DATA_KEYS)})"
                )
            bad = [k for k in exp_values.get("data") or {} if k not in EXPERIMENT_DATA_KEYS]
            if bad:
                raise ConfigError(
                    f"{exp_file}: data.{bad[0]} describes the competition and belongs in comp.yaml; an experiment "
                    f"file may set only data.{', data.'.join(EXPERIMENT_DATA_KEYS)}"
                )
            values = _merge(values, exp_values)
    values = _merge(values, parse_set(overrides))
    return from_dict(values, base_dir=str(base_dir), exp=exp)


def validate(cfg: Config) -> None:
    """Each key's range (``ranged`` fields), then the relations between keys; each message names its key."""
    for section in SECTIONS:
        obj = getattr(cfg, section)
        if not dataclasses.is_dataclass(obj):
            continue
        for f in dataclasses.fields(obj):
            rng, value = f.metadata.get("range"), getattr(obj, f.name)
            if rng is not None and value is not None and value not in rng:
                empty = " (or left empty)" if "Optional" in str(f.type) else ""
                raise ConfigError(f"{section}.{f.name} must be {rng.text()}{empty}; got {value!r}")
    t = cfg.train
    checks = [
        (t.warmup_epochs is None or 0 <= t.warmup_epochs < t.epochs,
         "train.warmup_epochs must be smaller than train.epochs (or left empty to derive it)"),
        (bool(cfg.infer.tta), "infer.tta must name at least one view, e.g. [identity]"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    for k, n in (t.fold_epochs or {}).items():
        if not (k >= 0 and n >= 1):
            raise ConfigError(f"train.fold_epochs: {k!r}: {n!r} must map a fold number (0, 1, ...) to at least 1 "
                              f"epoch, e.g. {{1: 40, 2: 40}}")
        if t.warmup_epochs is not None and t.warmup_epochs >= n:
            raise ConfigError(f"train.fold_epochs: fold {k}'s {n} epochs must exceed train.warmup_epochs "
                              f"({t.warmup_epochs})")
    if cfg.data.label_cols is not None and len(cfg.data.label_cols) < 2:
        raise ConfigError("data.label_cols must name at least 2 one-hot columns (or be left empty for data.label_col)")
    validate_task(cfg)
    for key in ("mean", "std"):
        v = getattr(cfg.input, key)
        if v is not None and len(v) != 3:
            raise ConfigError(f"input.{key} must list 3 numbers (R, G, B), got {v}")


def fold_config(cfg: Config, fold: int) -> Config:
    """``cfg`` as fold ``fold`` trains it: train.epochs is that fold's (train.fold_epochs, else train.epochs), and
    train.fold_epochs is gone, so a fold's state digest reads only its own length."""
    epochs = (cfg.train.fold_epochs or {}).get(fold, cfg.train.epochs)
    out = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=epochs, fold_epochs=None))
    out.derived = dict(cfg.derived)
    return out


def validate_task(cfg: Config) -> None:
    """data.task and the keys that depend on it: each message names the key."""
    from comp.tasks import task_of

    task_of(cfg).validate(cfg.data)
    if cfg.infer.top_k is not None and cfg.infer.top_k < 1:
        raise ConfigError("infer.top_k must be at least 1 (or left empty for no cap)")


def dump_config(cfg: Config, extra: Optional[dict] = None) -> str:
    d = cfg.to_dict()
    if extra:
        d.update(extra)
    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def resolve(cfg: Config, p: Optional[str]) -> Optional[Path]:
    """A path from the config, relative to the config file's folder."""
    if p is None:
        return None
    q = Path(p)
    return q if q.is_absolute() else (Path(cfg.base_dir) / q)
