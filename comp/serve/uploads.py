"""What ``comp app`` accepts from a client: files with an image extension comp reads, in an image format comp
reads, under the app's pixel cap (checked from the header, before any pixel is decoded); webcam/paste data URLs
decoded with a size cap into the upload folder under a name of comp's choosing.

    >>> rgb = load_upload("x.png", max_pixels=25_000_000)    # ImageProblem for anything else
    >>> path = save_data_url("data:image/png;base64,...", "/tmp/gradio/comp-app")

Pillow is only ever asked to open the formats comp reads (``Image.open(path, formats=...)``): EPS, PDF, PSD and
the rest of what Pillow knows are refused before a plugin runs (EPS would run Ghostscript). The app also puts
Pillow's own decompression-bomb guard back (``guard_pillow``), which ``comp.data.images`` switches off for the
training loader.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from comp.data.competition import IMAGE_EXTS
from comp.data.images import ImageProblem, draft, load_pixels, to_rgb
from comp.files import write_bytes

# Pillow format -> the extension comp gives a decoded data URL of that format.
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif",
           "WEBP": ".webp"}
OPEN_FORMATS = ["BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP"]  # Pillow's plugins for them (JPEG's opens MPO)
EXTENSIONS = tuple(IMAGE_EXTS)  # what comp init / comp check read
DEFAULT_MAX_PIXELS = 25_000_000
EXIF_ORIENTATION = 0x0112
MAX_BYTES = 64 * 2**20  # also Gradio's max_file_size for uploads
DATA_URL_FOLDER = "comp-app"


def open_restricted(fp) -> Image.Image:
    """``Image.open`` that tries only the formats comp reads (every plugin registered first: Pillow looks the
    named formats up among the registered ones)."""
    Image.init()
    return Image.open(fp, formats=OPEN_FORMATS)


def guard_pillow(max_pixels: int) -> None:
    """Pillow's own bomb check (an error beyond 2x) at the app's cap, for every Image.open in the app's process."""
    Image.MAX_IMAGE_PIXELS = int(max_pixels)


def check_extension(path: str | Path) -> None:
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        raise ImageProblem("not_allowed", f"{Path(path).name}: the app reads {', '.join(EXTENSIONS)} files "
                                          f"({suffix or 'no extension'} is not one)")


def open_upload(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The upload opened (header read, no pixel decoded) in a format comp reads, within ``max_pixels``."""
    name = Path(path).name
    check_extension(path)
    try:
        size = os.path.getsize(path)
    except OSError:
        raise ImageProblem("missing_file", f"{name} was not received") from None
    if size == 0:
        raise ImageProblem("empty_file", f"{name} is 0 bytes")
    try:
        im = open_restricted(path)
    except UnidentifiedImageError:
        raise ImageProblem("not_an_image", f"{name} is not a {', '.join(OPEN_FORMATS)} image") from None
    except Image.DecompressionBombError as e:  # Pillow's own guard (guard_pillow), beyond twice the cap
        n = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageProblem("too_large", f"{int(n.group(1)) if n else 0:,} pixels (from the file's header) is "
                                        f"over the app's --max-pixels {max_pixels:,}; nothing was decoded") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageProblem("unreadable", f"{name}: {type(e).__name__}") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageProblem("too_large", f"{w}x{h} = {w * h:,} pixels (from the file's header) is over the app's "
                                        f"--max-pixels {max_pixels:,}; nothing was decoded")
    return im


def load_upload(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The upload as an upright uint8 RGB array, decoded only after :func:`open_upload` accepted its header."""
    return read_upload(path, max_pixels)[0]


def read_upload(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, target: int | None = None
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """(the upload as an upright uint8 RGB array, its upright (width, height) in the file). ``target``: the model
    input side; a JPEG of at least twice that short side is decoded at reduced size (:func:`draft`)."""
    with open_upload(path, max_pixels) as im:
        w, h = im.size
        draft(im, target)
        load_pixels(im, path, shown=Path(path).name)
        if im.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # stored turned a quarter (read once loaded: PNG's
            w, h = h, w                                         # getexif would decode without load_pixels' checks)
        return np.ascontiguousarray(to_rgb(im)), (w, h)


def save_data_url(url: str, folder: str | Path, max_bytes: int = MAX_BYTES) -> Path:
    """Decode a ``data:...;base64,...`` URL into ``folder``/<sha1 of the bytes><extension of its format>.

    Nothing of the name comes from the client: the MIME type is ignored, the extension is the one of the format
    Pillow finds in the bytes' header; bytes in no format comp reads are refused, unwritten. The encoded text is
    measured before it is decoded."""
    _, _, data = url.partition(",")
    if len(data) > (max_bytes // 3 + 1) * 4 + 4:
        raise ImageProblem("too_large", f"the pasted/webcam image is over {max_bytes / 2**20:g} MB")
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        raise ImageProblem("not_an_image", "the pasted/webcam data is not base64 image data")
    try:
        with open_restricted(io.BytesIO(raw)) as im:
            ext = FORMATS.get(im.format or "")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        ext = None
    if ext is None:
        raise ImageProblem("not_allowed", f"the pasted/webcam data is not a {', '.join(OPEN_FORMATS)} image")
    folder = Path(folder).resolve()
    path = folder / f"{hashlib.sha1(raw).hexdigest()[:20]}{ext}"
    if path.parent != folder:  # cannot happen (hex + a fixed extension); kept as the guard it documents
        raise ImageProblem("not_allowed", "the pasted/webcam data got a name outside the upload folder")
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(path, raw)
    return path
