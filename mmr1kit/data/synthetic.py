"""Seeded synthetic vision tasks: shapes to count, shapes to ground, text to read, shapes to detect.

Every task yields MMR1 JSON rows (`{"id", "task", "problem", "solution", "image"}` plus task fields) and a PIL image.
The same `(task, n, seed, split, image_size, **task_kwargs)` always gives the same rows and byte-identical files:
each row draws from its own `random.Random` seeded with `"mmr1kit:<task>:<seed>:<index>"` (string seeds are hashed
with SHA-512, so they do not depend on `PYTHONHASHSEED`), and no global RNG is touched. Row `i` therefore does not
depend on `n`: a dataset of 100 rows is the prefix of the same dataset with 1000 rows.

This module holds the counting task, the shared shape drawing and placement code, and the public entry points
(`generate_rows`, `write_dataset`, `task_defaults`). Grounding, OCR and detection live in
`mmr1kit.data.synthetic_tasks`.

Box convention ("pixel"): boxes are `[x1, y1, x2, y2]` integer absolute pixel coordinates in the continuous frame
where pixel `(i, j)` covers `[i, i + 1) x [j, j + 1)`; `x1, y1` is the first covered column/row and `x2, y2` the last
covered column/row plus one (as `PIL.Image.getbbox` and COCO's `x + w`), so `x2 - x1` is the width in pixels.
Shapes are drawn without antialiasing, so a shape's box is exactly the box of its pixels.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "SHAPES",
    "TASKS",
    "Shape",
    "balanced_counts",
    "generate_rows",
    "iter_counting",
    "place_shapes",
    "render_shapes",
    "shape_extent",
    "task_defaults",
    "undercount_labels",
    "write_dataset",
]

TASKS = ("counting", "grounding", "ocr", "detection", "math")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 190, 0),
    "purple": (140, 40, 170),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "square", "triangle")
BACKGROUND = (255, 255, 255)

REFERENCE_SIZE = 112  # radii and gaps below are given for a 112 px image and scale with min(width, height)
DEFAULT_RADIUS = (7, 10)
DEFAULT_GAP = 2
MIN_IMAGE_SIDE = 28  # Qwen2-VL / Qwen2.5-VL processors reject images with a side under 28 px

COUNTING_TEMPLATE = "How many {target_plural} are there? Answer as <answer>N</answer>."
DISTRACTOR_MODES = ("color", "mixed")
COLOR_MODE_SHAPES = ("circle", "square")
TRIANGLE_SCALE = 1.3  # a triangle's circumradius is 1.3 r, so its area (~2.2 r^2) is comparable to the others


# --------------------------------------------------------------------------------------------------------------
# Shapes: geometry, placement, rendering
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One filled shape centred on integer pixel `(cx, cy)` with size `r` in pixels.

    A circle has radius `r`, a square half-side `r`, an upward triangle circumradius `1.3 * r`.
    """

    shape: str
    color: str
    cx: int
    cy: int
    r: int

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def extent(self) -> float:
        """Radius of the circle around the centre that contains the whole shape (used for non-overlap)."""
        return shape_extent(self.shape, self.r)

    def draw(self, draw: ImageDraw.ImageDraw, fill) -> None:
        """Draw the shape (aliased, so its pixels are exactly its colour) onto `draw`."""
        cx, cy, r = self.cx, self.cy, self.r
        if self.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif self.shape == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            R = TRIANGLE_SCALE * r
            half = R * math.sqrt(3) / 2
            draw.polygon([(cx, cy - R), (cx - half, cy + R / 2), (cx + half, cy + R / 2)], fill=fill)

    def bbox(self, width: int, height: int) -> list[int]:
        """Tight `[x1, y1, x2, y2]` box of the drawn pixels (x2, y2 exclusive; see the module docstring)."""
        mask = Image.new("L", (width, height), 0)
        self.draw(ImageDraw.Draw(mask), 255)
        return list(mask.getbbox())

    def record(self, width: int, height: int) -> dict:
        """The JSON geometry record stored in rows: label, colour, shape, centre, size and tight box."""
        return {
            "label": self.label,
            "color": self.color,
            "shape": self.shape,
            "center": [self.cx, self.cy],
            "radius": self.r,
            "bbox": self.bbox(width, height),
        }


