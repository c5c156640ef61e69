"""The command line: `python -m comp`, help for every command, -c/--config everywhere, clean user errors."""

import subprocess
import sys

import pytest
from click.testing import CliRunner

from comp import __version__
from comp.cli import cli

COMMANDS = sorted(cli.commands)
# init writes the file -c names; clean reads only runs/E and runs/.cache; leaderboard reads runs/ (each
# run's own config.yaml) and the ledger only; ledger (lb) reads and writes submissions/ only
READS_CONFIG = [c for c in COMMANDS if c not in ("sample", "score", "clean", "leaderboard", "ledger")]


def test_python_m_comp_help():
    cmd = [sys.executable, "-m", "comp", "--help"]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for name in ("sample", "init", "check", "folds", "train", "predict", "ensemble", "score"):
        assert name in r.stdout


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    if name in READS_CONFIG:
        assert "-c, --config" in r.output


def test_a_missing_extra_names_its_extra():
    from comp.errors import MissingExtra
    from comp.extras import require

    with pytest.raises(MissingExtra, match=r"needs the 'ray' extra: pip install \"comp\[ray\]\""):
        require("ray.no_such_module")
    with pytest.raises(MissingExtra, match=r"'kaggle' extra"):
        require("nbclient.no_such_module")


def test_ledger_lb_has_help():
    r = CliRunner().invoke(cli, ["ledger", "lb", "--help"])
    assert r.exit_code == 0 and "--private" in r.output and "NAME SCORE" in r.output


def test_user_error_is_one_clean_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["folds", "-c", "nowhere.yaml"])
    assert r.exit_code == 1
    assert r.output.startswith("Error: config file nowhere.yaml not found")
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


def test_one_error_type_caught_once_in_the_cli(tmp_path, monkeypatch):
    """Issue 36: every error a user must fix is a CompError, caught in one place (comp.cli.CompGroup) and printed as
    one line with its exit code; none is told apart by its class name or its text."""
    from pathlib import Path

    import comp.cli
    from comp.config import ConfigError
    from comp.data.competition import DataError
    from comp.errors import CompError, MissingExtra, MissingInput, OutputExists
    from comp.infer.score import SubmissionError
    from comp.orchestrate.locks import LockedError
    from comp.serve.onnx import ExportError
    from comp.train.loop import TrainingError

    for kind in (ConfigError, DataError, SubmissionError, TrainingError, ExportError, LockedError, OutputExists,
                 MissingInput, MissingExtra):
        assert issubclass(kind, CompError) and kind.exit_code == 1, kind
    src = Path(comp.cli.__file__).read_text(encoding="utf-8")
    assert src.count("except CompError") == 1 and "type(e).__name__" not in src and "in str(e)" not in src
    monkeypatch.chdir(tmp_path)
    (tmp_path / "comp.yaml").write_text("train: {epochs: -3}\n")
    r = CliRunner().invoke(cli, ["folds"])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and isinstance(r.exception, SystemExit)
