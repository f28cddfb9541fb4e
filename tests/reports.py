"""What a reader of an HTML report gets: its embedded images and its text, parsed from the file (helpers for the
notebook, evaluation and browser tests)."""

from __future__ import annotations

import base64
import hashlib
import io
import re
from pathlib import Path

import numpy as np
from bs4 import BeautifulSoup
from PIL import Image

# Library noise that has no place in the report of a successful run (mmr1kit.noise, issue 13 item 2).
NOISE = re.compile(r"FutureWarning|DeprecationWarning|UserWarning|Kwargs passed to|processor_kwargs|IPKernelApp"
                   r"|zmq|without encryption|Traceback|warnings\.warn")


def _soup(html: Path) -> BeautifulSoup:
    return BeautifulSoup(Path(html).read_text(encoding="utf-8"), "html.parser")


def embedded_images(html: Path) -> list[bytes]:
    """The bytes of every `<img src="data:image/...;base64,...">` of the report, in document order."""
    out = []
    for img in _soup(html).find_all("img"):
        match = re.fullmatch(r"data:image/[\w+.-]+;base64,(.*)", img.get("src", ""), flags=re.DOTALL)
        if match:
            out.append(base64.b64decode(match.group(1)))
    return out


def report_text(html: Path) -> str:
    """The report's visible text: cell sources, outputs and markdown, without the page's styles and scripts."""
    soup = _soup(html)
    for tag in soup(["style", "script"]):
        tag.decompose()
    return soup.get_text("\n")


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


def figures_in_report(html: Path, folder: Path) -> dict[str, int]:
    """For every PNG the notebook saved in `folder`, the index of the report image that shows it (same pixels).

    Raises `AssertionError` naming the saved figures that the report does not show.
    """
    images = embedded_images(html)
    digests = [hashlib.sha256(b).hexdigest() for b in images]
    found, missing = {}, []
    for png in sorted(Path(folder).glob("*.png")):
        data = png.read_bytes()
        index = next((i for i, d in enumerate(digests) if d == hashlib.sha256(data).hexdigest()), None)
        if index is None:  # a figure saved with savefig and shown by its repr: same pixels, other PNG metadata
            pixels = _pixels(data)
            index = next((i for i, b in enumerate(images)
                          if _pixels(b).shape == pixels.shape and np.array_equal(_pixels(b), pixels)), None)
        if index is None:
            missing.append(png.name)
        else:
            found[png.name] = index
    assert not missing, f"{html.name} does not show {missing} (it embeds {len(images)} images)"
    return found
