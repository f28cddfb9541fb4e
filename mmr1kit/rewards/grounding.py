r"""Grounding (referring expression) rewards: `iou` and MMR1's PerPO reward `perpo_iou`.

The predicted box is the first box of `parse_boxes(extract_answer(completion), box_convention)` (see
`mmr1kit.rewards.parsing` for the formats). Prediction and solution are compared in one frame:

- same convention: compared as they are (IoU does not change when each axis is scaled, so no image size is needed);
- different conventions (a Qwen2-VL `<|box_start|>` box, always 0..1000, against `"pixel"` data): both are converted
  with `to_pixels` using the row's image size (`image_width`/`image_height`, else `width`/`height`, else the
  `image` column's `.size`). Without a size the prediction counts as unparsable.

Differences from MMR1's `perpo_reward` (its `src/open_r1/rewards.py`; `docs/mmr1.md`, known bugs 2 and 11):

1. No `eval()`: solutions and predictions are parsed with `json`, `ast.literal_eval` and regexes.
2. The box may stand anywhere in the answer, in any format of `parse_boxes`; MMR1 required the whole completion to be
   a `[...]` list.
3. The penalties −0.6 / −0.2 are never squared (MMR1 squared them into +0.36 / +0.04 until `b00d82c`).
4. The coordinate convention is explicit (`box_convention` column) instead of implied by the data.
"""

import math
from typing import Any

from .parsing import (
    Box,
    LabeledBox,
    check_convention,
    completion_text,
    coords,
    extract_answer,
    load_literal,
    parse_box,
    to_pixels,
)


def row_value(kwargs: dict, key: str, index: int, default: Any = None) -> Any:
    """Row `index` of the dataset column `kwargs[key]` (a list), or the value itself if it is not a list."""
    value = kwargs.get(key)
    if isinstance(value, (list, tuple)):
        value = value[index] if index < len(value) else None
    return default if value is None else value


def row_image_size(kwargs: dict, index: int) -> tuple[float, float] | None:
    """The image size of row `index`: `image_width`/`image_height`, `width`/`height` or `image.size`, else None."""
    for width_key, height_key in (("image_width", "image_height"), ("width", "height")):
        width, height = row_value(kwargs, width_key, index), row_value(kwargs, height_key, index)
        if width is not None and height is not None:
            return width, height
    size = getattr(row_value(kwargs, "image", index), "size", None)  # a PIL image
    return size if isinstance(size, tuple) and len(size) == 2 else None


def common_frame(pred: LabeledBox, gt: Box, gt_convention: str, size) -> tuple[Box, Box] | None:
    """`(pred, gt)` in one coordinate frame (see the module docstring), or `None` if that needs a missing size."""
    if pred.convention == gt_convention:
        return pred.box, gt
    try:
        return to_pixels(pred.box, pred.convention, *size), to_pixels(gt, gt_convention, *size)
    except (TypeError, ValueError):  # no size, or a size that is not a positive number
        return None


def box_iou(a: Box, b: Box) -> float:
    """
    Intersection over union of two `(x1, y1, x2, y2)` boxes, in [0, 1].

    0.0 when either box is invalid (`x2 < x1` or `y2 < y1`), when they do not overlap, when the union is empty, or
    when the areas overflow a float.
    """
    if a[2] < a[0] or a[3] < a[1] or b[2] < b[0] or b[3] < b[1]:
        return 0.0
    width, height = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0 else 0.0
    return min(1.0, iou) if math.isfinite(iou) else 0.0


def parse_solution_box(solution: Any) -> Box:
    """
    The ground-truth box of a grounding row.

    Accepted: `"[x1, y1, x2, y2]"` (optionally inside `<answer>` tags), a list/tuple of four numbers,
    `{"bbox_2d": [x1, y1, x2, y2], "label": ...}` (also `"bbox"`) as a dict or a JSON string, or a one-element list
    of such a dict.

    Raises:
        ValueError: The solution is not four finite numbers with `x1 <= x2` and `y1 <= y2`.
    """
    value = load_literal(extract_answer(solution)) if isinstance(solution, str) else solution
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        value = value.get("bbox_2d", value.get("bbox"))
    box = coords(value)
    if box is None:
        raise ValueError(f'expected [x1, y1, x2, y2] (4 finite numbers) or {{"bbox_2d": [...]}}, got {solution!r:.80}')
    if box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"expected x1 <= x2 and y1 <= y2, got {list(box)}")
    return box