def shape_extent(shape: str, r: float) -> float:
    """Circumradius of a shape of size `r` (see `Shape`)."""
    if shape == "circle":
        return float(r)
    if shape == "square":
        return r * math.sqrt(2)
    if shape == "triangle":
        return TRIANGLE_SCALE * r
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def scaled_radius(width: int, height: int, radius: Sequence[int] | None) -> tuple[int, int]:
    """`radius` as given, or the 7-10 px default of a 112 px image scaled by `min(width, height) / 112`."""
    if radius is not None:
        lo, hi = (int(v) for v in radius)
        if not 1 <= lo <= hi:
            raise ValueError(f"radius must be (min, max) with 1 <= min <= max, got {tuple(radius)}")
        return lo, hi
    scale = min(width, height) / REFERENCE_SIZE
    lo = max(2, round(DEFAULT_RADIUS[0] * scale))
    return lo, max(lo, round(DEFAULT_RADIUS[1] * scale))


def scaled_gap(width: int, height: int, gap: int | None) -> int:
    """`gap` as given, or the 2 px default of a 112 px image scaled (at least 1 px)."""
    if gap is not None:
        return int(gap)
    return max(1, round(DEFAULT_GAP * min(width, height) / REFERENCE_SIZE))


def place_shapes(
    rng: random.Random,
    specs: Sequence[tuple[str, str]],
    width: int,
    height: int,
    *,
    radius: tuple[int, int],
    gap: int,
    max_tries: int = 100,
) -> list[Shape] | None:
    """Place `(color, shape)` specs one by one at random so that no two shapes come within `gap` px.

    Two shapes never overlap because their circumscribed circles are at least `gap` apart, and every shape keeps
    a 1 px margin to the image border. Returns None when a shape found no free spot in `max_tries` draws.
    """
    placed: list[Shape] = []
    for color, shape in specs:
        for _ in range(max_tries):
            r = rng.randint(*radius)
            pad = math.ceil(shape_extent(shape, r)) + 1
            if 2 * pad >= min(width, height):
                return None
            candidate = Shape(shape, color, rng.randint(pad, width - 1 - pad), rng.randint(pad, height - 1 - pad), r)
            if all(_clear(candidate, other, gap) for other in placed):
                placed.append(candidate)
                break
        else:
            return None
    return placed


def _clear(a: Shape, b: Shape, gap: int) -> bool:
    return math.hypot(a.cx - b.cx, a.cy - b.cy) >= a.extent + b.extent + gap


def render_shapes(shapes: Sequence[Shape], width: int, height: int) -> Image.Image:
    """A white RGB image with `shapes` drawn in their colours."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for s in shapes:
        s.draw(draw, COLORS[s.color])
    return image


def plural(shape: str) -> str:
    return shape + "s"


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    """Return `value` if it is in `allowed`, else raise a ValueError naming the parameter."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {tuple(allowed)}")
    return value


