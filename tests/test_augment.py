"""Augmentation presets, albumentations dict pipelines, Mixup wiring and the batch path of the dataset."""

import albumentations as A
import numpy as np
import pytest
import torch
import yaml

from comp.config import AugmentConfig, ConfigError, load_config
from comp.data.dataset import CachedImages, EpochSampler, to_tensor_batch
from comp.tasks.single import balanced_weights
from comp.train.augment import PRESETS, build_mixup, build_transform, from_pipeline, preset, preset_dict


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


# ---------------------------------------------------------------- device (batched) augmentation


def _batch(n=16, value=None):
    if value is not None:
        return torch.full((n, 32, 32, 3), value, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("name", ["light", "medium", "heavy"])
def test_device_presets_are_per_sample_and_seeded_by_seed_epoch_rank(name):
    from comp.train.batch_augment import BatchAugment

    one = _batch(1).expand(64, 32, 32, 3).contiguous()  # the same image 64 times
    a = BatchAugment(name, seed=1, rank=0)
    a.set_epoch(3)
    x = a(one)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 255
    distinct = {tuple(v.flatten()[:200].tolist()) for v in x.round()}
    assert len(distinct) > 10, "samples of one batch must get their own parameters"
    a.set_epoch(3)
    assert torch.equal(a(one), x), "the same (seed, epoch, rank) must give the same batch"
    a.set_epoch(4)
    assert not torch.equal(a(one), x)
    b = BatchAugment(name, seed=1, rank=1)
    b.set_epoch(3)
    assert not torch.equal(b(one), x)


def test_device_ops_do_what_they_say():
    from comp.train.batch_augment import BatchAugment, Spec

    u8 = _batch(8)
    x = u8.permute(0, 3, 1, 2).float()
    a = BatchAugment("light")
    a.spec = Spec(hflip=1.0)  # flip only: exact
    assert torch.equal(a(u8), x.flip(3))
    a.spec = Spec(hflip=1.0, p_affine=1.0)  # flip through the identity affine (one grid_sample): near exact
    assert torch.allclose(a(u8), x.flip(3), atol=1e-3)
    a.spec = Spec(hflip=0.0, p_affine=1.0, translate=0.25)  # shifts bring in black borders
    assert (a(_batch(8, 255)) == 0).any()
    a.spec = Spec(hflip=0.0, p_color=1.0, brightness=0.0, contrast=0.5)
    y = a(_batch(8, 100))
    assert not torch.equal(y, torch.full_like(y, 100.0)) and (y.std(dim=(1, 2, 3)) < 1e-4).all()
    a.spec = Spec(hflip=0.0, p_erase=1.0, holes=2)
    y = a(_batch(8, 255))
    assert ((y == 0).flatten(1).any(1)).all() and (y == 255).any()


def test_augment_on_selects_the_path(tmp_path):
    from comp.train.batch_augment import build_batch_augment

    cfg_path = tmp_path / "comp.yaml"
    cfg_path.write_text("augment: {preset: medium}\n")
    assert load_config(cfg_path).augment.on == "device"
    assert load_config(cfg_path, overrides=["augment.on=cpu"]).augment.on == "cpu"
    with pytest.raises(ConfigError, match=r"augment\.on"):
        load_config(cfg_path, overrides=["augment.on=gpu"])
    assert build_batch_augment("none", 0, 0) is None


def test_to_tensor_batch_normalises_the_augmented_batch():
    from comp.train.batch_augment import BatchAugment, Spec

    u8 = _batch(4)
    a = BatchAugment("light")
    a.spec = Spec(hflip=0.0)
    plain = to_tensor_batch(u8, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    assert torch.allclose(to_tensor_batch(u8, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], augment=a), plain, atol=1e-5)
    cl = to_tensor_batch(u8, [0.5] * 3, [0.5] * 3, channels_last=True, augment=a)
    assert cl.is_contiguous(memory_format=torch.channels_last)
