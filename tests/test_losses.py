"""Losses and class weights: values against their definitions and against sklearn."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from comp.config import ConfigError, TrainConfig
from comp.tasks.losses import LOSSES, FocalLoss, SoftMacroF1Loss, class_weights, create_loss


def logits_targets(n=64, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def test_focal_with_gamma_zero_is_cross_entropy_and_smaller_with_gamma():
    x, y = logits_targets()
    assert torch.allclose(FocalLoss(gamma=0.0)(x, y), F.cross_entropy(x, y), atol=1e-6)
    assert FocalLoss(gamma=2.0)(x, y) < F.cross_entropy(x, y)


def test_soft_f1_matches_sklearn_on_confident_predictions_and_has_gradients():
    x, y = logits_targets(n=200, c=4, seed=1)
    sharp = x * 1000  # softmax becomes one-hot: the soft F1 equals the hard one
    loss = SoftMacroF1Loss()(sharp, y)
    f1 = f1_score(y.numpy(), sharp.argmax(1).numpy(), average="macro")
    assert math.isclose(1 - loss.item(), f1, abs_tol=1e-4)
    x.requires_grad_(True)
    SoftMacroF1Loss()(x, y).backward()
    assert x.grad.abs().sum() > 0


def test_perfect_predictions_give_near_zero_soft_f1():
    y = torch.arange(5).repeat(10)
    assert SoftMacroF1Loss()(F.one_hot(y, 5).float() * 50, y).item() < 1e-3


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_takes_index_and_soft_targets(name):
    x, y = logits_targets()
    loss = create_loss(TrainConfig(loss=name, label_smoothing=0.1), class_counts=[10, 20, 30, 40, 50])
    hard = loss(x, y)
    soft = loss(x, F.one_hot(y, 5).float() * 0.9 + 0.1 / 5)  # what Mixup gives with smoothing 0.1 and lam 1
    assert torch.isfinite(hard) and torch.isfinite(soft)
    assert math.isclose(hard.item(), soft.item(), rel_tol=1e-4, abs_tol=1e-5)


def test_ce_plus_soft_f1_is_the_weighted_sum():
    x, y = logits_targets()
    t = TrainConfig(loss="ce+soft_f1", soft_f1_weight=0.3)
    expected = F.cross_entropy(x, y) + 0.3 * SoftMacroF1Loss()(x, y)
    assert torch.allclose(create_loss(t)(x, y), expected, atol=1e-6)


def test_class_weights_methods():
    counts = [100, 10, 1]
    bal = class_weights("balanced", counts).numpy()
    assert np.allclose(bal.mean(), 1) and np.allclose(bal[1] / bal[0], 10, rtol=1e-4)
    sq = class_weights("sqrt_inverse", counts).numpy()
    assert np.allclose(sq[2] / sq[0], 10, rtol=1e-4)  # sqrt(100)
    eff = class_weights("effective_num", counts).numpy()
    assert eff[2] > eff[1] > eff[0]
    assert class_weights(None, counts) is None


def test_weighted_ce_equals_torch_weighted_ce():
    x, y = logits_targets()
    counts = np.bincount(y.numpy(), minlength=5)
    w = class_weights("inverse", counts)
    got = create_loss(TrainConfig(loss="ce", class_weights="inverse"), counts)(x, y)
    assert torch.allclose(got, F.cross_entropy(x, y, weight=w), atol=1e-6)


def test_unknown_names_are_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.loss.*'ce'"):
        create_loss(TrainConfig(loss="cross_entropy"))
    with pytest.raises(ConfigError, match=r"train\.class_weights.*balanced"):
        create_loss(TrainConfig(class_weights="bogus"), [1, 2])
    with pytest.raises(ConfigError, match="soft_f1"):
        create_loss(TrainConfig(loss="soft_f1", class_weights="balanced"), [1, 2])