def fill_template(template: str, **fields: str) -> str:
    """Replace `{name}` placeholders by plain substitution; other braces (e.g. JSON examples) stay as they are."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", str(value))
    return template


def row_rng(task: str, seed: int, index: int, salt: str = "") -> random.Random:
    """The private RNG of row `index` (independent of `n` and of other rows)."""
    return random.Random(f"mmr1kit:{task}:{seed}:{index}{salt}")


# --------------------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------------------


def balanced_counts(n: int, num_values: int, rng: random.Random) -> list[int]:
    """`n` values in `0..num_values-1`, each appearing `n // num_values` or one more times.

    Values come in shuffled blocks of one of each, so every prefix is balanced too (MMR1's `train_sample_size`
    takes the first rows).
    """
    out: list[int] = []
    while len(out) < n:
        block = list(range(num_values))
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def _parse_target(target) -> tuple[str, str]:
    parts = target.split() if isinstance(target, str) else tuple(target)
    if len(parts) != 2:
        raise ValueError(f"target={target!r}: expected (colour, shape) or 'colour shape', e.g. ('red', 'circle')")
    color, shape = parts
    return check_choice("target colour", color, tuple(COLORS)), check_choice("target shape", shape, SHAPES)


def _distractor_spec(rng: random.Random, target: tuple[str, str], mode: str, palette: Sequence[str]) -> tuple:
    """One distractor `(color, shape)` that is not the target.

    "color": an other-coloured circle or square. "mixed": with equal probability an other-coloured target shape,
    a target-coloured other shape, or an other-coloured other shape.
    """
    t_color, t_shape = target
    other_colors = [c for c in palette if c != t_color]
    other_shapes = [s for s in SHAPES if s != t_shape]
    if mode == "color":
        return rng.choice(other_colors), rng.choice(COLOR_MODE_SHAPES)
    kind = rng.randrange(3)
    if kind == 0:
        return rng.choice(other_colors), t_shape
    if kind == 1:
        return t_color, rng.choice(other_shapes)
    return rng.choice(other_colors), rng.choice(other_shapes)


def _layout_counting(rng, k, target, num_distractors, *, mode, palette, width, height, radius, gap, layout_tries=20):
    """Place `k` targets and up to `num_distractors` distractors; drop distractors one by one if they do not fit."""
    for d in range(num_distractors, -1, -1):
        for _ in range(layout_tries):
            specs = [target] * k + [_distractor_spec(rng, target, mode, palette) for _ in range(d)]
            shapes = place_shapes(rng, specs, width, height, radius=radius, gap=gap)
            if shapes is not None:
                return shapes, d
    raise ValueError(
        f"cannot place {k} {target[0]} {plural(target[1])} without overlap in a {width}x{height} image with "
        f"radius={radius}, gap={gap}; lower max_count or radius, or raise image_size"
    )


def iter_counting(
    n: int,
    seed: int,
    width: int,
    height: int,
    *,
    target: Sequence[str] | str = ("red", "circle"),
    max_count: int = 4,
    max_distractors: int = 3,
    distractors: str = "color",
    palette: Sequence[str] = ("red", "green", "blue", "yellow"),
    radius: Sequence[int] | None = None,
    gap: int | None = None,
    question_template: str = COUNTING_TEMPLATE,
) -> Iterator[tuple[dict, Image.Image]]:
    """Yield `n` counting examples: how many `target` shapes are in the image?

    Args:
        target: `(colour, shape)` or `"colour shape"` to count.
        max_count: counts run over `0..max_count`, balanced (see `balanced_counts`).
        max_distractors: each image has `0..max_distractors` distractors (uniform), fewer only if they do not fit.
        distractors: `"color"` (other-coloured circles and squares) or `"mixed"` (see `_distractor_spec`).
        palette: colours that distractors may take (the target colour is excluded where "other-coloured").
        radius: `(min, max)` shape size in px; None scales 7-10 px at 112 px with the image.
        gap: minimum px between shapes' circumscribed circles; None scales 2 px at 112 px.
        question_template: `{target}` ("red circle"), `{target_plural}` ("red circles"), `{color}`, `{shape}`.

    Yields:
        `(fields, image)`: fields are `problem`, `solution` (the true count as a string), `count`, `target`,
        `num_distractors`, `difficulty` (`0.5 * count / max_count + 0.5 * num_distractors / max_distractors`,
        rounded to 4 places) and `objects` (geometry of every shape, targets first).
    """
    target = _parse_target(target)
    check_choice("distractors", distractors, DISTRACTOR_MODES)
    for c in palette:
        check_choice("palette colour", c, tuple(COLORS))
    if max_count < 0 or max_distractors < 0:
        raise ValueError(f"max_count and max_distractors must be >= 0, got {max_count} and {max_distractors}")
    if max_distractors and not [c for c in palette if c != target[0]]:
        raise ValueError(f"palette {tuple(palette)} has no colour other than the target's {target[0]!r}")
    radius, gap = scaled_radius(width, height, radius), scaled_gap(width, height, gap)
    label = f"{target[0]} {target[1]}"
    problem = fill_template(
        question_template, target=label, target_plural=plural(label), color=target[0], shape=target[1]
    )
    counts = balanced_counts(n, max_count + 1, random.Random(f"mmr1kit:counting:{seed}:counts"))
    for i, k in enumerate(counts):
        rng = row_rng("counting", seed, i)
        shapes, d = _layout_counting(
            rng,
            k,
            target,
            rng.randint(0, max_distractors),
            mode=distractors,
            palette=palette,
            width=width,
            height=height,
            radius=radius,
            gap=gap,
        )
        load = 0.5 * (k / max_count if max_count else 0.0) + 0.5 * (d / max_distractors if max_distractors else 0.0)
        fields = {
            "problem": problem,
            "solution": str(k),
            "count": k,
            "target": label,
            "num_distractors": d,
            "difficulty": round(load, 4),
            "objects": [s.record(width, height) for s in shapes],
        }
        yield fields, render_shapes(shapes, width, height)


def undercount_labels(rows: Sequence[dict], *, threshold: int = 3, p: float = 0.8, seed: int = 0) -> list[str]:
    """Labels from a deliberately biased annotator: for true counts >= `threshold`, `count - 1` with probability `p`.

    The demo warm-starts (SFT) on these labels so that GRPO on the true counts has a systematic error to correct
    (`docs/demo.md`, finding 2). Rows keep their true `solution`; this returns new strings.
    """
    rng = random.Random(f"mmr1kit:undercount:{seed}")
    out = []
    for row in rows:
        count = int(row["count"])
        biased = count >= threshold and rng.random() < p
        out.append(str(count - 1 if biased else count))
    return out


# --------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------


def _task_iterators() -> dict[str, Callable[..., Iterator[tuple[dict, Image.Image]]]]:
    # imported here: these modules import this module's drawing code
    from mmr1kit.data import synthetic_math, synthetic_media, synthetic_tasks

    return {
        "counting": iter_counting,
        "grounding": synthetic_tasks.iter_grounding,
        "ocr": synthetic_tasks.iter_ocr,
        "detection": synthetic_tasks.iter_detection,
        "math": synthetic_math.iter_math,
        "counting_multi": synthetic_media.iter_counting_multi,  # several images per row
        "frame_change": synthetic_media.iter_frame_change,  # a video (frame list) per row
    }


def _iterator(task: str):
    check_choice("task", task, tuple(_task_iterators()))
    return _task_iterators()[task]


def task_defaults(task: str) -> dict:
    """The task's keyword parameters and their defaults (what `write_dataset(task, ..., **kwargs)` accepts)."""
    params = inspect.signature(_iterator(task)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _image_size(image_size) -> tuple[int, int]:
    width, height = (image_size, image_size) if isinstance(image_size, int) else (int(v) for v in image_size)
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f"image_size={image_size!r}: each side must be >= {MIN_IMAGE_SIDE} px (Qwen-VL processors)")
    return width, height


