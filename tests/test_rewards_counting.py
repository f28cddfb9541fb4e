import pickle

import pytest

from mmr1kit.rewards.counting import (
    accuracy_reward,
    count_accuracy_partial_reward,
    count_accuracy_reward,
    make_count_accuracy,
    validate_counting_solution,
)


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("<think>1+2</think><answer>3</answer>", "<answer> 3 </answer>", 1.0),  # MMR1's r1v answer template
        ("<answer>3</answer>", 3, 1.0),  # an integer solution
        ("<answer>3.0</answer>", "3", 1.0),  # numbers compared as numbers
        ("<answer>1,000</answer>", "1000", 1.0),  # thousands separator
        ("<answer>three</answer>", "3", 1.0),  # number word
        ("<answer>0.1000001</answer>", "0.1", 1.0),  # within the 1e-6 relative tolerance
        ("<answer>0.1001</answer>", "0.1", 0.0),  # outside the tolerance
        ("<answer>4</answer>", "3", 0.0),  # wrong number
        ("<think>it is 3</think><answer>4</answer>", "3", 0.0),  # a number in <think> does not count (MMR1: 1.0)
        ("<answer>\nRed\n</answer>", "red", 1.0),  # multi-line answer, case-insensitive string match
        ("<answer>New   York.</answer>", "new york", 1.0),  # whitespace and trailing period
        ("<answer>Paris</answer>", "London", 0.0),  # different strings
        ("<answer>Pairs</answer>", "Paris", 0.0),  # anagram: not equal via math_verify's symbol products
        ("<answer>\\frac{1}{2}</answer>", "0.5", 1.0),  # math_verify fallback
        ("<answer>3 apples</answer>", "3", 1.0),  # math_verify finds the number in a non-numeric answer
        ("3", "3", 1.0),  # no tags: the whole completion
        ([{"role": "assistant", "content": "<answer>3</answer>"}], "3", 1.0),  # conversational form
        ("<answer></answer>", "", 0.0),  # empty answer never matches
        ("<answer>nan</answer>", "nan", 1.0),  # "nan" is a string here, not a number
        ("", "3", 0.0),  # empty completion
    ],
)
def test_accuracy(completion, solution, expected):
    assert accuracy_reward([completion], [solution]) == [expected]


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("<answer>3</answer>", "3", 1.0),  # exact
        ("<answer> 3 </answer>", "<answer> 3 </answer>", 1.0),  # both wrapped
        ("<answer>3.0</answer>", 3, 1.0),  # float form of the count
        ("<answer>five</answer>", "5", 1.0),  # number word
        ("<answer>4</answer>", "3", 0.0),  # off by one
        ("<answer>3.5</answer>", "3", 0.0),  # not the count
        ("<answer>3 circles</answer>", "3", 0.0),  # not exactly one number
        ("<answer>3, 4</answer>", "3", 0.0),  # two numbers
        ("<answer>inf</answer>", "3", 0.0),  # infinity
        ("<answer>1e999</answer>", "3", 0.0),  # overflow
        ("", "3", 0.0),  # empty
        ("<answer>3</answer>", "many", 0.0),  # malformed solution
    ],
)
def test_count_accuracy(completion, solution, expected):
    assert count_accuracy_reward([completion], [solution]) == [expected]


@pytest.mark.parametrize(
    "scale, completion, solution, expected",
    [
        (None, "<answer>10</answer>", "10", 1.0),  # exact
        (None, "<answer>8</answer>", "10", 0.8),  # relative error 2/10
        (None, "<answer>12</answer>", "10", 0.8),  # symmetric
        (None, "<answer>30</answer>", "10", 0.0),  # clipped at 0
        (None, "<answer>1</answer>", "0", 0.0),  # gt 0: scale max(gt, 1) = 1
        (4.0, "<answer>9</answer>", "10", 0.75),  # fixed scale
        (4.0, "<answer>-1e308</answer>", "10", 0.0),  # huge distance stays finite
        (None, "<answer>?</answer>", "10", 0.0),  # unparsable
    ],
)
def test_count_accuracy_partial(scale, completion, solution, expected):
    reward = make_count_accuracy(partial_credit=True, scale=scale)
    assert reward([completion], [solution]) == [pytest.approx(expected)]


def test_count_factory_names_defaults_and_pickling():
    assert count_accuracy_reward.__name__ == "count_accuracy"
    assert count_accuracy_partial_reward.__name__ == "count_accuracy_partial"
    assert count_accuracy_partial_reward(["<answer>9</answer>"], ["10"]) == [pytest.approx(0.9)]
    assert accuracy_reward.__name__ == "accuracy"
    clone = pickle.loads(pickle.dumps(count_accuracy_partial_reward))  # TRL's async workers pickle rewards
    assert clone(["<answer>9</answer>"], ["10"]) == [pytest.approx(0.9)]
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            make_count_accuracy(partial_credit=True, scale=bad)


@pytest.mark.parametrize(
    "solution",
    [
        "3",  # a string count
        3,  # an int
        "<answer> 0 </answer>",  # wrapped zero
        "12.0",  # an integral float
    ],
)
def test_validate_counting_solution_accepts(solution):
    validate_counting_solution(solution)


@pytest.mark.parametrize(
    "solution, message",
    [
        ("-1", "non-negative integer"),  # negative
        ("2.5", "non-negative integer"),  # fractional
        ("three apples", "non-negative integer"),  # not a number
        ("", "non-negative integer"),  # empty
        ([3], "string or a number"),  # wrong type
        (True, "string or a number"),  # a bool is not a count
    ],
)
def test_validate_counting_solution_rejects(solution, message):
    with pytest.raises(ValueError, match=message):
        validate_counting_solution(solution)


def test_rewards_need_one_solution_per_completion():
    with pytest.raises(ValueError):
        accuracy_reward(["<answer>1</answer>", "<answer>2</answer>"], ["1"])
