r"""Detection rewards: predicted labeled boxes matched one-to-one with the ground truth (`detection`, `detection_iou`).

MMR1 has no detection reward; this follows the usual detection evaluation:

1. Predicted boxes are `parse_boxes(extract_answer(completion), box_convention)`, usually Qwen2.5-VL's
   `[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}, ...]`. An answer with more than `MAX_PRED_BOXES` (1000) boxes
   scores 0.0 without matching (it keeps the cost of a runaway completion bounded).
2. A prediction and a ground-truth box can match only if their labels are equal after whitespace normalization and
   case folding (a missing label equals only a missing or empty label) and their IoU is at least `iou_threshold`.
   Invalid predicted boxes (`x2 < x1` or `y2 < y1`) match nothing.
3. The matching is one-to-one and maximizes first the number of matches, then their total IoU, with the Hungarian
   algorithm (`scipy.optimize.linear_sum_assignment`).

Frames are aligned as in `mmr1kit.rewards.grounding`: when some predicted boxes are Qwen2-VL `<|box_start|>` boxes
(0..1000) and the solution's `box_convention` differs, every box is converted to pixels with the row's image size;
without a size nothing can match.
"""

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from .grounding import row_image_size, row_value
from .parsing import (
    Box,
    check_convention,
    completion_text,
    coords,
    extract_answer,
    load_literal,
    normalize_whitespace,
    parse_boxes,
    to_pixels,
)

MAX_PRED_BOXES = 1000
DETECTION_MODES = ("f1", "mean_iou")


def normalize_label(label: str | None) -> str:
    """`label` whitespace-collapsed and case-folded; `None` becomes `""`."""
    return normalize_whitespace(label).casefold() if label is not None else ""


def parse_solution_boxes(solution: Any) -> list[tuple[Box, str | None]]:
    """
    The ground-truth `(box, label)` pairs of a detection row.

    Accepted: a JSON list (string, optionally inside `<answer>` tags) or a list of `{"bbox_2d": [x1, y1, x2, y2],
    "label": str}` objects (`"bbox"` is accepted for `"bbox_2d"`, the label may be missing), or one such object.
    `"[]"` is a valid solution: an image with nothing to detect.

    Raises:
        ValueError: The solution is not such a list, or an object has no valid box (4 finite numbers with
            `x1 <= x2`, `y1 <= y2`) or a non-string label.
    """
    value = load_literal(extract_answer(solution)) if isinstance(solution, str) else solution
    value = [value] if isinstance(value, dict) else value
    if not isinstance(value, (list, tuple)):
        expected = 'a JSON list of {"bbox_2d": [x1, y1, x2, y2], "label": str}'
        raise ValueError(f"expected {expected}, got {solution!r:.80}")  # noqa: TRY004 - the loader catches ValueError
    pairs = []
    for k, item in enumerate(value):
        box = coords(item.get("bbox_2d", item.get("bbox"))) if isinstance(item, dict) else None
        if box is None or box[2] < box[0] or box[3] < box[1]:
            raise ValueError(f"object {k}: expected a bbox_2d of 4 finite numbers, x1 <= x2, y1 <= y2: {item!r:.80}")
        label = item.get("label")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"object {k}: expected a string label, got {label!r:.80}")
        pairs.append((box, label))
    return pairs


def iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoUs, shape `(P, G)`, of boxes `pred` `(P, 4)` and `gt` `(G, 4)`; 0 for invalid predicted boxes."""
    width = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0])
    height = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1])
    with np.errstate(all="ignore"):  # inf - inf or 0 / 0 on hostile coordinates; cleaned below
        inter = np.clip(width, 0, None) * np.clip(height, 0, None)
        area_pred = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
        area_gt = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
        union = area_pred[:, None] + area_gt[None, :] - inter
        iou = np.where(union > 0, inter / union, 0.0)
    iou = np.clip(np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)
    valid = (pred[:, 2] >= pred[:, 0]) & (pred[:, 3] >= pred[:, 1])
    return np.where(valid[:, None], iou, 0.0)


def match_detections(pred: list[tuple[Box, str | None]], gt: list[tuple[Box, str | None]], iou_threshold: float):
    """The IoUs of the matched pairs (see the module docstring), as a list of floats."""
    if not pred or not gt:
        return []
    iou = iou_matrix(np.array([b for b, _ in pred], dtype=float), np.array([b for b, _ in gt], dtype=float))
    same = np.array([[normalize_label(p) == normalize_label(g) for _, g in gt] for _, p in pred], dtype=bool)
    eligible = same & (iou >= iou_threshold)
    # Each match weighs more than the IoU bonus of all matches together, so the count is maximized first.
    weight = eligible * (1.0 + iou / (min(len(pred), len(gt)) + 1))
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return [float(iou[r, c]) for r, c in zip(rows, cols) if eligible[r, c]]


class DetectionReward:
    """The reward built by `make_detection_reward` (a class rather than a closure, so that it pickles)."""

    def __init__(self, iou_threshold: float, mode: str):
        self.iou_threshold, self.mode = iou_threshold, mode
        name = "detection" if mode == "f1" else "detection_iou"
        self.__name__ = name if iou_threshold == 0.5 else f"{name}_{iou_threshold:g}"

    def __call__(self, completions: list, solution: list, **kwargs) -> list[float]:
        rewards = []
        for i, (completion, sol) in enumerate(zip(completions, solution, strict=True)):
            convention = row_value(kwargs, "box_convention", i, "pixel")
            check_convention(convention)
            try:
                gt = parse_solution_boxes(sol)
            except ValueError:
                rewards.append(0.0)  # a malformed solution; `validate_detection_solution` rejects it at load time
                continue
            found = parse_boxes(extract_answer(completion_text(completion)), convention, limit=MAX_PRED_BOXES + 1)
            if len(found) > MAX_PRED_BOXES:
                rewards.append(0.0)
                continue
            pred = [(b.box, b.label) for b in found]
            if any(b.convention != convention for b in found):
                try:
                    size = row_image_size(kwargs, i)
                    pred = [(to_pixels(b.box, b.convention, *size), b.label) for b in found]
                    gt = [(to_pixels(box, convention, *size), label) for box, label in gt]
                except (TypeError, ValueError):  # no usable image size: nothing can match
                    pred = []
            matched = match_detections(pred, gt, self.iou_threshold)
            if not found and not gt:
                rewards.append(1.0)
            elif self.mode == "f1":
                rewards.append(2 * len(matched) / (len(found) + len(gt)))
            else:
                rewards.append(sum(matched) / max(len(found), len(gt)))
        return rewards


def make_detection_reward(iou_threshold: float = 0.5, mode: str = "f1") -> DetectionReward:
    r"""
    Build a detection reward, in [0, 1].

    With `P` predicted boxes, `G` ground-truth boxes and the matched pairs `M` (see the module docstring):

    - `mode="f1"`: `F1 = 2 |M| / (P + G)` (precision `|M| / P`, recall `|M| / G`).
    - `mode="mean_iou"`: `sum of matched IoUs / max(P, G)`, an F1-like score that also rewards tighter boxes.

    `P = G = 0` gives 1.0; an unparsable answer has `P = 0`. A malformed solution gives 0.0.

    Args:
        iou_threshold (`float`, *optional*, defaults to `0.5`):
            The IoU a same-label pair needs to match, in (0, 1].
        mode (`str`, *optional*, defaults to `"f1"`):
            `"f1"` or `"mean_iou"`.

    Returns:
        The reward `f(completions, solution, box_convention=..., image_width=..., image_height=..., **kwargs)`,
        named `detection` / `detection_iou` (with `_<threshold>` appended when the threshold is not 0.5).
        `solution` holds one entry per completion in a format of `parse_solution_boxes`.

    Example:
    ```python
    >>> detection = make_detection_reward()
    >>> gt = '[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}, {"bbox_2d": [20, 20, 30, 30], "label": "dog"}]'
    >>> detection(['[{"bbox_2d": [0, 0, 10, 10], "label": "Cat"}]'], [gt])
    [0.6666666666666666]
    ```
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    if mode not in DETECTION_MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(DETECTION_MODES)}")
    return DetectionReward(iou_threshold, mode)


def validate_detection_solution(solution: Any) -> None:
    """Raise `ValueError` unless `solution` is a valid detection ground truth (see `parse_solution_boxes`)."""
    parse_solution_boxes(solution)


detection_reward = make_detection_reward()
detection_iou_reward = make_detection_reward(mode="mean_iou")
