"""Units of the winning techniques: soft-target and distillation losses, pseudo-label selection."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comp.tasks.losses import CrossEntropy, DistillLoss
from comp.techniques.pseudo import select


def test_soft_target_loss_equals_cross_entropy_on_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(16, 5)
    y = torch.randint(0, 5, (16,))
    one_hot = F.one_hot(y, 5).float()
    ce = CrossEntropy()
    torch.testing.assert_close(ce(logits, one_hot), F.cross_entropy(logits, y))
    # The distillation loss with alpha=1 and a one-hot teacher at T=1 is that same cross-entropy.
    kd = DistillLoss(CrossEntropy(), alpha=1.0, temperature=1.0)
    torch.testing.assert_close(kd(logits, y, one_hot), F.cross_entropy(logits, y), atol=1e-5, rtol=1e-5)
    # alpha=0 is the base loss alone; a teacher equal to the student costs nothing in the KL term.
    kd0 = DistillLoss(CrossEntropy(), alpha=0.0, temperature=3.0)
    torch.testing.assert_close(kd0(logits, y, one_hot), F.cross_entropy(logits, y))
    same = DistillLoss(CrossEntropy(), alpha=1.0, temperature=3.0)
    assert same(logits, y, logits.softmax(1)).item() == pytest.approx(0.0, abs=1e-5)


def test_distill_temperature_scales_gradients_by_t_squared():
    """Hinton's T^2: the soft term's gradient keeps its size as T grows (the KL's own shrinks as 1/T^2)."""
    torch.manual_seed(1)
    logits = torch.randn(64, 10) * 0.1
    teacher = torch.randn(64, 10).mul(0.1).softmax(1)
    y = torch.zeros(64, dtype=torch.long)
    norms = []
    for t in (4.0, 8.0):
        x = logits.clone().requires_grad_(True)
        DistillLoss(CrossEntropy(), alpha=1.0, temperature=t)(x, y, teacher).backward()
        norms.append(x.grad.norm().item())
    assert norms[1] == pytest.approx(norms[0], rel=0.1)


def test_pseudo_selection():
    p = np.array([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    assert select(p, 0.9, None).tolist() == [0, 2]
    assert select(p, None, 0.5).tolist() == [0, 2]
    assert select(p, None, 0.75).tolist() == [0, 1, 2]


def test_blend_teacher_weights_for_fold_k_are_searched_without_fold_k(workdir):
    """Leak suite, a blend as pseudo-label teacher: before issue 17 `comp pseudo --from SUBMISSION` blended every
    fold's test predictions with the ledger's weights, fit on the whole OOF, fold k's labels included. A member that
    memorised fold 0 (perfect there, random elsewhere) then earns weight by fold 0's labels alone; the per-fold
    search gives it none for fold 0."""
    import pandas as pd

    from comp.config import load_config
    from comp.infer.ensemble import greedy_weights
    from comp.techniques.pseudo import fold_safe_weights

    rng = np.random.default_rng(0)
    n, c = 300, 3
    y = rng.integers(0, c, n)
    fold = np.arange(n) % 3
    honest = np.eye(c)[np.where(rng.random(n) < 0.6, y, rng.integers(0, c, n))] * 0.7 + 0.1
    leaky = np.where((fold == 0)[:, None], np.eye(c)[y] * 0.97 + 0.01, rng.dirichlet(np.ones(c), n))
    classes = ["a", "b", "c"]
    for name, p in (("honest", honest), ("leaky", leaky)):
        (workdir / "runs" / name).mkdir(parents=True)
        df = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "fold": fold, "label": np.array(classes)[y]})
        pd.concat([df, pd.DataFrame(p, columns=classes)], axis=1).to_csv(workdir / "runs" / name / "oof.csv",
                                                                         index=False)
    everywhere = greedy_weights([honest, leaky], y)
    by_fold = fold_safe_weights(load_config(workdir / "comp.yaml"), ["honest", "leaky"])
    assert everywhere[1] > 0.3  # fold 0's labels bought the memoriser its weight
    assert by_fold[0][1] == 0 and by_fold[0][0] == 1  # without fold 0's rows it is worth nothing
    assert set(by_fold) == {0, 1, 2}
