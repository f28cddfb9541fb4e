"""Synthetic tasks with several images per row or a video (see `mmr1kit.data.synthetic` for the shared conventions).

- `counting_multi`: "How many red circles are there in the images together?" over 2 images (or `num_images`).
  Each image holds part of the total, so no single image answers the question.
- `frame_change`: a short clip of one moving circle that turns from blue to red at frame `t`; "In which frame does
  the circle turn red?". Only the order of the frames answers it (every frame alone shows a blue or a red circle).

Each `iter_<task>(n, seed, width, height, **params)` yields `(fields, media)` where `media` is
`{"images": [PIL, ...]}` or `{"video": [PIL, ...]}` (frames in time order). `mmr1kit.data.synthetic.generate_rows`
adds `id`, `image_width`, `image_height`; `write_dataset` writes one PNG per image / frame and the row's `images` /
`video` list of paths (`images/<split>/<id>_<k>.png`). Both tasks answer with an integer, so their rows have
`task: "counting"`: the counting rewards and evaluation metrics score them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from PIL import Image

from mmr1kit.data.synthetic import (
    COLORS,
    Shape,
    balanced_counts,
    check_choice,
    fill_template,
    place_shapes,
    render_shapes,
    row_rng,
    scaled_gap,
    scaled_radius,
)

__all__ = ["MEDIA_TASKS", "iter_counting_multi", "iter_frame_change", "media_paths"]

MEDIA_TASKS = ("counting_multi", "frame_change")
COUNTING_MULTI_TEMPLATE = (
    "How many red circles are there in the {num_images} images together? Answer as <answer>N</answer>."
)
FRAME_CHANGE_TEMPLATE = (
    "The video has {num_frames} frames. In which frame does the circle turn red? Answer as <answer>N</answer>."
)


def media_paths(row_id: str, split: str, media: dict) -> tuple[str, list[str]]:
    """The row field (`images` or `video`) and the relative PNG path of each of its images / frames."""
    (field, frames), = media.items()
    return field, [f"images/{split}/{row_id}_{k}.png" for k in range(len(frames))]


def _split_count(rng: random.Random, total: int, parts: int, cap: int) -> list[int]:
    """`total` split into `parts` counts, each in `0..cap`, uniformly among the splits that exist."""
    out = []
    for k in range(parts):
        rest = parts - k - 1
        lo, hi = max(0, total - rest * cap), min(cap, total)
        out.append(rng.randint(lo, hi))
        total -= out[-1]
    return out


def iter_counting_multi(
    n: int,
    seed: int,
    width: int,
    height: int,
    *,
    num_images: int = 2,
    max_count: int = 4,
    max_distractors: int = 2,
    palette: Sequence[str] = ("red", "green", "blue", "yellow"),
    radius: Sequence[int] | None = None,
    gap: int | None = None,
    question_template: str = COUNTING_MULTI_TEMPLATE,
) -> Iterator[tuple[dict, dict]]:
    """Yield `n` rows: count the red circles of `num_images` images together.

    Args:
        num_images: images per row (>= 2).
        max_count: the total runs over `0..max_count`, balanced as in `iter_counting`; each image holds at most
            `ceil(max_count / num_images) + 1` of them, so a large total is spread over the images.
        max_distractors: each image has `0..max_distractors` other-coloured circles and squares.
        palette, radius, gap: as in `mmr1kit.data.synthetic.iter_counting`.
        question_template: `{num_images}` is filled in.

    Yields:
        `(fields, {"images": [...]})`: `problem`, `solution` (the total as a string), `count`, `counts` (per image),
        `num_images`, `objects` (per image, every shape's geometry, targets first), `task` ("counting"),
        `difficulty` (`count / max_count`, 4 places).
    """
    if num_images < 2:
        raise ValueError(f"num_images={num_images}: a multi-image row needs at least 2 images")
    for c in palette:
        check_choice("palette colour", c, tuple(COLORS))
    others = [c for c in palette if c != "red"]
    if max_distractors and not others:
        raise ValueError(f"palette {tuple(palette)} has no colour other than red for the distractors")
    radius, gap = scaled_radius(width, height, radius), scaled_gap(width, height, gap)
    cap = -(-max_count // num_images) + 1
    problem = fill_template(question_template, num_images=num_images)
    totals = balanced_counts(n, max_count + 1, random.Random(f"mmr1kit:counting_multi:{seed}:counts"))
    for i, total in enumerate(totals):
        rng = row_rng("counting_multi", seed, i)
        counts = _split_count(rng, total, num_images, cap)
        images, objects = [], []
        for k in counts:
            distractors = [(rng.choice(others), rng.choice(("circle", "square")))
                           for _ in range(rng.randint(0, max_distractors))]
            shapes = _place(rng, [("red", "circle")] * k + distractors, width, height, radius, gap, k)
            images.append(render_shapes(shapes, width, height))
            objects.append([s.record(width, height) for s in shapes])
        fields = {"problem": problem, "solution": str(total), "count": total, "counts": counts,
                  "num_images": num_images, "objects": objects, "task": "counting",
                  "difficulty": round(total / max_count if max_count else 0.0, 4)}
        yield fields, {"images": images}


def _place(rng, specs, width, height, radius, gap, targets) -> list[Shape]:
    """Place `specs` (targets first), dropping distractors from the end when they do not fit."""
    for end in range(len(specs), targets - 1, -1):
        for _ in range(20):
            shapes = place_shapes(rng, specs[:end], width, height, radius=radius, gap=gap)
            if shapes is not None:
                return shapes
    raise ValueError(f"cannot place {targets} red circles in a {width}x{height} image with radius={radius}; "
                     f"lower max_count or raise image_size")


def iter_frame_change(
    n: int,
    seed: int,
    width: int,
    height: int,
    *,
    num_frames: int = 4,
    radius: Sequence[int] | None = None,
    question_template: str = FRAME_CHANGE_TEMPLATE,
) -> Iterator[tuple[dict, dict]]:
    """Yield `n` clips of `num_frames` frames: a circle moves across and turns from blue to red at frame `t`.

    `t` (1-based) runs over `2..num_frames`, balanced, so the first frame always shows a blue circle and the answer
    is never 1 (a model cannot answer "1" from the first frame alone).

    Args:
        num_frames: frames per clip (>= 2).
        radius: as in `mmr1kit.data.synthetic.iter_counting`.
        question_template: `{num_frames}` is filled in.

    Yields:
        `(fields, {"video": [...]})`: `problem`, `solution` (`t` as a string), `frame` (`t`), `num_frames`, `fps`
        (1: frame `k` is at second `k - 1`), `task` ("counting"), `difficulty` (`(t - 2) / (num_frames - 2)`).
    """
    if num_frames < 2:
        raise ValueError(f"num_frames={num_frames}: a clip needs at least 2 frames")
    lo, hi = scaled_radius(width, height, radius)
    problem = fill_template(question_template, num_frames=num_frames)
    changes = balanced_counts(n, num_frames - 1, random.Random(f"mmr1kit:frame_change:{seed}:changes"))
    for i, c in enumerate(changes):
        t = c + 2
        rng = row_rng("frame_change", seed, i)
        r = rng.randint(lo, hi)
        x0, x1 = rng.randint(r + 1, width // 2), rng.randint(width // 2, width - r - 2)
        y = rng.randint(r + 1, height - r - 2)
        frames = []
        for k in range(1, num_frames + 1):
            x = round(x0 + (x1 - x0) * (k - 1) / (num_frames - 1))
            frames.append(render_shapes([Shape("circle", "red" if k >= t else "blue", x, y, r)], width, height))
        fields = {"problem": problem, "solution": str(t), "frame": t, "num_frames": num_frames, "fps": 1,
                  "task": "counting", "difficulty": round((t - 2) / max(num_frames - 2, 1), 4)}
        yield fields, {"video": frames}


def first_image(media) -> Image.Image:
    """The first image / frame of a row's media (a PIL image, or `{"images" | "video": [...]}`)."""
    return media if isinstance(media, Image.Image) else next(iter(media.values()))[0]
