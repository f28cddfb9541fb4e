import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import levenshtein

from mmr1kit.rewards.ocr import (
    anls_reward,
    anls_score,
    make_ocr_reward,
    ocr_reward,
    reference_answers,
    validate_ocr_solution,
)


def reference_ocr(prediction: str, reference: str) -> float:
    """The documented formula, written independently: 1 - DP distance / max length after whitespace collapse."""
    p, r = " ".join(prediction.split()), " ".join(reference.split())
    return 1.0 if not p and not r else 1.0 - levenshtein(p, r) / max(len(p), len(r))


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("Hello world", "Hello world", 1.0),  # identical
        ("<answer>Hello world</answer>", "Hello world", 1.0),  # taken from <answer>
        ("<answer>  Hello \n\t world </answer>", "Hello world", 1.0),  # whitespace collapsed
        ("hello world", "Hello world", 1 - 1 / 11),  # case-sensitive by default
        ("Hello", "Hello world", 1 - 6 / 11),  # missing word
        ("", "", 1.0),  # both empty (MMR1: 0 via a caught division by zero)
        ("   ", "\n", 1.0),  # both empty after whitespace collapse
        ("", "abc", 0.0),  # empty prediction
        ("abc", "", 0.0),  # empty reference
        ("xyz", "abc", 0.0),  # all substituted
        ("<answer>kitten</answer>", "sitting", 1 - 3 / 7),  # the classic example
        ("<think>reading</think>ABC", "ABC", 1 - 22 / 25),  # no <answer>: the whole completion
        ("<answer>日本語</answer>", "日本", 1 - 1 / 3),  # characters, not bytes
        ([{"role": "assistant", "content": "<answer>ABC</answer>"}], "ABC", 1.0),  # conversational form
        ("<answer>12</answer>", 12, 1.0),  # a non-string solution is compared as str()
    ],
)
def test_ocr(completion, solution, expected):
    assert ocr_reward([completion], [solution]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    "prediction, reference",
    [
        ("kitten", "sitting"),  # substitutions and an insertion
        ("flaw", "lawn"),  # deletion and insertion
        ("a  b   c", "abc"),  # whitespace collapse before the distance
        ("", "x"),  # one empty
        ("intention", "execution"),  # textbook case
    ],
)
def test_ocr_agrees_with_dynamic_programming(prediction, reference):
    assert ocr_reward([prediction], [reference])[0] == pytest.approx(reference_ocr(prediction, reference))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=30), st.text(max_size=30))
def test_ocr_agrees_with_dynamic_programming_fuzzed(prediction, reference):
    if "<answer>" in prediction or "</answer>" in prediction:
        return  # extraction would change the prediction; covered by the table above
    assert ocr_reward([prediction], [reference])[0] == pytest.approx(reference_ocr(prediction.strip(), reference))


def test_ocr_ignore_case_factory():
    reward = make_ocr_reward(ignore_case=True)
    assert reward.__name__ == "ocr_ignore_case" and ocr_reward.__name__ == "ocr"
    assert reward(["HELLO World"], ["hello world"]) == [1.0]
    assert pickle.loads(pickle.dumps(reward))(["ABC"], ["abc"]) == [1.0]


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("<answer>3 PM</answer>", "3 pm", 1.0),  # case-insensitive
        ("<answer> 3   pm </answer>", "3 pm", 1.0),  # whitespace-normalized
        ("<answer>3 pn</answer>", "3 pm", 0.75),  # NL = 1/4 < 0.5 → 1 - NL
        ("<answer>abcd</answer>", "abxy", 0.0),  # NL = 0.5 is not below the threshold → 0
        ("<answer>noon</answer>", "3 pm", 0.0),  # far
        ("<answer>15:00</answer>", '["3 pm", "15:00"]', 1.0),  # JSON list: max over answers
        ("<answer>15:0</answer>", ["3 pm", "15:00"], 0.8),  # Python list: best is 1 - 1/5
        ("<answer>[1] Intro</answer>", "[1] Intro", 1.0),  # a bracketed reference that is not a JSON list
        ("", "", 1.0),  # both empty
        ("", "x", 0.0),  # empty prediction
    ],
)
def test_anls(completion, solution, expected):
    assert anls_reward([completion], [solution]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    "solution, expected",
    [
        ('["a", "b"]', ["a", "b"]),  # JSON list of strings
        (["a"], ["a"]),  # list of strings
        ("[1, 2]", ["[1, 2]"]),  # a list of numbers stays one string
        ("[]", ["[]"]),  # an empty list stays one string
        ("plain", ["plain"]),  # a plain string
        (7, ["7"]),  # a number
    ],
)
def test_reference_answers(solution, expected):
    assert reference_answers(solution) == expected


def test_anls_score_threshold_and_name():
    assert anls_score("abc", ["abd"], threshold=0.2) == 0.0  # NL = 1/3 >= 0.2
    assert anls_reward.__name__ == "anls"


@pytest.mark.parametrize("solution", ["text", "", '["a", "b"]', ["a", "b"]])
def test_validate_ocr_solution_accepts(solution):
    validate_ocr_solution(solution)


@pytest.mark.parametrize(
    "solution, message",
    [
        (None, "string"),  # missing
        (3, "string"),  # not text
        ([], "non-empty list"),  # empty list
        (["a", 1], "non-empty list of strings"),  # mixed list
        ('["a", 1]', "non-empty list of strings"),  # mixed JSON list
    ],
)
def test_validate_ocr_solution_rejects(solution, message):
    with pytest.raises(ValueError, match=message):
        validate_ocr_solution(solution)
