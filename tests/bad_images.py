"""Builders for awkward image files and a competition folder full of them (used by test_images/check/folds)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def pattern(seed: int, size: int = 24) -> np.ndarray:
    """A distinct RGB image per seed."""
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def save_cmyk_jpeg(path: Path) -> None:
    Image.fromarray(pattern(101)).convert("CMYK").save(path, "JPEG", quality=95)


def save_rgba_png(path: Path) -> None:
    a = np.zeros((16, 16, 4), np.uint8)
    a[..., 0] = 200
    a[..., 3] = 255
    a[:8, :, 3] = 0  # top half fully transparent -> white
    Image.fromarray(a, "RGBA").save(path)


def save_16bit_png(path: Path) -> np.ndarray:
    """A 16-bit grayscale PNG whose values span 0..65535; returns the 16-bit array."""
    a = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)
    Image.fromarray(a).save(path)
    return a


def save_exif_rotated_jpeg(path: Path) -> None:
    """Stored 40 wide x 20 high, EXIF orientation 6 (show rotated 90 degrees clockwise): upright it is 20x40."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)  # left half red
    a[:, 20:] = (0, 0, 255)  # right half blue
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, "JPEG", quality=95, exif=exif.tobytes())


def save_truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(pattern(102, 64)).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])


def save_huge_png(path: Path, side: int = 20000) -> None:
    """A 20000x20000 1-bit PNG: a few kB on disk, 400 million pixels decoded."""
    Image.new("1", (side, side)).save(path)


def build_bad_competition(root: Path) -> dict:
    """A competition folder with one of every kind of problem plus awkward-but-fine images.

    Ids carry their extension. Returns {"problems": {id: problem}, "fine": [ids that must pass]}.
    """
    imgs = root / "train_images"
    imgs.mkdir(parents=True)
    rows: list[tuple[str, str]] = []
    problems: dict[str, str] = {}
    fine: list[str] = []
    for i in range(12):  # healthy images, two classes
        name = f"ok_{i:02d}.png"
        Image.fromarray(pattern(i)).save(imgs / name)
        rows.append((name, "cat" if i % 2 else "dog / wolf"))
        fine.append(name)
    (imgs / "zero.jpg").write_bytes(b"")
    rows.append(("zero.jpg", "cat"))
    problems["zero.jpg"] = "empty_file"
    save_truncated_jpeg(imgs / "truncated.jpg")
    rows.append(("truncated.jpg", "cat"))
    problems["truncated.jpg"] = "truncated"
    (imgs / "text.jpg").write_text("this is not a picture\n")
    rows.append(("text.jpg", "dog / wolf"))
    problems["text.jpg"] = "not_an_image"
    save_huge_png(imgs / "huge.png")
    rows.append(("huge.png", "cat"))
    problems["huge.png"] = "too_large"
    # the same pixels under two labels (different files, different formats)
    Image.fromarray(pattern(500)).save(imgs / "twin_a.png")
    Image.fromarray(pattern(500)).save(imgs / "twin_b.bmp")
    rows += [("twin_a.png", "cat"), ("twin_b.bmp", "dog / wolf")]
    problems["twin_a.png"] = problems["twin_b.bmp"] = "label_conflict"
    # a path that leaves the image folder: a real image there, which must never be opened
    Image.fromarray(pattern(501)).save(root / "secret.png")
    rows.append(("../secret.png", "cat"))
    problems["../secret.png"] = "unsafe_path"
    rows.append(("missing.png", "cat"))
    problems["missing.png"] = "missing_file"
    Image.fromarray(pattern(502)).save(imgs / "nolabel.png")
    rows.append(("nolabel.png", ""))
    problems["nolabel.png"] = "empty_label"
    Image.fromarray(pattern(503)).save(imgs / "dup.png")
    rows += [("dup.png", "cat"), ("dup.png", "cat")]
    problems["dup.png"] = "duplicate_id"
    # awkward but fine
    save_cmyk_jpeg(imgs / "cmyk.jpg")
    save_rgba_png(imgs / "rgba.png")
    save_16bit_png(imgs / "gray16.png")
    save_exif_rotated_jpeg(imgs / "rotated.jpg")
    Image.fromarray(pattern(504)).convert("P").save(imgs / "palette.png")
    Image.fromarray(pattern(505)).convert("L").save(imgs / "gray.png")
    for j, name in enumerate(["cmyk.jpg", "rgba.png", "gray16.png", "rotated.jpg", "palette.png", "gray.png"]):
        rows.append((name, "cat" if j % 2 else "dog / wolf"))
        fine.append(name)
    pd.DataFrame(rows, columns=["image_id", "label"]).to_csv(root / "train.csv", index=False)
    # test side: two good images and one id in sample_submission.csv with no file
    (root / "test_images").mkdir()
    for k in range(2):
        Image.fromarray(pattern(900 + k)).save(root / "test_images" / f"t{k}.png")
    sub = pd.DataFrame({"image_id": ["t0.png", "t1.png", "t_missing.png"], "label": "cat"})
    sub.to_csv(root / "sample_submission.csv", index=False)
    return {"problems": problems, "fine": fine, "test_problems": {"t_missing.png": "missing_file"}}


def bad_config(workdir: Path, root: Path) -> Path:
    import yaml

    path = workdir / "comp.yaml"
    data = {"root": str(root), "id_has_ext": True}
    path.write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
    return path
