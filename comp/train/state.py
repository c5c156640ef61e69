"""A fold's training state: what ``--resume`` continues from (``runs/E/fold_k/state/``).

``save_state`` writes accelerate's ``save_state`` (model, optimizer, RNG per process), the EMA weights, the best
epoch's OOF and trainer.json (a ``FoldState``) into ``.state.tmp`` and swaps it in for ``state``; trainer.json is
written last, so a folder without it is incomplete and never loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from comp.config import ConfigError
from comp.files import fsync_path, fsync_tree, write_csv, write_text


@dataclass
class FoldState:
    """What the loop needs besides model/optimizer/RNG to continue after epoch ``epoch`` (trainer.json)."""

    fold: int | str | None = None  # the fold (or full_s{i}) this state belongs to (another's is refused)
    config_digest: str = ""  # runs.config_digest of the config that made it (another config is refused)
    epoch: int = 0  # epochs finished
    num_updates: int = 0
    best_score: float = -1.0  # best val score in data.metric (raw or EMA weights); unset while best_epoch is 0
    best_epoch: int = 0
    best_is_ema: bool = False
    stop_best: float | None = None  # best value of train.early_stopping_metric
    bad_epochs: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    history: list = field(default_factory=list)
    ema_history: list = field(default_factory=list)
    scheduler: dict = field(default_factory=dict)


def find_state(fd: Path) -> Path | None:
    """The last complete state folder: ``state/``, else ``state.old/`` (a kill between the two renames)."""
    for name in ("state", "state.old"):
        p = fd / name
        if (p / "trainer.json").exists():
            return p
    return None


def unit_name(fold: int | str | None) -> str:
    """``fold 3`` for a fold, the folder name (``full_s0``) for a full-data run."""
    return fold if isinstance(fold, str) else f"fold {fold}"


def check_state(path: Path, fold: int | str, digest: str) -> None:
    """Refuse a state recorded for another fold or made with another config (it would train the wrong model).

    A full-data run's ``fold`` is its folder name (full_s0) and its digest covers the epochs and seed it trains."""
    rec = json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    what = "--overwrite to start the fold again, or `comp clean` to remove the state"
    if rec.get("fold") != fold:
        raise ConfigError(f"{path} holds the state of {unit_name(rec.get('fold'))}, not of {unit_name(fold)} (moved "
                          f"or copied there, or written by an older comp); it cannot be resumed: pass {what}")
    if rec.get("config_digest") != digest:
        raise ConfigError(f"{path} was saved with a different config (digest {rec.get('config_digest')!r}, the "
                          f"config now gives {digest!r}): resuming it would mix two runs; pass {what}")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


STATE_DIRS = ("state", "state.old", ".state.tmp")


def remove_states(fd: Path) -> int:
    """Remove a fold's state folders (the finished fold keeps done.json, model, metrics and OOF); bytes freed."""
    freed = 0
    for name in STATE_DIRS:
        p = fd / name
        if p.exists():
            freed += dir_bytes(p)
            shutil.rmtree(p)
    return freed


def save_state(accelerator, fd: Path, st: FoldState, ema, best_oof: pd.DataFrame | None) -> int:
    """Write the state to ``.state.tmp`` (every rank writes its RNG file), then swap it in for ``state``; returns
    its size in bytes (main process; 0 elsewhere).

    The accelerator's registries hold this fold's model and optimizer only (``_release`` clears them when a fold
    ends), so the state is one model, one optimizer, the EMA weights, one RNG file per process and trainer.json.

    trainer.json is written last, so a folder without it is incomplete and never loaded; the previous state is
    kept (as state.old) until the new one is in place.
    """
    tmp, cur, old = fd / ".state.tmp", fd / "state", fd / "state.old"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in ema.module.state_dict().items()},
                      str(tmp / "ema.safetensors"))
        if best_oof is not None:
            write_csv(tmp / "best_oof.csv", best_oof)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_text(tmp / "trainer.json", json.dumps(asdict(st)))
        fsync_tree(tmp)  # the commit point must survive a power cut: the files, then the renames
        shutil.rmtree(old, ignore_errors=True)
        if cur.exists():
            os.replace(cur, old)
        os.replace(tmp, cur)
        fsync_path(fd)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return dir_bytes(cur) if accelerator.is_main_process else 0


def load_state(accelerator, path: Path, ema) -> FoldState:
    accelerator.load_state(str(path))
    if ema is not None:
        ema.module.load_state_dict(load_file(str(path / "ema.safetensors")))
    return FoldState(**json.loads((path / "trainer.json").read_text(encoding="utf-8")))


def json_safe(d):
    if isinstance(d, dict):
        return {str(k): json_safe(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [json_safe(v) for v in d]
    if isinstance(d, (int, float, str, bool)) or d is None:
        return d
    if isinstance(d, torch.Tensor) and d.numel() == 1:
        return d.item()
    return None  # objects (e.g. noise RNGs) are rebuilt by the scheduler itself