def _scored(score, unparsable: float, completions, solution, kwargs) -> list[float]:
    """Apply `score(pred_box, gt_box)` per row; `unparsable` when no box is found or frames cannot be aligned."""
    rewards = []
    for i, (completion, sol) in enumerate(zip(completions, solution, strict=True)):
        convention = row_value(kwargs, "box_convention", i, "pixel")
        check_convention(convention)
        try:
            gt = parse_solution_box(sol)
        except ValueError:
            rewards.append(0.0)  # a malformed solution; `validate_grounding_solution` rejects it at load time
            continue
        pred = parse_box(extract_answer(completion_text(completion)), convention)
        pair = common_frame(pred, gt, convention, row_image_size(kwargs, i)) if pred else None
        rewards.append(score(*pair) if pair else unparsable)
    return rewards


def iou_reward(completions: list, solution: list, **kwargs) -> list[float]:
    r"""
    IoU of the predicted box with the ground-truth box, in [0, 1].

    0.0 when no box can be parsed, the box is invalid (`x2 < x1` or `y2 < y1`), the boxes do not overlap, or the
    solution is malformed.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions as strings or in TRL's conversational form.
        solution (`list`):
            One ground-truth box per completion, in a format of `parse_solution_box`.
        box_convention (`list[str]`, *optional*):
            Dataset column: `"pixel"` (default), `"qwen2vl_1000"` or `"relative"`, for the solution and for
            predictions without Qwen2-VL box tokens. Any other value raises `ValueError`.
        image_width, image_height (`list[float]`, *optional*):
            Dataset columns, needed only when the prediction's convention differs from the solution's.
        **kwargs:
            Other dataset columns; unused.

    Returns:
        `list[float]`: one IoU per completion.

    Example:
    ```python
    >>> iou_reward(["<answer>[0, 0, 10, 10]</answer>", "no box"], ["[0, 0, 10, 20]", "[0, 0, 10, 20]"])
    [0.5, 0.0]
    ```
    """
    return _scored(box_iou, 0.0, completions, solution, kwargs)


def perpo_score(pred: Box, gt: Box) -> float:
    """MMR1's PerPO score of a parsed box: −0.6 invalid, −0.2 no overlap, else IoU² (0 for an empty union)."""
    if pred[2] < pred[0] or pred[3] < pred[1]:
        return -0.6
    if min(pred[2], gt[2]) <= max(pred[0], gt[0]) or min(pred[3], gt[3]) <= max(pred[1], gt[1]):
        return -0.2
    return box_iou(pred, gt) ** 2


def perpo_iou_reward(completions: list, solution: list, **kwargs) -> list[float]:
    r"""
    MMR1's PerPO grounding reward (`perpo_reward`), in [−1, 1], without MMR1's squared-penalty bug.

    | case                                             | reward |
    |--------------------------------------------------|--------|
    | no box can be parsed (or frames cannot be aligned) | −1.0 |
    | invalid box, `x2 < x1` or `y2 < y1`              | −0.6   |
    | no overlap with the ground truth                 | −0.2   |
    | otherwise                                        | IoU²   |
    | malformed solution                               | 0.0    |

    Args: as `iou_reward` (`completions`, `solution`, `box_convention`, `image_width`, `image_height`).

    Returns:
        `list[float]`: one reward per completion.

    Example:
    ```python
    >>> perpo_iou_reward(["[0, 0, 10, 10]", "[10, 0, 0, 10]", "[50, 50, 60, 60]", "?"], ["[0, 0, 10, 20]"] * 4)
    [0.25, -0.6, -0.2, -1.0]
    ```
    """
    return _scored(perpo_score, -1.0, completions, solution, kwargs)


def validate_grounding_solution(solution: Any) -> None:
    """Raise `ValueError` unless `solution` is a valid ground-truth box (see `parse_solution_box`)."""
    parse_solution_box(solution)


iou_reward.__name__ = "iou"
perpo_iou_reward.__name__ = "perpo_iou"
