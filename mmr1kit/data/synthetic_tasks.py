"""Synthetic grounding, OCR and detection tasks (see `mmr1kit.data.synthetic` for the shared conventions).

Each `iter_<task>(n, seed, width, height, **params)` yields `(fields, image)`; `mmr1kit.data.synthetic.generate_rows`
adds `id`, `task`, `image`, `image_width` and `image_height`. Boxes follow the "pixel" convention of that module.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from mmr1kit.data.synthetic import (
    COLORS,
    SHAPES,
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

__all__ = ["RELATIONS", "WORDS", "font_path", "iter_detection", "iter_grounding", "iter_ocr"]

GROUNDING_TEMPLATE = "Output the bounding box of {expression} as [x1, y1, x2, y2]."
OCR_TEMPLATE = "What text is written in the image? Answer as <answer>TEXT</answer>."
DETECTION_TEMPLATE = 'Detect every shape and output a JSON list of {"bbox_2d": [x1, y1, x2, y2], "label": ...}.'
RELATIONS = ("left of", "right of", "above", "below")
OCR_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O and 1/I, which the font draws nearly alike
OCR_SOURCES = ("chars", "words")
_WORD_LIST = (
    "apple bird blue boat book bread cake castle cat chair cloud coffee dog door dream earth fish flower "
    "forest garden glass green horse house island lamp light lion market moon music night ocean orange "
    "paper pencil planet river road robot shadow silver snow stone storm sun table tiger train tree water "
    "window winter yellow"
)
WORDS = tuple(_WORD_LIST.split())
LAYOUT_TRIES = 50
TEXT_MARGIN = 2
MIN_FONT_SIZE = 6  # smallest size used when a long string must shrink to fit
DEFAULT_MIN_FONT_SIZE = 8  # below 8 px DejaVu Sans is barely legible


def _layout(rng: random.Random, specs, width: int, height: int, radius, gap, what: str) -> list[Shape]:
    """`place_shapes` with retries; raise a ValueError naming the fix when the shapes cannot fit."""
    for _ in range(LAYOUT_TRIES):
        shapes = place_shapes(rng, specs, width, height, radius=radius, gap=gap)
        if shapes is not None:
            return shapes
    raise ValueError(
        f"cannot place {len(specs)} {what} without overlap in a {width}x{height} image with radius={radius}, "
        f"gap={gap}; lower max_objects or radius, or raise image_size"
    )


def _check_palette(palette: Sequence[str], shapes: Sequence[str]) -> None:
    for c in palette:
        check_choice("palette colour", c, tuple(COLORS))
    for s in shapes:
        check_choice("shape", s, SHAPES)


def _check_range(name: str, lo: int, hi: int, minimum: int) -> None:
    if not minimum <= lo <= hi:
        raise ValueError(f"need {minimum} <= min_{name} <= max_{name}, got {lo} and {hi}")


# --------------------------------------------------------------------------------------------------------------
# Grounding (referring expression -> one box)
# --------------------------------------------------------------------------------------------------------------


def _holds(relation: str, a: list[int], b: list[int]) -> bool:
    """True when box `a` is entirely `relation` box `b` (no overlap along that axis)."""
    if relation == "left of":
        return a[2] <= b[0]
    if relation == "right of":
        return a[0] >= b[2]
    if relation == "above":
        return a[3] <= b[1]
    return a[1] >= b[3]


def _clearly_false(relation: str, a: Shape, b: Shape) -> bool:
    """True when shape `a` is not `relation` shape `b` even loosely (its centre is on the other side)."""
    if relation == "left of":
        return a.cx >= b.cx
    if relation == "right of":
        return a.cx <= b.cx
    if relation == "above":
        return a.cy >= b.cy
    return a.cy <= b.cy


def _refer(rng: random.Random, shapes: list[Shape], boxes: list[list[int]]) -> tuple[str, str, str] | None:
    """Referring expression for `shapes[0]`: `(expression, relation, reference label)`.

    Colour and shape alone when no other object has the target's shape; otherwise a spatial relation to an object
    whose label is unique, chosen so that the relation holds for the target and is clearly false for any duplicate
    of the target. None when duplicates exist and no such relation does.
    """
    target = shapes[0]
    plain = f"the {target.label}"
    if not any(s.shape == target.shape for s in shapes[1:]):
        return plain, "", ""
    labels = [s.label for s in shapes]
    duplicates = [s for s in shapes[1:] if s.label == target.label]
    options = [
        (relation, j)
        for j in range(1, len(shapes))
        if labels.count(labels[j]) == 1
        for relation in RELATIONS
        if _holds(relation, boxes[0], boxes[j]) and all(_clearly_false(relation, d, shapes[j]) for d in duplicates)
    ]
    if not options:
        return None if duplicates else (plain, "", "")
    relation, j = rng.choice(options)
    return f"{plain} {relation} the {labels[j]}", relation, labels[j]


def iter_grounding(
    n: int,
    seed: int,
    width: int,
    height: int,
    *,
    min_objects: int = 2,
    max_objects: int = 4,
    palette: Sequence[str] = ("red", "green", "blue", "yellow"),
    shapes: Sequence[str] = SHAPES,
    duplicate_prob: float = 0.0,
    radius: Sequence[int] | None = None,
    gap: int | None = None,
    question_template: str = GROUNDING_TEMPLATE,
) -> Iterator[tuple[dict, Image.Image]]:
    """Yield `n` grounding examples: the box of the object a referring expression names.

    Objects have distinct `(colour, shape)` combinations, except that with probability `duplicate_prob` (images
    with 3+ objects) one object copies the target, so only the spatial relation tells them apart.

    Args:
        min_objects, max_objects: objects per image (uniform).
        palette, shapes: the colours and shapes to combine.
        duplicate_prob: probability of a copy of the target (then the relation is needed).
        radius, gap: as in `mmr1kit.data.synthetic.iter_counting`.
        question_template: `{expression}` ("the blue triangle left of the red square").

    Yields:
        `(fields, image)`: `problem`, `solution` (`"[x1, y1, x2, y2]"`), `target`, `referring_expression`,
        `relation` ("" when none), `reference` (its label, "" when none), `box_convention` ("pixel"), `difficulty`
        (mean of the object load `(objects - min) / (max - min)`, 1 if a relation is used and 1 if a duplicate
        exists) and `objects` (the target first).
    """
    _check_palette(palette, shapes)
    _check_range("objects", min_objects, max_objects, 1)
    combos = [(c, s) for c in palette for s in shapes]
    if len(combos) < max_objects:
        raise ValueError(f"{len(combos)} colour/shape combinations cannot give {max_objects} distinct objects")
    radius, gap = scaled_radius(width, height, radius), scaled_gap(width, height, gap)
    for i in range(n):
        rng = row_rng("grounding", seed, i)
        m = rng.randint(min_objects, max_objects)
        want_duplicate = m >= 3 and rng.random() < duplicate_prob
        for attempt in range(LAYOUT_TRIES):
            specs = rng.sample(combos, m)
            duplicate = want_duplicate and attempt < LAYOUT_TRIES // 2  # give up on the copy only if it never works
            if duplicate:
                specs[-1] = specs[0]
            placed = _layout(rng, specs, width, height, radius, gap, "objects")
            boxes = [s.bbox(width, height) for s in placed]
            referred = _refer(rng, placed, boxes)
            if referred is not None:
                break
        expression, relation, reference = referred
        load = (m - min_objects) / (max_objects - min_objects) if max_objects > min_objects else 0.0
        fields = {
            "problem": fill_template(question_template, expression=expression),
            "solution": json.dumps(boxes[0]),
            "target": placed[0].label,
            "referring_expression": expression,
            "relation": relation,
            "reference": reference,
            "box_convention": "pixel",
            "difficulty": round((load + bool(relation) + duplicate) / 3, 4),
            "objects": [s.record(width, height) for s in placed],
        }
        yield fields, render_shapes(placed, width, height)


# --------------------------------------------------------------------------------------------------------------
# OCR (read a short string)
# --------------------------------------------------------------------------------------------------------------


def font_path() -> str:
    """Path of DejaVuSans.ttf as shipped by matplotlib (a dependency), so rendering needs no system fonts."""
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - matplotlib is a hard dependency
        raise ImportError("the OCR task renders text with matplotlib's DejaVuSans.ttf; pip install matplotlib") from e
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the matplotlib installation")
    return str(path)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(), size)


def _draw_text(text: str, size: int, xy: tuple[int, int], width: int, height: int, fill, mode: str):
    image = Image.new(mode, (width, height), fill[0])
    ImageDraw.Draw(image).text(xy, text, font=_font(size), fill=fill[1])
    return image


def _pick_text(rng: random.Random, source: str, alphabet: str, words: Sequence[str], lo: int, hi: int) -> str:
    if source == "chars":
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))
    pool = sorted(w for w in words if lo <= len(w) <= hi)
    if not pool:
        raise ValueError(f"no word in `words` has a length in [{lo}, {hi}]")
    return rng.choice(pool)


def _fits(text: str, size: int, width: int, height: int) -> bool:
    left, top, right, bottom = _font(size).getbbox(text)
    return right - left <= width - 2 * TEXT_MARGIN and bottom - top <= height - 2 * TEXT_MARGIN


def _pick_size(rng: random.Random, text: str, lo: int, hi: int, width: int, height: int) -> int:
    """A font size in `[lo, largest size <= hi that fits]`; below `lo` (down to 6 px) only if nothing fits."""
    fitting = [s for s in range(lo, hi + 1) if _fits(text, s, width, height)]
    if fitting:
        return rng.randint(lo, fitting[-1])
    for size in range(lo - 1, MIN_FONT_SIZE - 1, -1):
        if _fits(text, size, width, height):
            return size
    raise ValueError(f"text {text!r} does not fit a {width}x{height} image; lower max_length or raise image_size")


def iter_ocr(
    n: int,
    seed: int,
    width: int,
    height: int,
    *,
    source: str = "chars",
    alphabet: str = OCR_ALPHABET,
    words: Sequence[str] = WORDS,
    min_length: int = 3,
    max_length: int = 8,
    font_size: Sequence[int] | None = None,
    colors: Sequence[str] = ("black", "blue", "red", "green"),
    question_template: str = OCR_TEMPLATE,
) -> Iterator[tuple[dict, Image.Image]]:
    """Yield `n` OCR examples: a short string rendered in DejaVu Sans at a random size, position and colour.

    Args:
        source: `"chars"` (random strings over `alphabet`) or `"words"` (from `words`).
        min_length, max_length: string length range (uniform for "chars"; a filter on `words`).
        font_size: `(min, max)` in px; None scales 12-28 px at 112 px with `min(width, height)` (at least
            8 px). Sizes that would
            not fit are skipped.
        colors: text colours (names in `COLORS`).
        question_template: no placeholders by default.

    Yields:
        `(fields, image)`: `problem`, `solution` (the string), `text`, `font_size`, `text_color`, `text_bbox`
        (tight box of the rendered, antialiased pixels) and `difficulty` (mean of the length load and the smallness
        of the font).
    """
    check_choice("source", source, OCR_SOURCES)
    for c in colors:
        check_choice("text colour", c, tuple(COLORS))
    _check_range("length", min_length, max_length, 1)
    scale = min(width, height) / 112
    if font_size is not None:
        lo, hi = (int(v) for v in font_size)
    else:
        lo = max(DEFAULT_MIN_FONT_SIZE, round(12 * scale))
        hi = max(lo, round(28 * scale))
    if not MIN_FONT_SIZE <= lo <= hi:
        raise ValueError(f"font_size must be (min, max) with {MIN_FONT_SIZE} <= min <= max, got {(lo, hi)}")
    problem = fill_template(question_template)
    for i in range(n):
        rng = row_rng("ocr", seed, i)
        text = _pick_text(rng, source, alphabet, words, min_length, max_length)
        size = _pick_size(rng, text, lo, hi, width, height)
        left, top, right, bottom = _font(size).getbbox(text)
        xy = (
            rng.randint(TEXT_MARGIN - left, width - TEXT_MARGIN - right),
            rng.randint(TEXT_MARGIN - top, height - TEXT_MARGIN - bottom),
        )
        color = rng.choice(list(colors))
        image = _draw_text(text, size, xy, width, height, ((255, 255, 255), COLORS[color]), "RGB")
        text_bbox = list(_draw_text(text, size, xy, width, height, (0, 255), "L").getbbox())
        length_load = (len(text) - min_length) / (max_length - min_length) if max_length > min_length else 0.0
        small = min(1.0, max(0.0, (hi - size) / (hi - lo))) if hi > lo else 0.0
        fields = {
            "problem": problem,
            "solution": text,
            "text": text,
            "font_size": size,
            "text_color": color,
            "text_bbox": text_bbox,
            "difficulty": round((length_load + small) / 2, 4),
        }
        yield fields, image


# --------------------------------------------------------------------------------------------------------------
# Detection (every object -> labelled boxes)
# --------------------------------------------------------------------------------------------------------------


def detection_solution(records: Sequence[dict]) -> str:
    """The solution JSON: `[{"bbox_2d": [x1, y1, x2, y2], "label": ...}, ...]` sorted top-to-bottom, left-to-right."""
    items = sorted(({"bbox_2d": r["bbox"], "label": r["label"]} for r in records), key=_reading_order)
    return json.dumps(items)


def _reading_order(item: dict) -> tuple:
    x1, y1, x2, y2 = item["bbox_2d"]
    return y1, x1, y2, x2, item["label"]


def iter_detection(
    n: int,
    seed: int,
    width: int,
    height: int,
    *,
    min_objects: int = 1,
    max_objects: int = 5,
    palette: Sequence[str] = ("red", "green", "blue", "yellow"),
    shapes: Sequence[str] = SHAPES,
    radius: Sequence[int] | None = None,
    gap: int | None = None,
    question_template: str = DETECTION_TEMPLATE,
) -> Iterator[tuple[dict, Image.Image]]:
    """Yield `n` detection examples: every shape with its box and label ("red circle"); labels may repeat.

    The number of objects is balanced over `min_objects..max_objects` as counts are in the counting task.

    Yields:
        `(fields, image)`: `problem`, `solution` (see `detection_solution`), `count`, `box_convention` ("pixel"),
        `difficulty` (`(count - min) / (max - min)`) and `objects`.
    """
    _check_palette(palette, shapes)
    _check_range("objects", min_objects, max_objects, 0)
    radius, gap = scaled_radius(width, height, radius), scaled_gap(width, height, gap)
    problem = fill_template(question_template)
    counts = balanced_counts(n, max_objects - min_objects + 1, random.Random(f"mmr1kit:detection:{seed}:counts"))
    for i, extra in enumerate(counts):
        rng = row_rng("detection", seed, i)
        m = min_objects + extra
        specs = [(rng.choice(list(palette)), rng.choice(list(shapes))) for _ in range(m)]
        placed = _layout(rng, specs, width, height, radius, gap, "shapes")
        records = [s.record(width, height) for s in placed]
        fields = {
            "problem": problem,
            "solution": detection_solution(records),
            "count": m,
            "box_convention": "pixel",
            "difficulty": round((m - min_objects) / (max_objects - min_objects), 4)
            if max_objects > min_objects
            else 0.0,
            "objects": records,
        }
        yield fields, render_shapes(placed, width, height)
