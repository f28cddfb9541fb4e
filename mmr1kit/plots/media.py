"""The picture a gallery panel shows for one row: its image, or all its images / a video's key frames side by side.

Used by `rollout_gallery` (report galleries, the failure gallery of evaluations) and the rollout browser. A row is
a run record's rollout or an evaluation record: `image` (one path), `images` (every path of a multi-image row) or
`video` (frame paths or a video file). Several pictures are scaled to one height and joined left to right with a
grey gap, so the panel keeps one axes (and boxes are drawn only on a single image).
"""

from __future__ import annotations

import math
from pathlib import Path

GAP = 4  # px of grey between two pictures of a strip
GAP_COLOR = (160, 160, 160)
KEY_FRAMES = 4  # frames a video shows: the first, the last and evenly spaced ones between


def _listed(value) -> list | None:
    """`value` as a list of paths when it is a non-empty list / array (a rollout's `images` / a frame list)."""
    if value is None or isinstance(value, (str, bytes)) or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    return items or None


def _resolve(path, image_root):
    path = Path(str(path))
    return Path(image_root) / path if image_root is not None and not path.is_absolute() else path


def strip(pictures: list):
    """PIL images scaled to the smallest height and joined left to right, `GAP` px of grey between them."""
    from PIL import Image

    height = min(p.height for p in pictures)
    scaled = [p if p.height == height else p.resize((max(1, round(p.width * height / p.height)), height))
              for p in pictures]
    out = Image.new("RGB", (sum(p.width for p in scaled) + GAP * (len(scaled) - 1), height), GAP_COLOR)
    x = 0
    for p in scaled:
        out.paste(p.convert("RGB"), (x, 0))
        x += p.width + GAP
    return out


def row_picture(row, image_root=None, key_frames: int = KEY_FRAMES):
    """`(picture, count, problem)`: the PIL picture of a row, how many images / frames it joins, and why there is
    none (`picture` is then `None`).

    A video shows `key_frames` frames; a multi-image row shows every image; anything else is `row["image"]` as
    `mmr1kit.plots.rollouts._load_image` reads it.
    """
    from mmr1kit.plots.rollouts import _load_image

    get = row.get if hasattr(row, "get") else (lambda k: None)
    video = get("video")
    if video is not None and not (isinstance(video, float) and math.isnan(video)):
        from mmr1kit.data.frames import key_frames as sample

        frames = _listed(video)
        try:
            pictures = sample([_resolve(f, image_root) for f in frames] if frames else _resolve(video, image_root),
                              k=key_frames)
        except (OSError, ValueError) as err:
            return None, 0, f"cannot read the video: {type(err).__name__}"
        return strip(pictures), len(pictures), None
    images = _listed(get("images"))
    if images is not None and len(images) > 1:
        pictures = []
        for value in images:
            picture, problem = _load_image(value, image_root)
            if picture is None:
                return None, 0, problem
            pictures.append(picture)
        return strip(pictures), len(pictures), None
    picture, problem = _load_image(images[0] if images else get("image"), image_root)
    return picture, 1 if picture is not None else 0, problem
