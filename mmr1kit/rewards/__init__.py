r"""Reward functions with TRL's signature, a name → function dict, and per-task solution validators.

Every reward is `f(completions, solution, **kwargs) -> list[float]`: `completions` are strings or TRL's
conversational form `[[{"role": "assistant", "content": str}], ...]`, `solution` is the dataset column, and other
columns (`box_convention`, `image_width`, `image_height`, `task`, ...) arrive as keyword arguments. Every reward is
total: any completion string gives a finite float in the documented range, never an exception. Each function's
`__name__` is its name below, so TRL logs it as `rewards/<name>/mean`.

| name                     | range    | module       | MMR1 name                        |
|--------------------------|----------|--------------|----------------------------------|
| `format`                 | {0, 1}   | `format`     | `r1v_format`                     |
| `answer_format`          | {0, 1}   | `format`     | (dev_lkh `answer_format_reward`) |
| `accuracy`               | {0, 1}   | `counting`   | `r1v_acc`                        |
| `count_accuracy`         | {0, 1}   | `counting`   |                                  |
| `count_accuracy_partial` | [0, 1]   | `counting`   |                                  |
| `iou`                    | [0, 1]   | `grounding`  |                                  |
| `perpo_iou`              | [−1, 1]  | `grounding`  | `perpo_reward`                   |
| `ocr`                    | [0, 1]   | `ocr`        | `perpo_ocr_edit_distance_reward` |
| `anls`                   | [0, 1]   | `ocr`        |                                  |
| `detection`              | [0, 1]   | `detection`  |                                  |
| `detection_iou`          | [0, 1]   | `detection`  |                                  |
| `math`                   | {0, 1}   | `math`       |                                  |
| `soft_overlong`          | [−1, 0]  | `length`     | (DAPO's overlong penalty; TRL's) |

Parameterized variants come from factories: `make_count_accuracy`, `make_ocr_reward`, `make_detection_reward`.
`soft_overlong` depends on the run's lengths: `get_reward_funcs(names, config)` builds it from `max_completion_length`
and `soft_punish_cache`; the registry's instance uses `MMR1Config`'s defaults (16 and 4).
"""

from collections.abc import Callable

from .counting import (
    accuracy_reward,
    count_accuracy_partial_reward,
    count_accuracy_reward,
    make_count_accuracy,
    validate_counting_solution,
)
from .detection import detection_iou_reward, detection_reward, make_detection_reward, validate_detection_solution
from .format import answer_format_reward, format_reward
from .grounding import iou_reward, perpo_iou_reward, validate_grounding_solution
from .length import SoftOverlong
from .math import math_reward, validate_math_solution
from .ocr import anls_reward, make_ocr_reward, ocr_reward, validate_ocr_solution

__all__ = [
    "ALIASES",
    "REWARDS",
    "REWARD_RANGES",
    "SOLUTION_VALIDATORS",
    "get_reward_funcs",
    "make_count_accuracy",
    "make_detection_reward",
    "make_ocr_reward",
    "validate_solution",
]

REWARDS: dict[str, Callable[..., list[float]]] = {
    "format": format_reward,
    "answer_format": answer_format_reward,
    "accuracy": accuracy_reward,
    "count_accuracy": count_accuracy_reward,
    "count_accuracy_partial": count_accuracy_partial_reward,
    "iou": iou_reward,
    "perpo_iou": perpo_iou_reward,
    "ocr": ocr_reward,
    "anls": anls_reward,
    "detection": detection_reward,
    "detection_iou": detection_iou_reward,
    "math": math_reward,
    "soft_overlong": SoftOverlong(),
}

# The documented output range (min, max) of every reward in `REWARDS`.
REWARD_RANGES: dict[str, tuple[float, float]] = {name: (0.0, 1.0) for name in REWARDS} | {
    "perpo_iou": (-1.0, 1.0), "soft_overlong": (-1.0, 0.0)}

# MMR1's registry names (HEAD, its `src/open_r1/constants.py`) → ours.
ALIASES: dict[str, str] = {
    "r1v_acc": "accuracy",
    "r1v_format": "format",
    "perpo_reward": "perpo_iou",
    "perpo_ocr_edit_distance_reward": "ocr",
}

SOLUTION_VALIDATORS: dict[str, Callable[[object], None]] = {
    "counting": validate_counting_solution,
    "grounding": validate_grounding_solution,
    "ocr": validate_ocr_solution,
    "detection": validate_detection_solution,
    "math": validate_math_solution,
}


def get_reward_funcs(names: list[str], config=None) -> list[Callable[..., list[float]]]:
    """
    The reward functions called `names`, in order; MMR1's names (`ALIASES`) are accepted. With a `config`
    (`MMR1Config`), `soft_overlong` uses its `max_completion_length` and `soft_punish_cache`.

    Raises:
        ValueError: A name is neither in `REWARDS` nor in `ALIASES`; the message lists the valid names.
    """
    unknown = [n for n in names if ALIASES.get(n, n) not in REWARDS]
    if unknown:
        raise ValueError(
            f"Unknown reward function(s) {unknown}; valid names are {', '.join(REWARDS)} "
            f"and MMR1's aliases {', '.join(ALIASES)}."
        )
    funcs = [REWARDS[ALIASES.get(n, n)] for n in names]
    if config is not None:
        funcs = [SoftOverlong(config.max_completion_length, config.soft_punish_cache)
                 if isinstance(f, SoftOverlong) else f for f in funcs]
    return funcs


def validate_solution(task: str, solution: object) -> None:
    """
    Check one dataset solution for `task` (a key of `SOLUTION_VALIDATORS`).

    Raises:
        ValueError: `task` has no validator, or the solution is malformed (the message says what was expected).
    """
    if task not in SOLUTION_VALIDATORS:
        raise ValueError(f"No solution validator for task {task!r}; tasks are {', '.join(SOLUTION_VALIDATORS)}.")
    SOLUTION_VALIDATORS[task](solution)
