"""A tiny self-contained HTML page builder for ``comp eda`` and ``comp analyze``.

A :class:`Report` holds sections; a section holds paragraphs, notes, tables, figures and thumbnail galleries.
``Report.write(folder)`` writes ``folder/index.html`` with inline CSS and no JavaScript; images are PNG files in
the same folder (figures beside ``index.html``, thumbnails under ``thumbs/``) referenced by relative paths, so
the folder can be zipped, moved or opened from ``file://`` as is.

Class names may hold '/', spaces or any Unicode: they go into the page escaped and never into a file name raw
(:func:`safe_name`).
"""

from __future__ import annotations

import datetime as _dt
import html
import re
import shutil
import unicodedata
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from comp import __version__
from comp.errors import OutputExists
from comp.files import atomic_dir, write_text

GENERATOR = "comp-report"
PAGE = "index.html"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 48px;
color:#1d2330;line-height:1.45}
h1{margin:24px 0 4px}h2{border-bottom:2px solid #e3e6ec;padding-bottom:4px;margin-top:36px}
.sub{color:#5b6475;margin:0 0 12px}nav ol{columns:2;padding-left:20px}nav a{text-decoration:none}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13px}th,td{border:1px solid #d8dce4;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f1f3f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff8e1;border-left:4px solid #f5b300;padding:6px 10px;margin:8px 0}
.bad{background:#fdecea;border-left:4px solid #d93025;padding:6px 10px;margin:8px 0}
.ok{background:#e8f5e9;border-left:4px solid #34a853;padding:6px 10px;margin:8px 0}
figure{margin:8px 0 16px}figure img{max-width:100%;border:1px solid #e3e6ec}figcaption{color:#5b6475;font-size:13px}
.gallery{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0 14px}.thumb{width:132px;font-size:11px;color:#3c4454;
overflow-wrap:anywhere}.thumb img{width:128px;height:128px;object-fit:contain;background:#222;image-rendering:pixelated;
display:block;border:1px solid #ccd}.row-label{font-weight:600;margin:10px 0 2px}td img{width:72px;height:72px;
object-fit:contain;background:#222;image-rendering:pixelated;display:block}code,pre{background:#f1f3f7;padding:1px 4px}
pre{padding:8px;overflow-x:auto}.wide .thumb{width:260px}.wide .thumb img{width:256px}
"""


def safe_name(name: str, index: int | None = None, limit: int = 40) -> str:
    """A file-name-safe form of a class name (ASCII letters, digits, '-', '_'), prefixed with its index.

    ``safe_name("T-shirt/top", 0) == "000_T-shirt-top"``; the index keeps names that differ only in dropped
    characters apart.
    """
    ascii_ = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_).strip("-")[:limit] or "class"
    return f"{index:03d}_{slug}" if index is not None else slug


def anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


@dataclass
class Img:
    """An image in a table cell or a gallery: ``src`` relative to the report folder."""

    src: str
    alt: str = ""
    caption: str = ""  # shown under a gallery thumbnail; lines separated by '\n'


@dataclass
class Raw:
    """HTML inserted as is (built by this module; never user text)."""

    html: str


def _fmt(v: Any) -> tuple[str, bool]:
    """(escaped html, is numeric) for one table cell."""
    if isinstance(v, Img):
        return f'<img src="{html.escape(v.src)}" alt="{html.escape(v.alt)}">', False
    if isinstance(v, Raw):
        return v.html, False
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "", False
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), False
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}", True
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return (f"{f:.4f}" if abs(f) < 1000 else f"{f:,.0f}"), True
    return html.escape(str(v)), False


@dataclass
class Section:
    title: str
    id: str
    parts: list[str] = field(default_factory=list)

    def p(self, text: str) -> Section:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def note(self, text: str, kind: str = "note") -> Section:
        """A highlighted line: kind ``note`` (yellow, e.g. 'computed on a sample'), ``bad`` or ``ok``."""
        self.parts.append(f'<div class="{kind}">{html.escape(text)}</div>')
        return self

    def code(self, text: str) -> Section:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, rows: Any, columns: Sequence[str] | None = None, max_rows: int | None = None,
              caption: str = "") -> Section:
        """A table from a DataFrame or a list of dicts/lists; cells may be :class:`Img` or :class:`Raw`."""
        import pandas as pd

        if isinstance(rows, pd.DataFrame):
            columns = [str(c) for c in rows.columns] if columns is None else list(columns)
            records = rows.itertuples(index=False, name=None)
            total = len(rows)
        else:
            rows = list(rows)
            total = len(rows)
            if rows and isinstance(rows[0], dict):
                columns = list(columns or rows[0].keys())
                records = ([r.get(c) for c in columns] for r in rows)
            else:
                records = iter(rows)
        out = ["<table>"]
        if caption:
            out.append(f"<caption>{html.escape(caption)}</caption>")
        out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns or []) + "</tr>")
        for i, rec in enumerate(records):
            if max_rows is not None and i >= max_rows:
                break
            cells = []
            for v in rec:
                s, num = _fmt(v)
                cells.append(f'<td class="num">{s}</td>' if num else f"<td>{s}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table>")
        self.parts.append("".join(out))
        if max_rows is not None and total > max_rows:
            self.note(f"showing the first {max_rows:,} of {total:,} rows")
        return self

    def image(self, src: str, alt: str, caption: str = "") -> Section:
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}">{cap}</figure>')
        return self

    def gallery(self, items: Iterable[Img], label: str = "", wide: bool = False) -> Section:
        """A row of thumbnails with captions (``label`` above it, e.g. a class name); ``wide`` for 2:1 images."""
        out = [f'<div class="row-label">{html.escape(label)}</div>'] if label else []
        out.append('<div class="gallery wide">' if wide else '<div class="gallery">')
        for it in items:
            cap = "<br>".join(html.escape(line) for line in it.caption.split("\n")) if it.caption else ""
            out.append(f'<div class="thumb"><img src="{html.escape(it.src)}" alt="{html.escape(it.alt)}">{cap}</div>')
        out.append("</div>")
        self.parts.append("".join(out))
        return self

    def link(self, href: str, text: str) -> Section:
        self.parts.append(f'<p><a href="{html.escape(href)}">{html.escape(text)}</a></p>')
        return self


class Report:
    """An HTML page of sections; ``write`` puts it at ``folder/index.html``."""

    def __init__(self, title: str, subtitle: str = ""):
        self.title = title
        self.subtitle = subtitle
        self.sections: list[Section] = []

    def section(self, title: str, id: str | None = None) -> Section:
        sid = id or anchor(title)
        taken = {s.id for s in self.sections}
        base, k = sid, 2
        while sid in taken:
            sid, k = f"{base}-{k}", k + 1
        s = Section(title, sid)
        self.sections.append(s)
        return s

    def render(self) -> str:
        when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in self.sections)
        body = "".join(
            f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>' for s in self.sections
        )
        sub = f'<p class="sub">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta name="generator" content="{GENERATOR} {__version__}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1>{sub}<p class=\"sub\">written {when} by comp {__version__}</p>"
            f"<nav><ol>{toc}</ol></nav>{body}</body></html>\n"
        )

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / PAGE
        write_text(path, self.render())
        return path


def is_report_dir(path: Path) -> bool:
    """True for a folder written by this module (safe to replace)."""
    page = path / PAGE
    try:
        return GENERATOR in page.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False


@contextmanager
def report_dir(out: str | Path, keep: Sequence[str] = ()):
    """Context manager yielding a temporary folder that replaces ``out`` when the report is complete.

    An existing comp report at ``out`` is replaced (a report is derived from files that are kept); any other
    non-empty folder is refused, so ``--out .`` can never wipe a working directory. Entries of ``out`` named in
    ``keep`` (other commands' outputs sharing the folder, e.g. comp relabel's) are carried into the new folder.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise OutputExists(f"--out {out}: a file is in the way; choose another --out")
        own = [p for p in out.iterdir() if p.name not in keep]
        if own and not is_report_dir(out):
            raise OutputExists(
                f"--out {out}: folder exists and is not a comp report; choose an empty or new folder for --out"
            )
    with atomic_dir(out) as tmp:
        yield tmp
        for name in keep:
            if (out / name).exists() and not (tmp / name).exists():
                if (out / name).is_dir():
                    shutil.copytree(out / name, tmp / name)
                else:
                    shutil.copy2(out / name, tmp / name)


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def thumbnail(rgb: np.ndarray, path: str | Path, side: int = 128) -> Path:
    """Write a PNG thumbnail of an RGB array; small images are enlarged with nearest-neighbour (pixels stay sharp)."""
    from PIL import Image

    im = Image.fromarray(rgb)
    w, h = im.size
    scale = side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = im.resize(size, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG", optimize=False)
    return path


def thumb_src(image_path, pos: int, folder: Path, side: int = 128) -> str:
    """Relative src (``thumbs/<pos>.png``) of an image file's thumbnail, written once; named by row position,
    never by id or class. An unreadable file gets a grey square."""
    from comp.data.images import ImageProblem, load_rgb

    name = f"{int(pos)}.png"
    target = Path(folder) / name
    if not target.exists():
        try:
            rgb = load_rgb(image_path)
        except (ImageProblem, TypeError, OSError):
            rgb = np.full((8, 8, 3), 128, np.uint8)
        thumbnail(rgb, target, side=side)
    return f"thumbs/{name}"


def pyplot():
    """matplotlib.pyplot on the Agg backend."""
    use_agg()
    import matplotlib.pyplot as plt

    return plt


def use_agg() -> None:
    """matplotlib without a display."""
    import matplotlib

    matplotlib.use("Agg", force=True)
