"""Pretrained weights found and used by default (model.pretrained: auto), real ImageNet weights offline, and a new
head that starts at a loss of ln(classes) for any backbone."""

import math

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_sample_image

from comp import weights
from comp.config import FINETUNE, from_dict
from comp.train.model import create_model


def _flower(size: int = 224) -> torch.Tensor:
    """scikit-learn's sample photo of a daisy, resized, normalised with mean and std 0.5 (EfficientNet-Lite)."""
    img = torch.tensor(load_sample_image("flower.jpg")).permute(2, 0, 1).float()[None] / 255
    h, w = img.shape[-2:]
    img = img[..., :, (w - h) // 2: (w - h) // 2 + h]  # the centre square, as timm's eval transform crops
    return (torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", antialias=True) - 0.5) / 0.5


def test_the_converted_wheel_is_timms_lite0_and_the_flower_is_a_daisy(lite0_hub):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=True).eval()  # HF_HUB_OFFLINE=1: the cache
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    with torch.no_grad():
        top = model(_flower()).softmax(-1)[0].topk(3)
    assert top.indices[0].item() == 985, top  # ImageNet class 985: daisy
    assert top.values[0].item() > 0.2


def test_auto_uses_the_hub_cache_and_says_so(lite0_hub, tmp_path):
    cfg = from_dict({"model": {"name": "tf_efficientnet_lite0"}})
    assert cfg.model.pretrained is True
    assert "from the local hub cache (timm/tf_efficientnet_lite0.in1k)" in cfg.derived["model.pretrained"]
    assert cfg.train.lr == FINETUNE["lr"] and "fine-tuning" in cfg.derived["train.lr"]
    model = create_model(cfg, 1000)
    ref = timm.create_model("tf_efficientnet_lite0", pretrained=True)
    assert torch.equal(model.conv_stem.weight, ref.conv_stem.weight)  # the real weights, not a random init


def test_without_weights_auto_trains_from_scratch_and_says_why(lite0_hub):
    cfg = from_dict({"model": {"name": "resnet18"}})
    assert cfg.model.pretrained is False and cfg.train.lr == 3e-3
    why = cfg.derived["model.pretrained"]
    assert "from scratch: no weights for resnet18 in the hub cache" in why and "HF_HUB_OFFLINE" in why
    off = from_dict({"model": {"name": "tf_efficientnet_lite0", "pretrained": False}})
    assert off.model.pretrained is False and "model.pretrained" not in off.derived and off.train.lr == 3e-3


def test_a_pretrained_file_wins_over_the_cache(lite0_hub, tmp_path):
    donor = timm.create_model("tf_efficientnet_lite0", num_classes=7)
    torch.nn.init.constant_(donor.conv_stem.weight, 0.25)
    save_file(donor.state_dict(), str(tmp_path / "mine.safetensors"))
    cfg = from_dict({"model": {"name": "tf_efficientnet_lite0", "pretrained_file": str(tmp_path / "mine.safetensors")}})
    assert weights.resolve(cfg.model.name, cfg.model.pretrained, cfg.model.pretrained_file).source == "file"
    model = create_model(cfg, 7)
    assert torch.all(model.conv_stem.weight == 0.25)
    with pytest.raises(ValueError, match="model.pretrained_file"):
        create_model(from_dict({"model": {"pretrained_file": str(tmp_path / "none.safetensors")}}), 7)


def test_cache_lookup_by_tag_and_hub_prefix(tmp_path):
    snap = tmp_path / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    assert weights.cached("resnet18", tmp_path)[0] == "timm/resnet18.a1_in1k"
    assert weights.cached("resnet18.a1_in1k", tmp_path)[0] == "timm/resnet18.a1_in1k"
    assert weights.cached("resnet18.tv_in1k", tmp_path) is None
    assert weights.cached("resnet34", tmp_path) is None
    assert weights.cached("hf-hub:timm/resnet18.a1_in1k", tmp_path)[0] == "timm/resnet18.a1_in1k"


def _new_head_loss(model: torch.nn.Module, x: torch.Tensor, classes: int) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(x)
    y = torch.arange(len(x)) % classes
    return torch.nn.functional.cross_entropy(logits, y).item()


@pytest.mark.parametrize("name,size", [("tf_efficientnet_lite0", 128), ("resnet18", 64), ("convnext_atto", 64),
                                       ("vit_tiny_patch16_224", 224)])
def test_a_new_head_starts_at_ln_classes(lite0_hub, tmp_path, name, size):
    """tf_efficientnet_lite0 has its real ImageNet weights; the others a 1,000-class checkpoint of their own (no hub
    here), loaded as model.pretrained_file: either way the 10-class head is new and starts at a loss of ln(10)."""
    cfg = {"name": name}
    if name != "tf_efficientnet_lite0":
        donor = timm.create_model(name)
        save_file(donor.state_dict(), str(tmp_path / "w.safetensors"))
        cfg["pretrained_file"] = str(tmp_path / "w.safetensors")
    x = torch.cat([_flower(size), _flower(size).flip(-1), torch.randn(2, 3, size, size)])
    loss = _new_head_loss(create_model(from_dict({"model": cfg}), 10), x, 10)
    assert abs(loss - math.log(10)) < 0.2, loss
    if name == "tf_efficientnet_lite0":  # timm's own head init on ImageNet features: far from ln(10)
        timm_head = create_model(from_dict({"model": {**cfg, "head_init_scale": 1.0}}), 10)
        assert _new_head_loss(timm_head, x, 10) > math.log(10) + 1.0


def test_a_head_of_the_same_size_is_kept(lite0_hub):
    model = create_model(from_dict({"model": {"name": "tf_efficientnet_lite0"}}), 1000)
    assert model.get_classifier().weight.abs().sum() > 0  # the ImageNet head itself, not zeroed
    probs = np.asarray(model.eval()(_flower()).softmax(-1)[0].detach())
    assert probs.argmax() == 985
