"""Seeded synthetic math task: an arithmetic expression rendered in an image; the answer is its value.

`3 + 4 × 2` drawn in DejaVu Sans on a white image; the model must read it and compute `11` (operator precedence
included). It is a CPU-sized stand-in for visual math (MathVista, GeoQA) that exercises the `math` reward
(math_verify) with a tiny model. Determinism follows `mmr1kit.data.synthetic`: row `i` of seed `s` draws from its own
`random.Random("mmr1kit:math:<s>:<i>")`, no global RNG is touched, and the same arguments give byte-identical files.

`write_dataset("math", out_dir, n=..., ...)` has the signature of `mmr1kit.data.synthetic.write_dataset`, so a data
card can name it as its generator (`data_cards/synthetic_math.md`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from mmr1kit.data.synthetic_tasks import font_path

MATH_TEMPLATE = "What is the value of the expression in the image? Answer as <answer>N</answer>."
OPERATORS = ("+", "-", "*")
SHOWN = {"+": "+", "-": "−", "*": "×"}  # what the image shows (Unicode minus and times)
TEXT_MARGIN = 2


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path(), size)


def evaluate_expression(tokens: Sequence) -> int:
    """The value of `[a, op, b, op, c, ...]` with `*` before `+` / `-` (left to right otherwise)."""
    terms, signs, current = [], [], tokens[0]
    for op, value in zip(tokens[1::2], tokens[2::2]):
        if op == "*":
            current *= value
        else:
            terms.append(current)
            signs.append(op)
            current = value
    terms.append(current)
    total = terms[0]
    for sign, term in zip(signs, terms[1:]):
        total = total + term if sign == "+" else total - term
    return total


def iter_math(
    n: int,
    seed: int,
    width: int,
    height: int,
    *,
    min_terms: int = 2,
    max_terms: int = 3,
    max_operand: int = 9,
    operators: Sequence[str] = OPERATORS,
    font_size: Sequence[int] = (14, 22),
    question_template: str = MATH_TEMPLATE,
) -> Iterator[tuple[dict, Image.Image]]:
    """Yield `n` `(fields, image)` pairs: an expression of `min_terms..max_terms` operands in `0..max_operand`.

    Fields: `problem`, `solution` (the integer value as a string, possibly negative), `expression` (ASCII, e.g.
    `"3 + 4 * 2"`), `num_terms`, `font_size`, `difficulty` (mean of the term load and whether `*` is mixed with
    `+` / `-`, which needs precedence).
    """
    if not 2 <= min_terms <= max_terms:
        raise ValueError(f"need 2 <= min_terms <= max_terms, got {min_terms} and {max_terms}")
    if max_operand < 1:
        raise ValueError(f"max_operand must be >= 1, got {max_operand}")
    if not operators or any(op not in OPERATORS for op in operators):
        raise ValueError(f"operators={tuple(operators)!r}: expected a non-empty subset of {OPERATORS}")
    lo, hi = (int(v) for v in font_size)
    for i in range(n):
        rng = random.Random(f"mmr1kit:math:{seed}:{i}")
        k = rng.randint(min_terms, max_terms)
        tokens = [rng.randint(0, max_operand)]
        for _ in range(k - 1):
            tokens += [rng.choice(list(operators)), rng.randint(0, max_operand)]
        shown = " ".join(SHOWN.get(t, str(t)) for t in tokens)
        size = next((s for s in range(rng.randint(lo, hi), 5, -1) if _fits(shown, s, width, height)), None)
        if size is None:
            raise ValueError(f"{shown!r} does not fit a {width}x{height} image; lower max_terms or raise image_size")
        left, top, right, bottom = _font(size).getbbox(shown)
        xy = (rng.randint(TEXT_MARGIN - left, width - TEXT_MARGIN - right),
              rng.randint(TEXT_MARGIN - top, height - TEXT_MARGIN - bottom))
        image = Image.new("RGB", (width, height), (255, 255, 255))
        ImageDraw.Draw(image).text(xy, shown, font=_font(size), fill=(0, 0, 0))
        ops = set(tokens[1::2])
        precedence = float("*" in ops and len(ops) > 1)
        load = (k - min_terms) / (max_terms - min_terms) if max_terms > min_terms else 0.0
        yield {
            "problem": question_template,
            "solution": str(evaluate_expression(tokens)),
            "expression": " ".join(str(t) for t in tokens),
            "num_terms": k,
            "font_size": size,
            "difficulty": round((load + precedence) / 2, 4),
        }, image


def _fits(text: str, size: int, width: int, height: int) -> bool:
    left, top, right, bottom = _font(size).getbbox(text)
    return right - left <= width - 2 * TEXT_MARGIN and bottom - top <= height - 2 * TEXT_MARGIN
