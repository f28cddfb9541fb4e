r"""Symbolic math reward: is the answer mathematically equal to the solution? (math_verify)

`math_verify.parse` turns each side into SymPy objects and `math_verify.verify` compares them (numbers within
rounding, fractions vs decimals, symbolic simplification, sets, intervals, equations). Model output is never
evaluated as code.

Guards:

1. Answers or solutions longer than `MAX_ANSWER_CHARS` (1000) characters score 0 without being parsed.
2. `parse` and `verify` run under math_verify's own timeouts (`PARSING_TIMEOUT_S`, `VERIFY_TIMEOUT_S`, whole seconds,
   implemented with `signal.alarm`). Signals work only in the main thread, so elsewhere (e.g. a reward thread pool)
   the timeouts are off and the length limit is the only guard, as in TRL's `accuracy_reward`.
3. A bare answer without `$` delimiters (`\frac{1}{2}`, `x^2+1`) is parsed as `$...$` first, because math_verify's
   LaTeX extractor needs delimiters (bare `2\sqrt{2}` would otherwise parse as `2`). Answers that contain a word of two
   or more letters outside a LaTeX command (`Paris`, `x = 3 apples`) are not wrapped: wrapped, `Paris` parses as the
   product `P*a*r*i*s` and would equal `Pairs`.

MMR1's `accuracy_reward` ran `parse` on the whole completion, `<think>` included, with no time limit
(its `src/open_r1/rewards.py`); here only the extracted answer is parsed.
"""

import logging
import re
import threading

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from .parsing import completion_text, extract_answer

MAX_ANSWER_CHARS = 1000
PARSING_TIMEOUT_S = 2
VERIFY_TIMEOUT_S = 2
_PLAIN_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_DELIMITED = ("$", "\\boxed", "\\(", "\\[")


def _timeouts() -> tuple[int | None, int | None]:
    """math_verify's `(parsing_timeout, timeout_seconds)`: on in the main thread, off elsewhere (signal.alarm)."""
    if threading.current_thread() is threading.main_thread():
        return PARSING_TIMEOUT_S, VERIFY_TIMEOUT_S
    logging.getLogger("math_verify.parser").setLevel(logging.ERROR)  # the "timeout is disabled" warning
    logging.getLogger("math_verify.grader").setLevel(logging.ERROR)
    return None, None


def parse_math(text: str) -> list:
    """
    `math_verify.parse` of `text` (see the module docstring for the `$...$` wrapping), or `[]`.

    Returns `[]` for an empty text, a text longer than `MAX_ANSWER_CHARS`, a parse failure or a timeout.
    """
    if not text.strip() or len(text) > MAX_ANSWER_CHARS:
        return []
    parsing_timeout, _ = _timeouts()
    candidates = [text]
    if not any(d in text for d in _DELIMITED) and not _PLAIN_WORD.search(text):
        candidates.insert(0, f"${text}$")
    for candidate in candidates:
        try:
            parsed = parse(candidate, parsing_timeout=parsing_timeout)
        except (Exception, TimeoutException):  # noqa: BLE001 - a reward must not raise on model output
            parsed = []
        if parsed:
            return parsed
    return []


def math_equal(answer: str, solution: str) -> bool:
    r"""
    Whether `answer` is mathematically equal to `solution` according to math_verify, with the guards above.

    Example:
    ```python
    >>> math_equal("0.5", "\\frac{1}{2}"), math_equal("2\\sqrt{2}", "\\sqrt{8}"), math_equal("3", "4")
    (True, True, False)
    ```
    """
    gold, pred = parse_math(solution), parse_math(answer)
    if not gold or not pred:
        return False
    _, verify_timeout = _timeouts()
    try:
        return bool(verify(gold, pred, timeout_seconds=verify_timeout))
    except (Exception, TimeoutException):  # noqa: BLE001 - a reward must not raise on model output
        return False


def math_reward(completions: list, solution: list, **kwargs) -> list[float]:
    r"""
    Reward 1.0 when the extracted answer is mathematically equal to the solution, else 0.0.

    `answer = extract_answer(completion)`, `solution = extract_answer(str(solution))` (so `"<answer> 1/2 </answer>"`
    works), then `math_equal(answer, solution)`.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions as strings or in TRL's conversational form.
        solution (`list`):
            One solution per completion: a LaTeX or plain expression (`"\\frac{1}{2}"`, `"0.5"`, `"x^2+1"`,
            `"\\{1, 2\\}"`, `"(0, 1]"`), optionally inside `<answer>` tags, or a number.
        **kwargs:
            Other dataset columns; unused.

    Returns:
        `list[float]`: 1.0 or 0.0 per completion.

    Example:
    ```python
    >>> math_reward(["<answer>\\frac{2}{4}</answer>", "<answer>1/3</answer>"], ["0.5", "0.5"])
    [1.0, 0.0]
    ```
    """
    return [
        float(math_equal(extract_answer(completion_text(c)), extract_answer(str(s))))
        for c, s in zip(completions, solution, strict=True)
    ]


def validate_math_solution(solution) -> None:
    """
    Raise `ValueError` unless `solution` is a non-empty expression of at most `MAX_ANSWER_CHARS` characters that
    math_verify can parse (a string, optionally in `<answer>` tags, or a number).
    """
    if isinstance(solution, bool) or not isinstance(solution, (str, int, float)):
        raise ValueError(f"expected a string or a number, got {type(solution).__name__}")  # noqa: TRY004 - the loader catches ValueError
    text = extract_answer(str(solution))
    if not text:
        raise ValueError("the solution is empty")
    if len(text) > MAX_ANSWER_CHARS:
        raise ValueError(f"the solution has {len(text)} characters, more than {MAX_ANSWER_CHARS}")
    if not parse_math(text):
        raise ValueError(f"math_verify cannot parse {text[:80]!r}")


math_reward.__name__ = "math"
