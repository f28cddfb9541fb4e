r"""Parsing shared by the reward functions: completion text, `<answer>` extraction, numbers and boxes.

Nothing here calls `eval`. Numbers go through a regex and `float`, boxes through regexes, `json.loads` and
`ast.literal_eval` (literals only). Every function accepts any string and never hangs on long input: the regexes
have no nested quantifiers and tag search uses `str.rfind`.

Box coordinates are always `(x1, y1, x2, y2)` (top-left, bottom-right) in one of three conventions
(`BoxConvention`):

| convention       | meaning                                   | who uses it                               |
|------------------|-------------------------------------------|-------------------------------------------|
| `"pixel"`        | absolute pixels of the image              | Qwen2.5-VL, our synthetic data (default)  |
| `"qwen2vl_1000"` | relative, scaled to 0..1000               | Qwen2-VL `<\|box_start\|>(x1,y1),(x2,y2)<\|box_end\|>` |
| `"relative"`     | relative, 0..1                            | some REC datasets                         |

The convention is never guessed from the numbers: Qwen2-VL box tokens imply `"qwen2vl_1000"`, anything else takes the
convention the caller passes (the dataset column `box_convention`, default `"pixel"`).
"""

import ast
import json
import math
import re
from itertools import islice
from typing import Any, Literal, NamedTuple, get_args

BoxConvention = Literal["pixel", "qwen2vl_1000", "relative"]
BOX_CONVENTIONS: tuple[str, ...] = get_args(BoxConvention)
Box = tuple[float, float, float, float]

