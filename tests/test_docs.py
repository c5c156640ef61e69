"""The README is a landing page and the manual cannot drift: the generated references match the code, the site
builds with --strict, the README's links point at pages that exist, its config example loads, and every comp
command in its examples runs."""

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from comp.cli import cli
from comp.config import from_dict

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _gen():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_is_a_landing_page_whose_links_and_config_hold():
    assert len(README.splitlines()) < 200
    links = re.findall(r"\]\((docs/[^)#\s]+)", README)
    assert len(links) >= 20 and all((ROOT / p).exists() for p in links), [p for p in links if not (ROOT / p).exists()]
    block = re.search(r"```yaml\n(.*?)```", README, re.S).group(1)
    cfg = from_dict(yaml.safe_load(block))  # unknown keys or bad values would raise
    assert cfg.folds.n_splits == 5 and cfg.infer.tta == ["identity", "hflip"]


def test_comp_help_leads_with_comp_auto():
    out = CliRunner().invoke(cli, ["--help"]).output
    assert out.index("comp auto --budget") < out.index("comp sample")


def test_generated_references_match_the_code():
    gen = _gen()
    for name, text in (("config.md", gen.config_reference()), ("cli.md", gen.cli_reference())):
        path = ROOT / "docs" / "reference" / name
        assert path.read_text(encoding="utf-8") == text, f"{path} is out of date: run python scripts/gen_reference.py"
    assert "`train.fit_minutes`" in gen.config_reference() and "## `comp auto`" in gen.cli_reference()


def test_the_manual_builds_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip('pip install "comp[docs]" (mkdocs, mkdocs-material) to build the manual')
    r = subprocess.run([mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "site" / "commands" / "auto" / "index.html").exists() or \
        (tmp_path / "site" / "start" / "index.html").exists()


# The README's commands run as written, with two changes that only make them small enough for a test: the sample
# gets fewer images and comp auto a shorter budget. Each substitution must match, so an edited example is noticed.
SMALLER = {"comp sample demo/data --kind photo": "comp sample demo/data --kind photo --n-train 160 --n-test 40",
           "comp auto --budget 20m": "comp auto --budget 40s"}


def readme_commands() -> list[str]:
    """Every ``comp ...`` line of the README's bash blocks, comments stripped (make targets are not comp's)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        lines += [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("comp ")]
    return lines


@pytest.mark.slow
def test_readme_commands_run(tmp_path):
    commands = readme_commands()
    assert len(commands) == 4 and set(SMALLER) <= set(commands), commands
    comp = [sys.executable, "-m", "comp"]
    for command in commands:
        args = SMALLER.get(command, command).split()[1:]
        r = subprocess.run(comp + args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{command}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert (tmp_path / "submissions" / "auto.csv").exists() and (tmp_path / "reports" / "auto" / "index.html").exists()
    assert "macro" in r.stdout.lower()  # comp score printed the competition's metric
