"""The wheels a Kaggle notebook installs offline (``pip install --no-index --no-deps``): comp's own and those of its
runtime dependencies that Kaggle's Python image lacks.

Where each wheel comes from, first that applies, all offline:
1. comp itself: built from a copy of its checkout's setup.py and package (``pip wheel --no-deps
   --no-build-isolation``) when comp runs from a checkout, else repacked from the installed distribution;
2. a dependency installed here whose wheel tags fit the notebook's platform and Python: repacked from its installed
   files (the RECORD pip wrote names every one, with its hash), so nothing is downloaded;
3. otherwise ``pip download --only-binary=:all: --platform P --python-version V`` (the only step that needs the
   network), or a clear error naming the package and ``--exclude``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata as md
import io
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from comp.errors import CompError

# Distributions comp needs at predict time that Kaggle's Python image (gcr.io/kaggle-images/python) already has. A
# bundle ships the rest of comp's install_requires; --include / --exclude edit the list per bundle.
KAGGLE_HAS = frozenset(canonicalize_name(n) for n in (
    "torch", "torchvision", "timm", "albumentations", "opencv-python-headless", "scikit-learn", "pandas", "numpy",
    "accelerate", "click", "pyyaml", "safetensors", "tqdm", "matplotlib", "pillow", "imagehash", "scipy"))
PLATFORM = "manylinux_2_35_x86_64"  # Kaggle's notebooks: Linux x86_64 on Ubuntu 22.04 (glibc 2.35)
PYTHON = "3.11"  # Kaggle's image at the time of writing; --python-version changes it
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}  # PEP 600 spellings


class WheelError(CompError):
    """A wheel the bundle needs could not be made or fetched."""


def runtime_names() -> list[str]:
    """comp's install_requires (no extras), as distribution names."""
    names = []
    for text in md.requires("comp") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(req.name)
    return names


def shipped(include=(), exclude=()) -> list[str]:
    """comp, then every runtime dependency Kaggle's image lacks, plus ``include``, minus ``exclude``."""
    out = ["comp"] + [n for n in runtime_names() if canonicalize_name(n) not in KAGGLE_HAS]
    out += [n for n in include if canonicalize_name(n) not in {canonicalize_name(x) for x in out}]
    drop = {canonicalize_name(n) for n in exclude}
    if canonicalize_name("comp") in drop:
        raise WheelError("--exclude comp: the notebook runs comp's own predict and blend; comp's wheel always ships")
    return [n for n in out if canonicalize_name(n) not in drop]


def _tags(dist: md.Distribution) -> list[str]:
    text = dist.read_text("WHEEL") or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def fits(tag: str, platform: str, python: str) -> bool:
    """Whether a wheel tag (py-abi-plat) installs on ``platform`` under CPython ``python``."""
    py, abi, plat = tag.split("-")
    major, minor = python.split(".")[:2]
    py_ok = py in (f"py{major}", f"py{major}{minor}", f"cp{major}{minor}") or (
        abi == "abi3" and py.startswith(f"cp{major}") and int(py[3:] or 0) <= int(minor))
    return py_ok and (plat == "any" or plat == platform or _glibc_fits(plat, platform))


def _glibc(tag: str) -> tuple[tuple[int, int], str] | None:
    """((major, minor), arch) of a manylinux platform tag, in either spelling; None for other tags."""
    for legacy, version in LEGACY.items():
        if tag.startswith(legacy + "_"):
            return version, tag[len(legacy) + 1:]
    parts = tag.split("_", 3)
    if len(parts) == 4 and parts[0] == "manylinux" and parts[1].isdigit() and parts[2].isdigit():
        return (int(parts[1]), int(parts[2])), parts[3]
    return None


def _glibc_fits(plat: str, platform: str) -> bool:
    """A manylinux wheel installs where the glibc is at least the one it names, on the same architecture."""
    have, need = _glibc(platform), _glibc(plat)
    return have is not None and need is not None and need[1] == have[1] and need[0] <= have[0]


