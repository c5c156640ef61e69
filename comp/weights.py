"""Where a model's starting weights come from (``model.pretrained``: auto | true | false, ``model.pretrained_file``).

    model.pretrained_file   wins: a local safetensors or timm checkpoint
    auto (the default)      hub weights when the local Hugging Face cache holds them, or when the hub answers within
                            HUB_TIMEOUT_S; else from scratch
    true                    the hub's weights (the cache first; else a download, which needs the hub)
    false                   from scratch

Whichever happens is said with its reason, e.g. ``pretrained: from the local hub cache
(timm/tf_efficientnet_lite0.in1k)`` or ``from scratch: no weights for resnet18 in the hub cache and the hub did not
answer``. The cache is read from its folders (no timm import: a config is built by every command), the hub is asked
once per process, and never with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import functools
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

HUB_TIMEOUT_S = 2.0
# The pretrained candidates of comp auto (fastest first on the hardware); comp init says which have weights here.
CANDIDATES_CPU = ("tf_efficientnet_lite0", "mobilenetv3_large_100", "resnet18")
CANDIDATES_GPU = ("tf_efficientnet_lite0", "efficientnet_b0", "convnext_nano", "resnet50")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class Weights:
    """How a model starts: ``source`` is file, hub-cache, hub or scratch; ``name`` the timm name to build (a cached
    tag, e.g. resnet18.a1_in1k, so that its pretrained config's mean and std come with it); ``path`` the file."""

    source: str
    name: str
    path: Optional[str]
    why: str

    @property
    def pretrained(self) -> bool:
        return self.source != "scratch"

    def describe(self) -> str:
        return f"pretrained: {self.why}" if self.pretrained else f"from scratch: {self.why}"


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub finds it (HF_HUB_CACHE, HF_HOME/hub, XDG, ~/.cache)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _snapshot_file(entry: Path) -> Optional[Path]:
    """The weights file of a cache entry's current snapshot (refs/main), else of any snapshot."""
    ref = entry / "refs" / "main"
    snaps = [entry / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    snaps += sorted((entry / "snapshots").glob("*")) if (entry / "snapshots").is_dir() else []
    for snap in snaps:
        for f in WEIGHT_FILES:
            if (snap / f).is_file():  # follows the blob symlink: a dangling one is no weights
                return snap / f
    return None


def cached(name: str, cache: Optional[Path] = None) -> Optional[tuple[str, Path]]:
    """(repo, weights file) of timm model ``name`` in the hub cache, or None. ``resnet18`` matches the repo
    ``timm/resnet18`` or any tag ``timm/resnet18.<tag>`` (the first in name order when several are cached);
    ``resnet18.a1_in1k`` only that tag; ``hf-hub:org/repo`` that repo."""
    root = Path(cache) if cache is not None else hub_cache()
    if name.startswith(("hf-hub:", "hf_hub:")):
        repos = [name.split(":", 1)[1].split("@")[0]]
    elif "." in name:
        repos = [f"timm/{name}"]
    else:
        tagged = sorted(p.name for p in root.glob(f"models--timm--{name}.*")) if root.is_dir() else []
        repos = [f"timm/{name}"] + [t.removeprefix("models--").replace("--", "/", 1) for t in tagged]
    for repo in repos:
        f = _snapshot_file(root / f"models--{repo.replace('/', '--')}")
        if f is not None:
            return repo, f
    return None


@functools.lru_cache(maxsize=None)
def hub_answers(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers a HEAD request within ``timeout`` seconds (asked once per process)."""
    if offline():
        return False
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/") + "/api/models?limit=1"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except Exception:  # noqa: BLE001 - any failure (DNS, refused, timeout, HTTP error) means "did not answer"
        return False


def resolve(name: str, pretrained, pretrained_file: Optional[str]) -> Weights:
    """How model ``name`` starts (see the module docstring); ``pretrained_file`` is an already resolved path."""
    if pretrained_file:
        return Weights("file", name, str(pretrained_file), f"from model.pretrained_file ({pretrained_file})")
    if pretrained is False:
        return Weights("scratch", name, None, "model.pretrained is false")
    hit = cached(name)
    if hit is not None:
        repo, path = hit
        build = repo.split("/", 1)[1] if repo.startswith("timm/") else f"hf-hub:{repo}"
        return Weights("hub-cache", build, str(path), f"from the local hub cache ({repo})")
    if pretrained is True:
        return Weights("hub", name, None, f"from the hub (no weights for {name} in {hub_cache()}; timm downloads "
                                          f"them)")
    if offline():
        return Weights("scratch", name, None, f"no weights for {name} in the hub cache ({hub_cache()}) and "
                                              f"HF_HUB_OFFLINE is set")
    if hub_answers():
        return Weights("hub", name, None, f"from the hub (no weights for {name} in the cache; the hub answered)")
    return Weights("scratch", name, None, f"no weights for {name} in the hub cache and the hub did not answer")


def describe_candidates(gpu: bool) -> str:
    """Which of comp auto's pretrained candidates have weights on this machine, in one line (comp init)."""
    names = CANDIDATES_GPU if gpu else CANDIDATES_CPU
    found = {m: resolve(m, "auto", None) for m in names}
    have = [f"{m} ({w.why.removeprefix('from ')})" for m, w in found.items() if w.pretrained]
    none = [m for m, w in found.items() if not w.pretrained]
    why = next((found[m].why for m in none), "")
    return ("pretrained weights here: " + (", ".join(have) if have else "none")
            + (f"; none for {', '.join(none)} ({why.split(' and ', 1)[-1] if ' and ' in why else why})" if none else "")
            + ("" if have else "; comp auto and comp train start from scratch (scripts/lite0_weights.py puts real "
               "ImageNet weights for tf_efficientnet_lite0 in the hub cache offline)"))
