import threading

import pytest

from mmr1kit.rewards.math import MAX_ANSWER_CHARS, math_equal, math_reward, parse_math, validate_math_solution


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        ("<answer>\\frac{1}{2}</answer>", "0.5", 1.0),  # fraction vs decimal
        ("<answer>0.5</answer>", "\\frac{1}{2}", 1.0),  # the other way round
        ("<answer>2\\sqrt{2}</answer>", "\\sqrt{8}", 1.0),  # bare LaTeX is wrapped in $...$ (else parsed as 2)
        ("<answer>1+x^2</answer>", "x^2+1", 1.0),  # symbolic equality
        ("<answer>$\\frac{2}{4}$</answer>", "<answer> 1/2 </answer>", 1.0),  # delimiters, wrapped solution
        ("<answer>\\boxed{3}</answer>", "3", 1.0),  # boxed
        ("<answer>\\{1, 2\\}</answer>", "\\{2, 1\\}", 1.0),  # sets
        ("<answer>x = 3</answer>", "3", 1.0),  # an assignment to the answer
        ("<answer>1/3</answer>", "0.5", 0.0),  # different numbers
        ("<answer>x^2</answer>", "x^3", 0.0),  # different expressions
        ("<think>the answer is 1/2</think><answer>1/3</answer>", "0.5", 0.0),  # only <answer> is parsed
        ("<answer>Pairs</answer>", "Paris", 0.0),  # words are not wrapped (P*a*i*r*s would equal P*a*r*i*s)
        ("<answer>" + "1" * (MAX_ANSWER_CHARS + 1) + "</answer>", "1", 0.0),  # over the length limit
        ("<answer></answer>", "0", 0.0),  # empty answer
        ("<answer>\\frac{1}{</answer>", "0.5", 0.0),  # malformed LaTeX
        ("<answer>__import__('os')</answer>", "0", 0.0),  # never evaluated
        ([{"role": "assistant", "content": "<answer>0.5</answer>"}], "1/2", 1.0),  # conversational form
        ("<answer>7</answer>", 7, 1.0),  # a numeric solution
    ],
)
def test_math(completion, solution, expected):
    assert math_reward([completion], [solution]) == [expected]


def test_math_outside_the_main_thread():
    # math_verify's signal-based timeouts only work in the main thread; elsewhere they are switched off.
    results = []
    thread = threading.Thread(target=lambda: results.append(math_equal("0.5", "\\frac{1}{2}")))
    thread.start()
    thread.join()
    assert results == [True]


@pytest.mark.parametrize(
    "text, parses",
    [
        ("\\frac{1}{2}", True),  # LaTeX
        ("x^2+1", True),  # wrapped expression
        ("Paris", False),  # a word
        ("", False),  # empty
        ("1" * (MAX_ANSWER_CHARS + 1), False),  # too long
    ],
)
def test_parse_math(text, parses):
    assert bool(parse_math(text)) is parses


@pytest.mark.parametrize("solution", ["3", 3, "\\frac{1}{2}", "<answer> x^2 + 1 </answer>", "(0, 1]"])
def test_validate_math_solution_accepts(solution):
    validate_math_solution(solution)


@pytest.mark.parametrize(
    "solution, message",
    [
        ("", "empty"),  # empty
        ("<answer>  </answer>", "empty"),  # empty inside tags
        ("x" * (MAX_ANSWER_CHARS + 1), "more than"),  # too long
        ("the capital of France", "cannot parse"),  # not mathematics
        (None, "string or a number"),  # missing
        (True, "string or a number"),  # a bool
    ],
)
def test_validate_math_solution_rejects(solution, message):
    with pytest.raises(ValueError, match=message):
        validate_math_solution(solution)


def test_name():
    assert math_reward.__name__ == "math"
