"""The one shared loader: awkward-but-valid files become upright 8-bit RGB; broken ones raise ImageProblem; a JPEG
bound for a small model input decodes at reduced size (draft) to nearly the same input."""

import numpy as np
import pytest
from bad_images import (
    pattern,
    save_16bit_png,
    save_cmyk_jpeg,
    save_exif_rotated_jpeg,
    save_huge_png,
    save_rgba_png,
    save_truncated_jpeg,
)
from PIL import Image

from comp.data.cache import load_images
from comp.data.images import ImageProblem, draft, load_rgb
from comp.data.preprocess import resize
from comp.data.sample_photo import photo_bytes


def _check_rgb(a: np.ndarray) -> None:
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    save_cmyk_jpeg(tmp_path / "c.jpg")
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    a = load_rgb(tmp_path / "c.jpg")
    _check_rgb(a)
    assert np.abs(a.astype(int) - pattern(101).astype(int)).mean() < 40  # same picture, after JPEG loss


def test_rgba_png_goes_on_white(tmp_path):
    save_rgba_png(tmp_path / "a.png")
    a = load_rgb(tmp_path / "a.png")
    _check_rgb(a)
    assert (a[:8] == 255).all()  # transparent half
    assert (a[8:] == (200, 0, 0)).all()


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    src = save_16bit_png(tmp_path / "g16.png")
    a = load_rgb(tmp_path / "g16.png")
    _check_rgb(a)
    expected = np.round(src.astype(float) * 255 / 65535)
    assert np.abs(a[..., 0].astype(float) - expected).max() <= 1
    assert (a[..., 0] == 255).mean() < 0.05  # Pillow's plain convert would make almost all of it 255
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_exif_rotation_is_applied(tmp_path):
    save_exif_rotated_jpeg(tmp_path / "r.jpg")
    a = load_rgb(tmp_path / "r.jpg")
    assert a.shape == (40, 20, 3)  # stored 40 wide x 20 high, shown rotated
    top, bottom = a[5, 10].astype(int), a[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60  # the left (red) half is on top after a clockwise turn
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("mode", ["P", "L", "1", "LA"])
def test_palette_gray_bilevel(tmp_path, mode):
    Image.fromarray(pattern(7)).convert(mode).save(tmp_path / "x.png")
    a = load_rgb(tmp_path / "x.png")
    _check_rgb(a)
    assert a.shape == (24, 24, 3)


def test_broken_files_raise_problem_codes(tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    save_truncated_jpeg(tmp_path / "trunc.jpg")
    (tmp_path / "text.jpg").write_text("hello")
    save_huge_png(tmp_path / "huge.png")
    codes = {}
    for name in ["zero.jpg", "trunc.jpg", "text.jpg", "huge.png", "absent.png"]:
        with pytest.raises(ImageProblem) as e:
            load_rgb(tmp_path / name)
        codes[name] = e.value.problem
    assert codes == {"zero.jpg": "empty_file", "trunc.jpg": "truncated", "text.jpg": "not_an_image",
                     "huge.png": "too_large", "absent.png": "missing_file"}
    # the limit is a setting: a smaller one refuses an ordinary image
    Image.fromarray(pattern(1)).save(tmp_path / "ok.png")
    with pytest.raises(ImageProblem, match="max_pixels"):
        load_rgb(tmp_path / "ok.png", max_pixels=100)


# ------------------------------------------------------------------ JPEG draft decoding


def _photo(path, orientation=1, seed=3):
    """A photo-sample JPEG (300-700 px a side) of a Fashion-MNIST-like blob."""
    item = np.zeros((28, 28), np.uint8)
    item[3:25, 6:22] = 220
    data, size = photo_bytes(item, np.random.default_rng(seed), orientation)
    path.write_bytes(data)
    return size  # upright (w, h)


@pytest.mark.parametrize("target", [64, 128])
@pytest.mark.parametrize("mode", ["stretch", "crop", "letterbox"])
def test_draft_decode_matches_the_full_decode_after_resizing(tmp_path, target, mode):
    path = tmp_path / "p.jpg"
    w, h = _photo(path)
    with Image.open(path) as im:
        assert draft(im, target) and im.size[0] < w and im.size[1] < h  # decoded at 1/2..1/8 scale
        assert min(im.size) >= target
    small = load_rgb(path, target=target)
    assert small.shape[0] < h and min(small.shape[:2]) >= target
    diff = np.abs(resize(small, target, mode).astype(int) - resize(load_rgb(path), target, mode).astype(int))
    assert diff.mean() < 3, diff.mean()


def test_draft_keeps_exif_rotation_and_skips_what_it_cannot_shrink(tmp_path):
    path = tmp_path / "side.jpg"
    w, h = _photo(path, orientation=6)
    a = load_rgb(path, target=64)
    assert a.shape[0] < h and (a.shape[0] > a.shape[1]) == (h > w)  # upright, and smaller
    assert np.abs(resize(a, 64).astype(int) - resize(load_rgb(path), 64).astype(int)).mean() < 3
    with Image.open(path) as im:
        assert not draft(im, min(w, h) // 2 + 1)  # target over half the short side: full decode
        assert not draft(im, None)
    Image.open(path).convert("RGB").save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as im:
        assert not draft(im, 32)  # only JPEGs decode at reduced size


def test_the_decode_cache_decodes_jpegs_in_draft(tmp_path):
    paths = [tmp_path / f"{i}.jpg" for i in range(3)]
    for i, p in enumerate(paths):
        _photo(p, orientation=(1, 8, 3)[i], seed=i)
    arr = load_images(paths, 48, "crop", cache="memory", workers=1, progress=False)
    for p, got in zip(paths, arr):
        assert np.array_equal(got, resize(load_rgb(p, target=48), 48, "crop"))
