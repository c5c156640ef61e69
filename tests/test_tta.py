import numpy as np
import pytest
import torch

from comp.infer.tta import FIXED_VIEWS, apply_view, check_views, create_view


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)


REFERENCE = {
    "identity": lambda x: x,
    "hflip": lambda x: x[:, :, ::-1],
    "vflip": lambda x: x[:, ::-1],
    "hvflip": lambda x: x[:, ::-1, ::-1],
    "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "rot270": lambda x: np.rot90(x, -1, axes=(1, 2)),
}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_exact_views_on_uint8_nhwc(batch, name):
    out = apply_view(name, batch)
    assert out.dtype == np.uint8 and out.shape == batch.shape
    np.testing.assert_array_equal(out, REFERENCE[name](batch))


def test_flipped_input_gives_flipped_view(batch):
    flipped = batch[:, :, ::-1].copy()
    np.testing.assert_array_equal(apply_view("hflip", flipped), batch)
    np.testing.assert_array_equal(apply_view("vflip", batch[:, ::-1].copy()), batch)
    assert not np.array_equal(apply_view("identity", flipped), batch)


@pytest.mark.parametrize("name", list(FIXED_VIEWS) + ["scale0.9", "scale1.1"])
def test_views_commute_with_normalisation(batch, name):
    """A view on the normalised NCHW tensor equals normalising the viewed uint8 images."""
    mean = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)

    def norm(x):
        return (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255 - mean) / std

    a = create_view(name)(norm(batch))
    b = norm(create_view(name)(batch))
    assert a.shape == (3, 3, 16, 16)
    # uint8 views round to whole pixel values: at most half a grey level apart
    tol = 1e-5 if not name.startswith("scale") else 0.5 / 255 / 0.2 + 1e-5
    assert (a - b).abs().max().item() <= tol


def test_shift_moves_content_by_a_sixteenth():
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 10, 12] = 255
    assert np.argwhere(apply_view("shift", x)[0, :, :, 0] == 255).tolist() == [[12, 14]]
    assert np.argwhere(apply_view("shift_ul", x)[0, :, :, 0] == 255).tolist() == [[8, 10]]


def test_scale_views_zoom_about_the_centre():
    x = np.zeros((1, 40, 40, 3), np.uint8)
    x[:, 10:30, 10:30] = 200  # a centred 20px square

    def side(img):
        return int((img[0, 20, :, 0] > 100).sum())

    assert side(apply_view("scale1.2", x)) == 24
    assert side(apply_view("scale0.8", x)) == 16
    flat = np.full((2, 24, 24, 3), 77, np.uint8)
    for v in ("scale0.9", "scale1.1", "shift"):
        np.testing.assert_array_equal(apply_view(v, flat), flat)  # edges repeat: no black borders


def test_unknown_and_bad_views_are_refused():
    with pytest.raises(ValueError, match=r"Unknown TTA view 'hflp', expected one of \('identity', 'hflip'"):
        create_view("hflp")
    with pytest.raises(ValueError, match=r"scale factor must be in \[0.5, 2\]"):
        create_view("scale3")
    with pytest.raises(ValueError, match="listed twice"):
        check_views(["hflip", "identity", "HFLIP"])
    assert check_views([" Identity", "hflip"]) == ["identity", "hflip"]
