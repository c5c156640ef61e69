"""Issue 35: every command run a second time with the same arguments is a no-op: exit 0, and not one file under the
working folder changes (same names, same bytes). Each command runs as a user runs it, in its own process, on a
real competition; the fitted defaults (batch size, lr, layout) are left unset, as in the issue's `comp launch`."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comp.data.sample import make_sample

pytest.importorskip("ray", reason='needs ray: pip install "comp[ray]"')
pytest.importorskip("optuna", reason='needs optuna: pip install "comp[ray]"')

COMP = str(Path(sys.executable).parent / "comp")
TINY = ["--set", "model.name=test_resnet", "--set", "input.size=32", "--set", "train.epochs=1"]


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _comp(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([COMP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def _twice(args: list[str], cwd: Path, said: str) -> None:
    first = _comp(args, cwd)
    assert first.returncode == 0, f"comp {' '.join(args)}:\n{first.stdout[-2000:]}{first.stderr[-2000:]}"
    before = _files(cwd)
    again = _comp(args, cwd)
    out = again.stdout + again.stderr
    assert again.returncode == 0, f"second comp {' '.join(args)}:\n{out[-3000:]}"
    after = _files(cwd)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"second comp {' '.join(args)} changed {changed[:10]}:\n{out[-2000:]}"
    assert said in out, f"second comp {' '.join(args)} does not say {said!r}:\n{out[-2000:]}"


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_every_command_run_twice_is_a_no_op(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    make_sample(tmp_path / "data", n_train=240, n_test=40, seed=3)
    (work / "space.yaml").write_text("train.lr: {loguniform: [1.0e-3, 1.0e-2]}\n")
    steps = [
        (["init", str(tmp_path / "data")], "nothing written"),
        (["folds", "--n-splits", "3"], "kept existing"),
        (["train", "--exp", "a", "--all-folds", *TINY], "already finished"),
        (["launch", "--exp", "a", "--exp", "b", "--all-folds", *TINY], "already finished"),
        (["predict", "--exp", "a"], "nothing to do"),
        (["predict", "--exp", "b"], "nothing to do"),
        (["ensemble", "--exp", "a", "--exp", "b", "--name", "e1"], "nothing to do"),
        (["export", "--exp", "a"], "nothing to do"),
        (["relabel", "--exp", "a", "--gallery", "4"], "nothing to do"),
        (["pseudo", "--from", "e1", "--exp", "p", "--top", "0.5"], "nothing to do"),
        (["synth", "--exp", "a", "--per-class", "2", "--steps", "5", "--no-report", *TINY], "nothing to do"),
        (["tune", "--exp", "a", "--space", "space.yaml", "--trials", "2", *TINY], "already finished"),
        (["tune", "--exp", "a", "--space", "space.yaml", "--trials", "2", "--resume", *TINY], "already finished"),
        (["auto", "--budget", "40s"], "continues it"),
    ]
    for args, said in steps:
        if args[0] == "auto":  # comp auto in a folder of its own (it makes its own folds and runs)
            work = tmp_path / "auto"
            work.mkdir()
            assert _comp(["init", str(tmp_path / "data")], work).returncode == 0
        _twice(args, work, said)
