r"""Answer rewards for counting and short-answer tasks: `accuracy` (MMR1's `r1v_acc`) and `count_accuracy`.

Differences from MMR1's `accuracy_reward` (its `src/open_r1/rewards.py`):

1. The answer is the last `<answer>` block (DOTALL), not the first single-line match of a regex without DOTALL.
2. Numbers are compared as numbers (`"3.0"` equals `"<answer> 3 </answer>"`, `"1,000"` equals `"1000"`).
3. math_verify runs last, on the extracted answer only, with time and length limits (`mmr1kit.rewards.math`);
   MMR1 ran it first on the whole completion, so a number inside `<think>` could be taken for the answer.
"""

import math

from .math import math_equal
from .parsing import completion_text, extract_answer, normalize_whitespace, parse_number


def normalize_text(text: str) -> str:
    """Case-folded, whitespace-collapsed `text` without one trailing `.` (for string equality of answers)."""
    return normalize_whitespace(text).casefold().removesuffix(".").rstrip()


def answers_match(answer: str, solution: str) -> bool:
    """
    Whether an extracted `answer` matches an extracted `solution`.

    1. If both parse as numbers (`parse_number`): `math.isclose(a, b, rel_tol=1e-6)`, and nothing else is tried.
    2. Otherwise, non-empty and equal after `normalize_text`.
    3. Otherwise `math_equal(answer, solution)` (math_verify under time and length limits).
    """
    a, b = parse_number(answer), parse_number(solution)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-6)
    if answer and normalize_text(answer) == normalize_text(solution):
        return True
    return math_equal(answer, solution)


def accuracy_reward(completions: list, solution: list, **kwargs) -> list[float]:
    r"""
    Reward 1.0 when the answer matches the solution, else 0.0.

    `answer = extract_answer(completion)` and `gold = extract_answer(str(solution))`, compared with `answers_match`:
    numbers as numbers (relative tolerance 1e-6), then case- and whitespace-insensitive string equality, then
    math_verify. MMR1's name: `r1v_acc`.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions as strings or in TRL's conversational form `[[{"role": "assistant", "content": str}], ...]`.
        solution (`list`):
            One solution per completion: a number, a string, or either wrapped as `"<answer> 3 </answer>"` (MMR1's
            `r1v` answer template).
        **kwargs:
            Other dataset columns; unused.

    Returns:
        `list[float]`: 1.0 or 0.0 per completion.

    Example:
    ```python
    >>> accuracy_reward(["<think>..</think><answer>3.0</answer>", "<answer>Red</answer>", "<answer>4</answer>"],
    ...                 ["<answer> 3 </answer>", "red", 3])
    [1.0, 1.0, 0.0]
    ```
    """
    return [
        float(answers_match(extract_answer(completion_text(c)), extract_answer(str(s))))
        for c, s in zip(completions, solution, strict=True)
    ]


def make_count_accuracy(partial_credit: bool = False, scale: float | None = None):
    r"""
    Build a counting reward: exact count, or partial credit that decreases linearly with the distance.

    With `pred = parse_number(extract_answer(completion))` and `gt` the solution's count:

    - `partial_credit=False`: `1.0 if pred == gt else 0.0`.
    - `partial_credit=True`: `max(0, 1 - |pred - gt| / s)` with `s = scale`, or `s = max(gt, 1)` when `scale` is
      `None` (a relative error: off by 2 of 10 gives 0.8).

    An answer that is not exactly one number (`"3 apples"`, `"3, 4"`, empty) gives 0.0. A solution that is not a
    number gives 0.0 (`validate_counting_solution` rejects such rows at load time). Range: [0, 1].

    Args:
        partial_credit (`bool`, *optional*, defaults to `False`):
            Whether a wrong count earns partial credit.
        scale (`float`, *optional*):
            The distance at which the partial credit reaches 0. Must be positive. Defaults to `max(gt, 1)`.

    Returns:
        The reward function, named `count_accuracy` or `count_accuracy_partial`.
    """
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return CountAccuracy(partial_credit, scale)


class CountAccuracy:
    """The reward built by `make_count_accuracy` (a class rather than a closure, so that it pickles, as TRL's do)."""

    def __init__(self, partial_credit: bool, scale: float | None):
        self.partial_credit, self.scale = partial_credit, scale
        self.__name__ = "count_accuracy_partial" if partial_credit else "count_accuracy"

    def __call__(self, completions: list, solution: list, **kwargs) -> list[float]:
        rewards = []
        for c, s in zip(completions, solution, strict=True):
            pred, gt = parse_number(extract_answer(completion_text(c))), parse_number(extract_answer(str(s)))
            if pred is None or gt is None:
                rewards.append(0.0)
            elif not self.partial_credit:
                rewards.append(float(pred == gt))
            else:
                rewards.append(max(0.0, 1.0 - abs(pred - gt) / (self.scale or max(abs(gt), 1.0))))
        return rewards


def validate_counting_solution(solution) -> None:
    """Raise `ValueError` unless `solution` is a non-negative integer count (`3`, `"3"`, `"<answer> 3 </answer>"`)."""
    if isinstance(solution, bool) or not isinstance(solution, (str, int, float)):
        raise ValueError(f"expected a count as a string or a number, got {type(solution).__name__}")  # noqa: TRY004 - the loader catches ValueError
    value = parse_number(extract_answer(str(solution)))
    if value is None or value < 0 or value != int(value):
        raise ValueError(f"expected a non-negative integer count, got {str(solution)[:80]!r}")


accuracy_reward.__name__ = "accuracy"
count_accuracy_reward = make_count_accuracy()
count_accuracy_partial_reward = make_count_accuracy(partial_credit=True)
