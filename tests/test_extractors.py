"""Answer extractors and matchers of the evaluation protocols (`mmr1kit.extractors`), on completions written the way
models write them, against the rules of the protocols' sources (MMR1's counting regex, MMR1's `can_infer`, MathVista's
`calculate_score.py`, EasyR1's `\\boxed{}`)."""

import re

import pytest

from mmr1kit.extractors import (
    boxed,
    choice_letter,
    final_answer,
    integer_match,
    math_match,
    strict_integer,
    strip_units,
)

MMR1_REGEX = r"<answer>\s*(\d+)\s*</answer>"  # MMR1 eval/evaluate_counting.py and R1-V's SuperCLEVR script


@pytest.mark.parametrize("text, expected", [
    ("<think>I count 3.</think><answer>3</answer>", "3"),
    ("<answer>\n 12 \n</answer>", "12"),
    ("<answer>2</answer> no wait <answer>5</answer>", "2"),  # re.search: the first block, as MMR1
    ("<answer>03</answer>", "3"),
    ("<answer>3.5</answer>", None),
    ("<answer>-3</answer>", None),
    ("<answer>three</answer>", None),
    ("3", None),  # no tags: no answer (the lenient training parser would read 3)
    ("<answer>3", None),
])
def test_strict_integer_is_mmr1s_regex(text, expected):
    assert strict_integer(text) == expected
    match = re.search(MMR1_REGEX, text)
    assert (str(int(match.group(1))) if match else None) == expected


def test_boxed_takes_the_last_box_with_nested_braces():
    assert boxed(r"first \boxed{1} then \boxed{\frac{\sqrt{3}}{2}} done") == r"\frac{\sqrt{3}}{2}"
    assert boxed(r"\boxed{12") is None and boxed("no box") is None and boxed(r"\boxed{}") is None


MC = {"solution": "C", "choices": ["135°", "140°", "145°", "150°"], "question_type": "multi_choice"}


@pytest.mark.parametrize("text, expected", [
    ("<think>...</think><answer>C</answer>", "C"),
    ("<answer>(C) 145°</answer>", "C"),
    ("The answer is (B).", "B"),
    ("so it is option D", "D"),
    ("<answer>145°</answer>", "C"),  # the choice text (MMR1 can_infer_text)
    ("<answer>A or B</answer>", None),  # two letters: ambiguous, no answer
    ("<answer>150</answer>", None),  # "150" is in "150°" only: contained check is on the choice text
    ("", None),
])
def test_multiple_choice_answers_are_letters(text, expected):
    assert final_answer(text, MC) == expected


def test_mathverse_rows_without_choices_accept_only_letters():
    row = {"solution": "B", "question_type": "multi_choice"}
    assert final_answer("Therefore the answer is B.", row) == "B"
    assert final_answer("<answer>140°</answer>", row) is None
    assert choice_letter("E", []) == "E" and choice_letter("F", []) is None


@pytest.mark.parametrize("text, expected", [
    ("<answer>14 cm</answer>", "14"),
    ("So the answer is 14.", "14"),
    (r"Hence L = \boxed{14\text{ cm}}", "14"),
    ("It is about 14.3 cm when rounded down to fit", "14.3"),  # a sentence: its last number
    ("<answer>60°</answer>", "60"),
    ("<answer>$1.45</answer>", "1.45"),
    ("<answer>25%</answer>", "25"),
    (r"<answer>\frac{3}{4}</answer>", r"\frac{3}{4}"),
    ("<answer>[0, 2, 0]</answer>", "[0, 2, 0]"),
    ("<answer></answer>", None),
])
def test_free_form_values_drop_units(text, expected):
    assert final_answer(text, {"solution": "14"}) == expected


def test_letter_answer_to_a_free_form_row_with_choices_maps_to_the_choice():
    row = {"solution": r"2\sqrt{3}", "choices": [r"2\sqrt{3}", "4", "6", "8"]}  # Geometry3K: gold is the value
    assert final_answer("<answer>A</answer>", row) == r"2\sqrt{3}"
    assert math_match(final_answer("<answer>A</answer>", row), row)


def test_strip_units():
    assert strip_units("3 m^2.") == "3" and strip_units("−2 ") == "-2" and strip_units("x = 3") == "x = 3"


@pytest.mark.parametrize("answer, row, expected", [
    ("C", MC, True),
    ("c", MC, True),
    ("B", MC, False),
    # MathVista calculate_score.py: integer answers compare as str(int(float(x))), so 14.7 counts as 14
    ("14.7", {"solution": "14", "answer_type": "integer"}, True),
    ("15", {"solution": "14", "answer_type": "integer"}, False),
    # float answers are rounded to the row's precision before comparing
    ("1.23", {"solution": "1.2", "answer_type": "float", "precision": 1.0}, True),
    ("1.26", {"solution": "1.2", "answer_type": "float", "precision": 1.0}, False),
    ("[0,2,0]", {"solution": "[0, 2, 0]", "answer_type": "list"}, True),
    ("[0,2]", {"solution": "[0, 2, 0]", "answer_type": "list"}, False),
    # free form without MathVista types: numbers, then math_verify
    ("0.75", {"solution": r"\frac{3}{4}"}, True),
    (r"\sqrt{12}", {"solution": r"2\sqrt{3}"}, True),
    ("3/4", {"solution": "0.75"}, True),
    ("0.7", {"solution": "0.75"}, False),
    ("14", {"solution": "<answer> 14 </answer>"}, True),  # the r1v answer template's tags are ignored
])
def test_math_match(answer, row, expected):
    assert math_match(answer, row) is expected


def test_integer_match():
    assert integer_match("3", {"solution": "<answer> 3 </answer>"})
    assert not integer_match("3.5", {"solution": "3"}) and not integer_match("4", {"solution": "3"})
