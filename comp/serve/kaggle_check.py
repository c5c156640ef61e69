"""``comp bundle --check``: run a bundle's notebook here as Kaggle runs it, and compare its submission with the
local one.

- **Kaggle's image** is emulated by this environment's installed packages less every distribution the bundle
  ships (comp included): a fresh virtual environment sees them through a folder of links, and gets comp and the
  rest only from the bundle's wheels (``pip install --no-index --no-deps``; pip's index and config are switched off
  too, so nothing can come from a registry).
- **Internet off**: the notebook runs in a new network namespace (``unshare -n``, or ``unshare -rn`` without root)
  where the machine allows it; the report says whether it did, and what a connection to pypi.org met there.
- **/kaggle**: ``ROOT/kaggle/input/<competition>`` links to the competition folder, ``ROOT/kaggle/input/<dataset>``
  to the bundle's dataset folder, and ``ROOT/kaggle/working`` starts empty; the notebook finds them through
  ``COMP_KAGGLE_ROOT``.
- The notebook is executed by nbclient (a kernel of the fresh environment, on ipc sockets, which need no network).

The ``kaggle`` extra (nbclient, ipykernel) runs it: ``pip install "comp[kaggle]"``.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from comp.errors import CompError
from comp.extras import require
from comp.serve.kaggle_run import MANIFEST

KERNEL = "comp-kaggle"


class CheckError(CompError):
    """The offline run failed or its submission differs from the local one."""


def _hidden(names: list[str]) -> set[str]:
    """site-packages entries (top-level folders and files) of the distributions ``names``."""
    out = set()
    for name in names:
        try:
            files = md.distribution(name).files or []
        except md.PackageNotFoundError:
            continue
        out |= {str(f).split("/")[0] for f in files if not str(f).startswith("..")}
    return out


def image_farm(root: Path, shipped: list[str]) -> Path:
    """A folder of links to this environment's packages less those the bundle ships: Kaggle's image, emulated."""
    farm = root / "image"
    farm.mkdir()
    hide = _hidden(shipped)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name not in hide and not entry.name.endswith(".pth") and entry.name != "__pycache__":
            os.symlink(entry, farm / entry.name)
    return farm


def make_env(root: Path, farm: Path) -> Path:
    """A fresh virtual environment (its own pip) that sees ``farm``; returns its python."""
    env = root / "env"
    venv.EnvBuilder(with_pip=True, symlinks=True).create(env)
    python = env / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "kaggle_image.pth").write_text(f"{farm}\n", encoding="utf-8")
    kernels = root / "jupyter" / "kernels" / KERNEL
    kernels.mkdir(parents=True)
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Kaggle (emulated)", "language": "python"}
    (kernels / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return python


def kaggle_root(root: Path, bundle_dir: Path, competition_dir: Path, manifest: dict) -> Path:
    """ROOT/kaggle with input/<competition>, input/<dataset slug> and an empty working/."""
    k = root / "kaggle"
    (k / "input").mkdir(parents=True)
    (k / "working").mkdir()
    os.symlink(Path(competition_dir).resolve(), k / "input" / manifest["competition"])
    os.symlink((bundle_dir / "dataset").resolve(), k / "input" / manifest["dataset"].split("/")[1])
    return k


def network_prefix() -> tuple[list[str], str]:
    """The command prefix that cuts the network off here, and what it is ('' when none works)."""
    for args in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if subprocess.run([*args, "true"], capture_output=True, timeout=20).returncode == 0:
                return args, " ".join(args)
        except (OSError, subprocess.TimeoutExpired):
            continue
    return [], ""


def _clean_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_FIND_LINKS",
                                                             "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")}
    env.update(JUPYTER_PATH=str(root / "jupyter"), COMP_KAGGLE_ROOT=str(root / "kaggle"), PIP_NO_INDEX="1",
               PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1", HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
               HF_HOME=str(root / "hf"))
    return env


def compare(made: Path, expected: Path, tol: float = 1e-5) -> dict:
    """Header, ids and order identical; text cells identical; numeric cells within ``tol``."""
    a, b = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in (made, expected))
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return {"same": False, "why": f"shape differs: {list(a.columns)} x {len(a)} vs {list(b.columns)} x {len(b)}"}
    worst, text_diff = 0.0, 0
    for col in a.columns:
        x, y = pd.to_numeric(a[col], errors="coerce"), pd.to_numeric(b[col], errors="coerce")
        if col != a.columns[0] and x.notna().all() and y.notna().all() and (a[col] != b[col]).any():
            worst = max(worst, float(np.abs(x.to_numpy() - y.to_numpy()).max()))
        else:
            text_diff += int((a[col] != b[col]).sum())
    same = text_diff == 0 and worst <= tol
    why = "" if same else f"{text_diff} text cell(s) differ; largest numeric difference {worst:.2e} (tolerance {tol})"
    return {"same": same, "why": why, "max_abs_diff": worst, "rows": len(a)}


def run_notebook(notebook: Path, working: Path, report: Path, timeout: int) -> None:
    """Inside the cut-off namespace: probe the network, then execute the notebook with a kernel on ipc sockets."""
    import socket

    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        net = "pypi.org:443 reachable"
    except OSError as e:
        net = f"pypi.org:443 unreachable ({type(e).__name__}: {e})"
    nb = nbformat.read(notebook, as_version=4)
    km = KernelManager(kernel_name=KERNEL, transport="ipc", ip=str(report.parent / "ipc" / "kernel"))
    (report.parent / "ipc").mkdir(exist_ok=True)
    start = time.perf_counter()
    error = ""
    try:
        NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(working)}}).execute()
    except Exception as e:  # the cell's traceback is in the executed notebook; say which error it was
        error = f"{type(e).__name__}: {str(e)[-1500:]}"
    seconds = time.perf_counter() - start
    nbformat.write(nb, report.with_name("executed.ipynb"))
    report.write_text(json.dumps({"network": net, "seconds": seconds, "error": error}), encoding="utf-8")


def _outputs(executed: Path) -> str:
    nb = json.loads(executed.read_text(encoding="utf-8"))
    texts = [o.get("text", "") for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    return "".join(t if isinstance(t, str) else "".join(t) for t in texts)


def check_offline(bundle_dir: str | Path, competition_dir: str | Path, expected: str | Path,
                  echo: Callable[[str], None] = print, timeout: int = 3600, keep: bool = False) -> dict:
    """Run bundle_dir's notebook as Kaggle would (module docstring) and compare its submission with ``expected``."""
    require("nbclient", "ipykernel")
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "dataset" / MANIFEST).read_text(encoding="utf-8"))
    root = Path(tempfile.mkdtemp(prefix="comp-kaggle-"))
    try:
        farm = image_farm(root, _shipped_names(bundle_dir))
        make_env(root, farm)
        k = kaggle_root(root, bundle_dir, Path(competition_dir), manifest)
        prefix, how = network_prefix()
        report = root / "result" / "report.json"
        report.parent.mkdir()
        cmd = [*prefix, sys.executable, "-m", "comp.serve.kaggle_check",
               str(bundle_dir.resolve() / "notebook" / "submission.ipynb"), str(k / "working"), str(report),
               str(timeout)]
        net = f"cut off ({how})" if prefix else "NOT cut off (unshare -n fails here)"
        echo(f"running {bundle_dir}/notebook/submission.ipynb offline: fresh environment, wheels from the bundle only "
             f"(pip --no-index), network {net}")
        start = time.perf_counter()
        done = subprocess.run(cmd, env=_clean_env(root), capture_output=True, text=True, timeout=timeout + 120)
        wall = time.perf_counter() - start
        if not report.exists():
            raise CheckError(f"the offline run did not finish: {done.stderr.strip()[-1500:]}")
        res = json.loads(report.read_text(encoding="utf-8"))
        log = _outputs(report.with_name("executed.ipynb"))
        if res["error"]:
            raise CheckError(f"the notebook failed offline: {res['error']}")
        made = k / "working" / "submission.csv"
        cmp = compare(made, Path(expected))
        res.update(cmp, wall_s=wall, network_cut=bool(prefix), how=how, log=log,
                   working=sorted(p.name for p in (k / "working").iterdir()))
        if keep:
            res["root"] = str(root)
        return res
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _shipped_names(bundle_dir: Path) -> list[str]:
    """The distributions of the bundle's wheels (their file names: NAME-VERSION-...whl)."""
    return [p.name.split("-")[0] for p in sorted((bundle_dir / "dataset").glob("*.whl"))]


if __name__ == "__main__":  # the runner inside the namespace: NOTEBOOK WORKING REPORT TIMEOUT
    run_notebook(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