_END_TOKENS = re.compile(r"<\|(?:im_end|endoftext)\|>")
_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_QWEN2VL_BOX = re.compile(
    rf"(?:<\|object_ref_start\|>([^<]*)<\|object_ref_end\|>\s*)?<\|box_start\|>\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)"
    rf"\s*,\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*<\|box_end\|>"
)
_FLAT_DICT = re.compile(r"\{[^{}]{0,10000}\}")
_FOUR = rf"\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*"
_PLAIN_BOX = re.compile(
    rf"\[{_FOUR}\]|\({_FOUR}\)|\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)"
)
_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
_UNITS += ("thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_WORDS = {w: v for v, w in enumerate(_UNITS)} | {w: 20 + 10 * k for k, w in enumerate(_TENS)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}


class LabeledBox(NamedTuple):
    """A parsed box: `box` is `(x1, y1, x2, y2)` as written (finite, not necessarily valid), in `convention`."""

    box: Box
    label: str | None = None
    convention: str = "pixel"


def completion_text(completion: Any) -> str:
    """
    Plain text of one completion, in either of TRL's forms.

    A string is used as is. A conversational completion (a list of messages, e.g. `[{"role": "assistant",
    "content": "..."}]`) gives the content of its last message; list-of-parts contents (`[{"type": "text", "text":
    ...}]`) are joined. The Qwen end tokens `<|im_end|>` and `<|endoftext|>` are removed (they appear when decoding
    with `skip_special_tokens=False`). Anything else gives `""`.
    """
    if isinstance(completion, (list, tuple)):
        completion = completion[-1] if completion else ""
    if isinstance(completion, dict):
        completion = completion.get("content", "")
    if isinstance(completion, (list, tuple)):
        completion = "".join(t for p in completion if isinstance(p, dict) and isinstance(t := p.get("text"), str))
    return _END_TOKENS.sub("", completion) if isinstance(completion, str) else ""


def extract_answer(text: str) -> str:
    """
    The content of the last `<answer>...</answer>` block, stripped, with fallbacks when tags are missing.

    1. A complete block: the text between the last `</answer>` and the `<answer>` closest before it (DOTALL).
    2. Only an unclosed `<answer>` (a truncated completion): everything after the last `<answer>`.
    3. Only a `</answer>`: everything before it, after the last `</think>` if there is one.
    4. No tags: the whole text.

    Example:
    ```python
    >>> extract_answer("<think>2 + 1</think><answer>\\n 3 \\n</answer>")
    '3'
    >>> extract_answer("<answer>3")
    '3'
    ```
    """
    close = text.rfind("</answer>")
    if close >= 0:
        start = text.rfind("<answer>", 0, close)
        if start >= 0:
            return text[start + len("<answer>") : close].strip()
    start = text.rfind("<answer>")
    if start >= 0:
        return text[start + len("<answer>") :].strip()
    if close >= 0:
        head = text[:close]
        think = head.rfind("</think>")
        return (head[think + len("</think>") :] if think >= 0 else head).strip()
    return text.strip()


def normalize_whitespace(text: str) -> str:
    """`text` with runs of whitespace collapsed to one space and the ends stripped: `" ".join(text.split())`."""
    return " ".join(text.split())


def parse_number(text: str) -> float | None:
    """
    A number written as digits or English words, or `None` when `text` is not exactly one finite number.

    Accepted (surrounding whitespace and one trailing `.` ignored): `42`, `-3`, `+3`, `3.5`, `.5`, `1e3`, `1,234`,
    `1,234.5` (thousands separators only in groups of three), `−3` (Unicode minus), and number words such as
    `seven`, `Twenty-one`, `one hundred and five`, `two thousand`, optionally after `minus`/`negative`. NaN,
    infinities and overflowing values such as `1e999` give `None`; so do `3 apples`, `1,23` and `two three`.
    """
    text = text.strip().replace("\u2212", "-")
    if text.endswith(".") and not _NUMBER.fullmatch(text):
        text = text[:-1].rstrip()
    if _NUMBER.fullmatch(text):
        value = float(text.replace(",", ""))
    else:
        value = _parse_number_words(text)
    return value if value is not None and math.isfinite(value) else None


def _parse_number_words(text: str) -> float | None:
    words = text.lower().replace("-", " ").split()
    sign = 1.0
    if words and words[0] in ("minus", "negative"):
        sign, words = -1.0, words[1:]
    words = [w for w in words if w != "and"]
    if not words or len(words) > 30 or ("zero" in words and len(words) > 1):
        return None
    total, group, last, scale = 0, 0, "scale", math.inf  # last token kind: "unit" (0-19), "tens", "hundred", "scale"
    for word in words:
        if word in _WORDS and _WORDS[word] < 20 and last in ("tens", "hundred", "scale"):
            if last == "tens" and _WORDS[word] >= 10:
                return None
            group, last = group + _WORDS[word], "unit"
        elif word in _WORDS and _WORDS[word] >= 20 and last in ("hundred", "scale"):
            group, last = group + _WORDS[word], "tens"
        elif word == "hundred" and last in ("unit", "tens") and group < 100:
            group, last = group * 100, "hundred"
        elif word in _SCALES and last != "scale" and group > 0 and _SCALES[word] < scale:
            total, group, last, scale = total + group * _SCALES[word], 0, "scale", _SCALES[word]
        else:
            return None
    return sign * (total + group)


def parse_boxes(text: str, convention: BoxConvention = "pixel", limit: int | None = None) -> list[LabeledBox]:
    """
    The boxes in `text`, in the order written, with their labels if they have one.

    Formats, tried in this order (the first one that yields a box wins):

    1. Qwen2-VL box tokens `<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`
       (the label part is optional). These boxes get the convention `"qwen2vl_1000"` whatever `convention` says.
    2. Qwen2.5-VL JSON objects `{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}` (also `"bbox"`, single quotes),
       alone, in a list, inside a ```` ```json ```` fence or inside prose.
    3. Plain coordinates `[x1, y1, x2, y2]`, `(x1, y1, x2, y2)` or `(x1, y1), (x2, y2)`.

    Boxes with a non-finite coordinate (e.g. `1e999`, JSON `NaN`) are dropped. Boxes with `x2 < x1` are kept as
    written: whether they are acceptable is the reward's decision.

    Args:
        text (`str`): The text to search, typically `extract_answer(completion)`.
        convention (`BoxConvention`, *optional*, defaults to `"pixel"`): The convention of formats 2 and 3.
        limit (`int`, *optional*): Stop after this many boxes (the search is lazy, so long texts stay cheap).

    Raises:
        ValueError: `convention` is not one of `BOX_CONVENTIONS`.
    """
    check_convention(convention)
    for candidates in (
        (_box(m.group(2, 3, 4, 5), m.group(1), "qwen2vl_1000") for m in _QWEN2VL_BOX.finditer(text)),
        (_dict_box(m.group(), convention) for m in _FLAT_DICT.finditer(text) if "bbox" in m.group()),
        (_box([g for g in m.groups() if g is not None], None, convention) for m in _PLAIN_BOX.finditer(text)),
    ):
        boxes = list(islice((b for b in candidates if b is not None), limit))
        if boxes:
            return boxes
    return []


def parse_box(text: str, convention: BoxConvention = "pixel") -> LabeledBox | None:
    """The first box of `parse_boxes(text, convention)`, or `None` if there is none."""
    boxes = parse_boxes(text, convention, limit=1)
    return boxes[0] if boxes else None


def to_pixels(box: Box, convention: BoxConvention, width: float | None = None, height: float | None = None) -> Box:
    """
    `box` converted to absolute pixels of a `width` x `height` image.

    `"pixel"` boxes are returned unchanged (`width`/`height` are not needed); `"qwen2vl_1000"` coordinates are
    multiplied by `width / 1000` (x) and `height / 1000` (y); `"relative"` ones by `width` and `height`.

    Raises:
        ValueError: `convention` is unknown, or it is not `"pixel"` and `width`/`height` are missing, non-finite or
            not positive.
    """
    check_convention(convention)
    if convention == "pixel":
        return tuple(box)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (width, height)):
        raise ValueError(f"converting a {convention!r} box needs a positive image size, got {width}x{height}")
    scale = 1000.0 if convention == "qwen2vl_1000" else 1.0
    sx, sy = width / scale, height / scale
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def check_convention(convention: str) -> None:
    """Raise a `ValueError` naming the valid values if `convention` is not one of `BOX_CONVENTIONS`."""
    if convention not in BOX_CONVENTIONS:
        raise ValueError(f"box_convention={convention!r} is not one of {', '.join(BOX_CONVENTIONS)}")


def load_literal(text: str) -> Any:
    """`text` as JSON, else as a Python literal (`ast.literal_eval`), else `None`. Never evaluates code."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except Exception:  # noqa: BLE001 - ValueError, SyntaxError, RecursionError, MemoryError on hostile input
        return None


def coords(value: Any) -> Box | None:
    """`value` as four finite floats if it is a list/tuple of exactly four real numbers (not bools), else `None`."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    try:
        box = tuple(float(v) for v in value)
    except OverflowError:  # an int too large for a float
        return None
    return box if all(math.isfinite(v) for v in box) else None


def _box(numbers, label: str | None, convention: str) -> LabeledBox | None:
    box = coords([float(n) for n in numbers])
    return LabeledBox(box, label.strip() if label is not None else None, convention) if box else None


def _dict_box(text: str, convention: str) -> LabeledBox | None:
    obj = load_literal(text)
    if not isinstance(obj, dict):
        return None
    box = coords(obj.get("bbox_2d", obj.get("bbox")))
    label = obj.get("label")
    return LabeledBox(box, None if label is None else str(label), convention) if box else None