def _wheel_name(dist: md.Distribution, tags: list[str]) -> str:
    parts = [sorted({t.split("-")[i] for t in tags}) for i in range(3)]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    return f"{name}-{dist.version}-{'-'.join('.'.join(p) for p in parts)}.whl"


def _record_line(arc: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [arc, f"sha256={digest}", str(len(data))]


def repack(dist: md.Distribution, out_dir: Path) -> Path:
    """A wheel of an installed distribution, from the files its RECORD lists (byte code and pip's own marker files
    left out); RECORD is written afresh with each file's hash."""
    tags = _tags(dist)
    info = next((str(f).split("/")[0] for f in dist.files or [] if str(f).endswith(".dist-info/METADATA")), None)
    if not tags or info is None:
        raise WheelError(f"{dist.metadata['Name']} {dist.version} was not installed from a wheel (no WHEEL/RECORD); "
                         f"pass --exclude {dist.metadata['Name']} when Kaggle's image has it")
    skip = {f"{info}/{n}" for n in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")}
    path = out_dir / _wheel_name(dist, tags)
    rows = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in dist.files:
            arc = str(f)
            if arc in skip or arc.startswith("..") or "__pycache__" in arc or arc.endswith(".pyc"):
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(arc, data)
            rows.append(_record_line(arc, data))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [[f"{info}/RECORD", "", ""]])
        zf.writestr(f"{info}/RECORD", buf.getvalue())
    return path


def _source_dir() -> Path | None:
    """comp's checkout (the folder holding setup.py beside the comp package), when comp runs from one."""
    import comp

    root = Path(comp.__file__).resolve().parent.parent
    return root if (root / "setup.py").exists() else None


def comp_wheel(out_dir: Path) -> Path:
    """comp's own wheel: built from its checkout, else repacked from the installed distribution."""
    src = _source_dir()
    if src is None:
        return repack(md.distribution("comp"), out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        # built from a copy of setup.py and the package: no build/ or egg-info left in the checkout, and no stale
        # module from an earlier build/lib in the wheel
        copy = Path(tmp) / "src"
        shutil.copytree(src / "comp", copy / "comp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copyfile(src / "setup.py", copy / "setup.py")
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
               "-w", tmp, str(copy)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        built = list(Path(tmp).glob("comp-*.whl"))
        if done.returncode or not built:
            raise WheelError(f"could not build comp's wheel from {src}: {done.stderr.strip()[-400:]}")
        target = out_dir / built[0].name
        target.write_bytes(built[0].read_bytes())
    return target


def _download(name: str, version: str, out_dir: Path, platform: str, python: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", platform,
           "--python-version", python, "-q", "-d", str(out_dir), f"{name}=={version}"]
    before = set(out_dir.glob("*.whl"))
    done = subprocess.run(cmd, capture_output=True, text=True)
    new = sorted(set(out_dir.glob("*.whl")) - before)
    if done.returncode or not new:
        raise WheelError(f"{name} {version}: the installed wheel does not fit {platform} / Python {python}, and pip "
                         f"could not download one ({done.stderr.strip()[-300:] or 'no wheel'}); pass --exclude {name} "
                         f"when Kaggle's image has it, or --platform / --python-version to match")
    return new[0]


def gather(names: list[str], out_dir: Path, platform: str = PLATFORM, python: str = PYTHON) -> list[dict]:
    """One wheel per name in ``out_dir``; returns what each is and where it came from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for name in names:
        if canonicalize_name(name) == "comp":
            path, how = comp_wheel(out_dir), "built from comp's source" if _source_dir() else "repacked"
        else:
            try:
                dist = md.distribution(name)
            except md.PackageNotFoundError:
                raise WheelError(f"--include {name}: not installed here; pip install it first, or leave it out") \
                    from None
            if any(fits(t, platform, python) for t in _tags(dist)):
                path, how = repack(dist, out_dir), "repacked from this environment"
            else:
                path, how = _download(name, dist.version, out_dir, platform, python), "downloaded"
        made.append({"name": name, "file": path.name, "bytes": path.stat().st_size, "from": how})
    return made
