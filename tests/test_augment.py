"""Augmentation presets, albumentations dict pipelines, Mixup wiring and the batch path of the dataset."""

import albumentations as A
import numpy as np
import pytest
import torch
import yaml

from comp.augment import PRESETS, build_mixup, build_transform, from_pipeline, preset, preset_dict
from comp.config import AugmentConfig, ConfigError, load_config
from comp.dataset import CachedImages, EpochSampler, balanced_weights, to_tensor_batch


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_keep_size_and_dtype(name, images):
    t = build_transform(AugmentConfig(preset=name), 32)
    if name == "none":
        assert t is None
        return
    out = t(image=images[0])["image"]
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_preset_round_trips_through_the_dict_form(images):
    d = preset_dict("heavy", 32)
    t = from_pipeline(d)
    assert [type(x).__name__ for x in t.transforms] == [type(x).__name__ for x in preset("heavy", 32).transforms]
    t.set_random_seed(3)
    a = t(image=images[0])["image"]
    t.set_random_seed(3)
    assert np.array_equal(a, t(image=images[0])["image"])


def test_pipeline_from_yaml_config(tmp_path, images):
    pipe = {"transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [
        {"__class_fullname__": "HorizontalFlip", "p": 1.0}]}}
    cfg_path = tmp_path / "comp.yaml"
    cfg_path.write_text(yaml.safe_dump({"augment": {"pipeline": pipe}}))
    cfg = load_config(cfg_path)
    t = build_transform(cfg.augment, 32)
    assert np.array_equal(t(image=images[0])["image"], images[0][:, ::-1])


def test_bad_pipelines_are_config_errors():
    with pytest.raises(ConfigError, match=r"augment\.pipeline"):
        build_transform(AugmentConfig(pipeline={"transform": {"__class_fullname__": "NoSuchTransform"}}), 32)
    resize = A.to_dict(A.Compose([A.Resize(16, 16)]))
    with pytest.raises(ConfigError, match=r"keep images 32x32x3"):
        build_transform(AugmentConfig(pipeline=resize), 32)
    with pytest.raises(ConfigError, match=r"augment\.preset"):
        preset("extreme", 32)


def test_mixup_only_when_asked_and_gives_soft_targets():
    assert build_mixup(AugmentConfig(), 10, 0.0) is None
    mix = build_mixup(AugmentConfig(mixup=0.2, cutmix=1.0), 10, 0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8)
    xm, t = mix(x, y)
    assert xm.shape == x.shape and t.shape == (8, 10)
    assert torch.allclose(t.sum(1), torch.ones(8))


def test_to_tensor_batch_normalises_like_the_definition(images):
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    x = to_tensor_batch(images, mean, std)
    ref = (torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255 - torch.tensor(mean)[:, None, None]) / \
        torch.tensor(std)[:, None, None]
    assert x.shape == (40, 3, 32, 32) and x.is_contiguous()
    assert torch.allclose(x, ref, atol=1e-5)
    cl = to_tensor_batch(torch.from_numpy(images), mean, std, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.allclose(cl, ref, atol=1e-5)


def test_dataset_batches_are_a_function_of_seed_and_epoch(images):
    labels = np.arange(40) % 4
    rows = np.arange(5, 35)
    ds = CachedImages(images, rows, labels[rows], preset("medium", 32), seed=1)
    batch = [3, 0, 7, 1]
    ds.set_epoch(2)
    a = ds.__getitems__(batch)
    ds.set_epoch(5)
    b = ds.__getitems__(batch)
    ds.set_epoch(2)
    c = ds.__getitems__(batch)
    assert torch.equal(a[0], c[0]) and not torch.equal(a[0], b[0])
    assert a[1].tolist() == labels[rows][batch].tolist() and a[2].tolist() == batch
    plain = CachedImages(images, rows, labels[rows])
    assert np.array_equal(plain.__getitems__(batch)[0].numpy(), images[rows[batch]])


def test_sampler_is_epoch_seeded_and_balanced_sampler_evens_classes():
    s = EpochSampler(100, seed=0)
    s.set_epoch(1)
    a = list(s)
    s.set_epoch(2)
    assert sorted(a) == list(range(100)) and a != list(s)
    s.set_epoch(1)
    assert a == list(s)
    labels = np.array([0] * 90 + [1] * 10)
    b = EpochSampler(100, 0, balanced_weights(labels))
    drawn = labels[list(b)]
    assert 30 < (drawn == 1).sum() < 70  # about half, instead of 10%