def generate_rows(
    task: str, n: int, seed: int = 0, *, split: str = "train", image_size: int | Sequence[int] = 112, **task_kwargs
) -> Iterator[tuple[dict, Image.Image]]:
    """Yield `n` `(row, image)` pairs of `task` without writing anything.

    Args:
        task: one of `TASKS`, or a task of several images / a video (`synthetic_media.MEDIA_TASKS`).
        n: number of rows.
        seed: dataset seed; each row has its own RNG derived from `(task, seed, index)`.
        split: only used for the row's relative `image` path (`images/<split>/<id>.png`).
        image_size: side in px, or `(width, height)`.
        **task_kwargs: task parameters, see `task_defaults(task)`; unknown names raise a TypeError.

    Returns:
        An iterator of `(row, PIL.Image)` (`(row, {"images" | "video": [PIL, ...]})` for the media tasks); rows are
        exactly what `write_dataset` stores. The arguments above are
        checked at once; task parameters are checked when the first row is drawn.
    """
    iterator = _iterator(task)
    unknown = sorted(set(task_kwargs) - set(task_defaults(task)))
    if unknown:
        raise TypeError(f"unknown parameter(s) {unknown} for task {task!r}; accepted: {sorted(task_defaults(task))}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", split) or split.startswith("."):
        raise ValueError(f"split={split!r}: expected a plain name such as 'train' or 'test'")
    width, height = _image_size(image_size)
    return _rows(task, iterator(n, seed, width, height, **task_kwargs), n, split, width, height)


def _rows(task, examples, n, split, width, height) -> Iterator[tuple[dict, Image.Image]]:
    from mmr1kit.data.synthetic_media import media_paths

    digits = max(6, len(str(max(n - 1, 0))))
    for i, (fields, image) in enumerate(examples):
        row_id = f"{i:0{digits}d}"
        if isinstance(image, dict):  # {"images": [...]} or {"video": [...]}: one PNG per image / frame
            field, paths = media_paths(row_id, split, image)
            row = {"id": row_id, "task": task, field: paths}
        else:
            row = {"id": row_id, "task": task, "image": f"images/{split}/{row_id}.png"}
        row.update(fields)
        row.update(image_width=width, image_height=height)
        yield row, image


def write_dataset(
    task: str,
    out_dir: str | os.PathLike,
    *,
    n: int,
    seed: int = 0,
    split: str = "train",
    image_size: int | Sequence[int] = 112,
    **task_kwargs,
) -> Path:
    """Write `n` rows of `task` to `<out_dir>/<split>.json` and their PNGs to `<out_dir>/images/<split>/<id>.png`.

    The JSON file is a list of rows (`json.dumps(rows, indent=1, sort_keys=True)`); each row's `image` is relative
    to the JSON file's folder. Files are byte-identical for the same arguments (PNG without metadata). Images are
    written first and the JSON last (atomically), so a JSON file never points at missing images. PNGs of an earlier,
    larger run in the same folder are not deleted.

    Returns:
        The path of the JSON file.
    """
    out_dir = Path(out_dir)
    rows = []
    for row, image in generate_rows(task, n, seed, split=split, image_size=image_size, **task_kwargs):
        if not rows:  # created only once the parameters have produced a row
            (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        if isinstance(image, dict):
            for path, frame in zip(row.get("images") or row["video"], next(iter(image.values()))):
                frame.save(out_dir / path, format="PNG")
        else:
            image.save(out_dir / row["image"], format="PNG")
        rows.append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{split}.json"
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    return json_path
