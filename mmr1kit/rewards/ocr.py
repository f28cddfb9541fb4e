r"""Text-reading rewards: `ocr` (1 − normalized edit distance, MMR1's `perpo_ocr_edit_distance_reward`) and `anls`.

Both use the character Levenshtein distance of `rapidfuzz`, normalized by the longer string:
`NL(a, b) = Levenshtein(a, b) / max(len(a), len(b))` (0 when both are empty). rapidfuzz runs in
`O(len(a) * len(b) / 64)`, so a huge completion against a short solution stays fast.

Differences from MMR1 (its `src/open_r1/rewards.py`; `docs/mmr1.md`, known bug 3):

1. Only the edit distance is computed (MMR1 also computed BLEU, METEOR, F-measure, precision and recall, never used
   them, and scored 0 when any of them raised, e.g. for a missing nltk wordnet).
2. Two empty strings score 1.0 (MMR1: 0, through a caught division by zero); one empty string scores 0.0.
3. The answer is the `<answer>` block when there is one, else the whole completion (MMR1 always used the whole
   completion).
"""

from rapidfuzz.distance import Levenshtein

from .parsing import completion_text, extract_answer, load_literal, normalize_whitespace


def ocr_score(prediction: str, reference: str, ignore_case: bool = False) -> float:
    """`1 − NL(prediction, reference)` after `normalize_whitespace` (and `casefold` if `ignore_case`), in [0, 1]."""
    prediction, reference = normalize_whitespace(prediction), normalize_whitespace(reference)
    if ignore_case:
        prediction, reference = prediction.casefold(), reference.casefold()
    return 1.0 - Levenshtein.normalized_distance(prediction, reference)


class OcrReward:
    """The reward built by `make_ocr_reward` (a class rather than a closure, so that it pickles, as TRL's do)."""

    def __init__(self, ignore_case: bool):
        self.ignore_case = ignore_case
        self.__name__ = "ocr_ignore_case" if ignore_case else "ocr"

    def __call__(self, completions: list, solution: list, **kwargs) -> list[float]:
        return [
            ocr_score(extract_answer(completion_text(c)), str(s), self.ignore_case)
            for c, s in zip(completions, solution, strict=True)
        ]


def make_ocr_reward(ignore_case: bool = False) -> OcrReward:
    r"""
    Build the OCR reward: `1 − NL(answer, solution)`, in [0, 1].

    `answer = extract_answer(completion)` (the `<answer>` block if present, else the whole completion). Both strings
    are whitespace-normalized (`" ".join(s.split())`); case matters unless `ignore_case=True` (then both are
    case-folded). Both empty → 1.0; exactly one empty → 0.0.

    Args:
        ignore_case (`bool`, *optional*, defaults to `False`):
            Compare case-insensitively.

    Returns:
        The reward function `f(completions, solution, **kwargs) -> list[float]`, named `ocr` or `ocr_ignore_case`.
        `solution` holds one reference string per completion (non-strings are converted with `str`).

    Example:
    ```python
    >>> ocr = make_ocr_reward()
    >>> ocr(["<answer>Hello  world</answer>", "hello world", ""], ["Hello world"] * 3)
    [1.0, 0.9090909090909091, 0.0]
    ```
    """
    return OcrReward(ignore_case)


def reference_answers(solution) -> list[str]:
    """
    The reference answers of a row: a list of strings as is, a JSON list of strings (`'["3 pm", "15:00"]'`) parsed,
    anything else as one string.
    """
    value = load_literal(solution) if isinstance(solution, str) and solution.lstrip().startswith("[") else solution
    if isinstance(value, (list, tuple)) and value and all(isinstance(s, str) for s in value):
        return list(value)
    return [str(solution)]


def anls_score(prediction: str, references: list[str], threshold: float = 0.5) -> float:
    """
    DocVQA's ANLS of one prediction: `max over references of (1 − NL if NL < threshold else 0)`, in [0, 1].

    Strings are lower-cased and whitespace-normalized before `NL` is computed.
    """
    prediction = normalize_whitespace(prediction).lower()
    best = 0.0
    for reference in references:
        distance = Levenshtein.normalized_distance(prediction, normalize_whitespace(reference).lower())
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def anls_reward(completions: list, solution: list, **kwargs) -> list[float]:
    r"""
    DocVQA's Average Normalized Levenshtein Similarity of each answer, threshold 0.5, in [0, 1].

    `answer = extract_answer(completion)`; the score is `anls_score(answer, reference_answers(solution))`: the best
    `1 − NL` over the reference answers, where a normalized distance `NL >= 0.5` scores 0. Matching is
    case-insensitive and whitespace-normalized.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions as strings or in TRL's conversational form.
        solution (`list`):
            One entry per completion: a reference string, a list of strings, or a JSON list of strings.
        **kwargs:
            Other dataset columns; unused.

    Returns:
        `list[float]`: one score per completion.

    Example:
    ```python
    >>> anls_reward(["<answer>3 PM</answer>", "<answer>noon</answer>"], ['["3 pm", "15:00"]', "3 pm"])
    [1.0, 0.0]
    ```
    """
    return [
        anls_score(extract_answer(completion_text(c)), reference_answers(s))
        for c, s in zip(completions, solution, strict=True)
    ]


def validate_ocr_solution(solution) -> None:
    """Raise `ValueError` unless `solution` is a string or a non-empty list (or JSON list) of strings."""
    if isinstance(solution, (list, tuple)):
        if not solution or not all(isinstance(s, str) for s in solution):
            raise ValueError("expected a non-empty list of strings")
    elif not isinstance(solution, str):
        raise ValueError(f"expected a string, got {type(solution).__name__}")  # noqa: TRY004 - the loader catches ValueError
    elif solution.lstrip().startswith("[") and isinstance(value := load_literal(solution), list):
        validate_ocr_solution(value)


ocr_reward = make_ocr_reward()
anls_reward.__name__ = "anls"
