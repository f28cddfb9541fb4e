r"""Rule-based answer extraction and matching for evaluation protocols (`mmr1kit.protocols`).

An *extractor* turns a completion into the model's answer, or `None` when it finds none; a *matcher* says whether an
extracted answer equals the row's gold answer. Keeping "found no answer" apart from "found a wrong answer" is what
lets a results table tell a model that reasons to a wrong number from one that never writes the answer where the
protocol looks for it (a prompt or format problem, not a reasoning one).

| extractor        | what it returns                                                                    | who uses it            |
|------------------|------------------------------------------------------------------------------------|------------------------|
| `strict_integer` | the integer of the first `<answer>\s*(\d+)\s*</answer>` (MMR1's and R1-V's regex)    | MMR1 counting          |
| `boxed`          | the content of the last `\boxed{...}` (nested braces kept)                          | EasyR1 Geometry3K      |
| `final_answer`   | a choice letter, or the final value with units dropped, from the answer region      | MathVista, MathVerse   |

`final_answer` looks for the answer region in order: the last `<answer>...</answer>`, the last `\boxed{}`, the text
after the last "answer is" / "Answer:", then the last non-empty line. For a multiple-choice row (gold answer a
letter) it returns a letter: a lone choice letter in the region (`B`, `(B)`, `B.`, "option B"), else the one choice
whose text the region contains (MMR1's `can_infer_option` / `can_infer_text` in `eval/extract_calculate.py`). For a
free-form row it returns the region with a trailing period, currency signs and units removed (`14 cm` -> `14`,
`60°` -> `60`, `25%` -> `25`), or the last number of a sentence. MMR1 sent what its rules could not extract to
GPT-4o; mmr1kit does not, so its `no_answer` rate is the share those rules leave undecided.

| matcher   | correct when                                                                                             |
|-----------|----------------------------------------------------------------------------------------------------------|
| `integer` | the answer and the gold count are the same integer                                                       |
| `math`    | letters equal (multiple choice); else MathVista's normalisation by `answer_type` (`integer`: `int(float(x))`, `float`: rounded to `precision`, `list`: spaces ignored), else `mmr1kit.rewards.counting.answers_match` (numbers, text, then math_verify: fractions, roots, LaTeX) |

Nothing here evaluates model output as code.
"""

from __future__ import annotations

import re

from mmr1kit.rewards.counting import answers_match
from mmr1kit.rewards.parsing import extract_answer, parse_number

_STRICT_INTEGER = re.compile(r"<answer>\s*(\d+)\s*</answer>")  # MMR1 eval/evaluate_counting.py, verbatim
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ANSWER_IS = re.compile(r"(?:answer\s+is|answer\s*:|answer\s*=)\s*", re.IGNORECASE)
_LETTER = re.compile(r"^\(?\s*(?:option\s+|choice\s+)?\(?([A-Z])\)?\s*[.:)]?\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+]?\.\d+")
_UNIT_TAIL = re.compile(r"^(?P<value>[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s*/\s*\d+)?)\s*(?:°|%|\\%|[A-Za-z][A-Za-z^²³\d/ .]*)?$")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|mbox)\{([^{}]*)\}")


# --------------------------------------------------------------------------------------------------------------
# Extractors: completion text and its row -> answer, or None
# --------------------------------------------------------------------------------------------------------------


def strict_integer(text: str, row: dict | None = None) -> str | None:
    """MMR1's counting extractor: the integer in the first `<answer> N </answer>`, else `None`."""
    match = _STRICT_INTEGER.search(text)
    return str(int(match.group(1))) if match else None


def last_boxed(text: str) -> str | None:
    r"""Content of the last `\boxed{...}` with balanced braces, or `None` (no box, or the box is never closed)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return None


def boxed(text: str, row: dict | None = None) -> str | None:
    r"""EasyR1's math extractor: the last `\boxed{}` content, `None` when there is none or it is empty."""
    found = last_boxed(text)
    return found or None


def answer_region(text: str) -> str | None:
    """Where a reasoning completion states its answer (see the module docstring), stripped; `None` if empty."""
    blocks = _ANSWER_BLOCK.findall(text)
    if blocks:
        return blocks[-1].strip() or None
    box = last_boxed(text)
    if box:
        return box
    said = list(_ANSWER_IS.finditer(text))
    if said:
        tail = text[said[-1].end() :].strip().splitlines()
        return tail[0].strip() if tail and tail[0].strip() else None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def choice_letter(region: str, choices: list) -> str | None:
    """The choice letter `region` names: a lone letter (`B`, `(B)`, `option B`), else the single letter standing as
    a word, else the single choice whose text `region` contains (case-insensitive); `None` when ambiguous or absent.
    Without `choices` (MathVerse keeps them in the question or the image) the letters are A to E and only letters
    count."""
    letters = [chr(ord("A") + i) for i in range(len(choices) or 5)]
    lone = _LETTER.match(region.strip())
    if lone and lone.group(1).upper() in letters:
        return lone.group(1).upper()
    words = set(re.sub(r"[.()\[\],:;!*#{}]", " ", region).split())
    named = [c for c in letters if c in words]
    if len(named) == 1:
        return named[0]
    lowered = region.lower()
    contained = [c for c, choice in zip(letters, choices) if str(choice).strip() and str(choice).lower() in lowered]
    return contained[0] if len(contained) == 1 else None


def strip_units(value: str) -> str:
    """A final value without a trailing period, `$`, LaTeX `\\text{}` units or plain units (`14 cm` -> `14`)."""
    value = _LATEX_TEXT.sub(r" \1", value).strip().rstrip(".").strip().replace("$", "").replace("\\,", "")
    match = _UNIT_TAIL.match(value)
    return match.group("value").replace("−", "-").replace(" ", "") if match else value


def final_answer(text: str, row: dict | None = None) -> str | None:
    """Rule-based final answer (MathVista, MathVerse): a letter for multiple choice, else the value; else `None`."""
    row = row or {}
    region = answer_region(text)
    if region is None:
        return None
    choices = list(row.get("choices") or [])
    if multiple_choice(row):
        return choice_letter(region, choices)
    lone = _LETTER.match(region)
    if choices and lone and ord(lone.group(1).upper()) - ord("A") < len(choices):
        return str(choices[ord(lone.group(1).upper()) - ord("A")])  # a letter answer to a free-form row with choices
    value = strip_units(region)
    if parse_number(value) is None and len(value.split()) > 3:  # a sentence: its last number
        numbers = _NUMBER.findall(value)
        return numbers[-1].replace(" ", "") if numbers else None
    return value or None


EXTRACTORS = {"strict_integer": strict_integer, "boxed": boxed, "final_answer": final_answer}


# --------------------------------------------------------------------------------------------------------------
# Matchers: extracted answer and its row -> correct?
# --------------------------------------------------------------------------------------------------------------


def gold_answer(row: dict) -> str:
    """The row's gold answer: its `solution` without `<answer>` tags (an answer template may have added them)."""
    return extract_answer(str(row.get("solution", "")))


def is_letter(value: str) -> bool:
    return len(value) == 1 and value.isalpha() and value.isupper()


def multiple_choice(row: dict) -> bool:
    """Whether the row's gold answer is a choice letter (it has `choices` or `question_type="multi_choice"`)."""
    return is_letter(gold_answer(row)) and bool(row.get("choices") or row.get("question_type") == "multi_choice")


def integer_match(answer: str, row: dict) -> bool:
    """The answer and the gold count are the same integer."""
    pred, gold = parse_number(answer), parse_number(gold_answer(row))
    return pred is not None and gold is not None and pred == gold and float(pred).is_integer()


def math_match(answer: str, row: dict) -> bool:
    """Letters for multiple choice; MathVista's `answer_type` / `precision` rules; else `answers_match`."""
    gold = gold_answer(row)
    if multiple_choice(row):
        return answer.strip().upper() == gold
    answer_type = row.get("answer_type")
    pred, target = parse_number(answer), parse_number(gold)
    if answer_type == "integer" and pred is not None and target is not None:
        return int(pred) == int(target)  # MathVista calculate_score.py: str(int(float(extraction)))
    if answer_type == "float" and pred is not None and target is not None and row.get("precision") is not None:
        digits = int(row["precision"])
        return round(pred, digits) == round(target, digits)
    if answer_type == "list":
        return answer.replace(" ", "") == gold.replace(" ", "")
    return answers_match(answer, gold)


MATCHERS = {"integer": integer_match, "math": math_match}
