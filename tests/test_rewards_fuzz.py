"""Totality of every reward in `REWARDS`: any completion gives a finite float in the documented range.

Also the registry itself: names, MMR1 aliases, `get_reward_funcs`, solution validators and picklability.
"""

import json
import math
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmr1kit.rewards import (
    ALIASES,
    REWARD_RANGES,
    REWARDS,
    SOLUTION_VALIDATORS,
    get_reward_funcs,
    validate_solution,
)
from mmr1kit.rewards.parsing import BOX_CONVENTIONS

DETECTION_GT = json.dumps([{"bbox_2d": [0, 0, 10, 10], "label": "cat"}, {"bbox_2d": [5, 5, 40, 40], "label": "dog"}])
# Valid and malformed solutions per reward; every reward in REWARDS must have an entry.
SOLUTIONS = {
    "format": ["x", None],
    "answer_format": ["x", None],
    "accuracy": ["3", "<answer> 3 </answer>", 3, "red", "\\frac{1}{2}", "", "nan"],
    "count_accuracy": ["3", "0", "<answer> 12 </answer>", "many", ""],
    "count_accuracy_partial": ["3", "0", "<answer> 12 </answer>", "many", "1e308"],
    "iou": ["[0, 0, 10, 20]", [5, 5, 5, 5], '{"bbox_2d": [1, 2, 3, 4]}', "[10, 0, 0, 5]", "junk", "[0, 0, NaN, 1]"],
    "perpo_iou": ["[0, 0, 10, 20]", [5, 5, 5, 5], '{"bbox_2d": [1, 2, 3, 4]}', "[10, 0, 0, 5]", "junk"],
    "ocr": ["hello world", "", '["a", "b"]', ["x", "y"], 12],
    "anls": ["hello world", "", '["a", "b"]', ["x", "y"], 12],
    "detection": [DETECTION_GT, "[]", "junk", '[{"bbox_2d": [0, 0, 1, NaN]}]'],
    "detection_iou": [DETECTION_GT, "[]", "junk", '[{"bbox_2d": [0, 0, 1, NaN]}]'],
    "math": ["0.5", "x^2+1", "", "Paris", "1" * 2000],
    "soft_overlong": ["x", None],  # reads the completion's token ids only
}

NUMBERS = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "-5", "0", "3", "2.5", "1e-300"]),
    st.sampled_from(["9" * 400, "1,000", "-0", ".5", "5.", "twenty-one", "Infinity"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**6).map(str),
)
PLAIN_BOXES = st.lists(NUMBERS, min_size=3, max_size=5).map(lambda xs: "[" + ", ".join(xs) + "]")
QWEN2VL_BOXES = st.lists(NUMBERS, min_size=4, max_size=4).map(
    lambda v: f"<|object_ref_start|>cat<|object_ref_end|><|box_start|>({v[0]},{v[1]}),({v[2]},{v[3]})<|box_end|>"
)
JSON_BOXES = st.lists(
    st.tuples(st.lists(NUMBERS, min_size=4, max_size=4), st.sampled_from(["cat", "dog", "", "Cat ", "7"])), max_size=4
).map(lambda items: "[" + ", ".join(f'{{"bbox_2d": [{", ".join(b)}], "label": "{lab}"}}' for b, lab in items) + "]")
FRAGMENTS = st.sampled_from(
    ["<think>", "</think>", "<answer>", "</answer>", "<|im_end|>", "<|box_start|>", "<|box_end|>", "\n", " ", "{", "}"]
    + ["[", "]", "(", ")", ",", "$", "\\frac{", "\\boxed{", "```json", "x^2", "=", "'", '"', "\\", "\x00"]
)
CRAFTED = st.lists(
    st.one_of(FRAGMENTS, NUMBERS, PLAIN_BOXES, QWEN2VL_BOXES, JSON_BOXES, st.text(max_size=5)), max_size=12
).map("".join)
SIZES = st.sampled_from([None, 0, -5, math.nan, math.inf, 1, 640, 1e308, "640"])


def check(name, completions, solutions, **kwargs):
    rewards = REWARDS[name](completions, solutions, **kwargs)
    low, high = REWARD_RANGES[name]
    assert len(rewards) == len(completions)
    for reward in rewards:
        assert isinstance(reward, float) and math.isfinite(reward) and low <= reward <= high, (name, reward)


def test_every_reward_is_fuzzed_and_has_a_range():
    assert set(SOLUTIONS) == set(REWARDS) == set(REWARD_RANGES)


@pytest.mark.parametrize("name", sorted(REWARDS))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")), CRAFTED),
    conversational=st.booleans(),
    data=st.data(),
)
def test_any_completion_gives_a_finite_reward_in_range(name, text, conversational, data):
    completion = [{"role": "assistant", "content": text}] if conversational else text
    solution = data.draw(st.sampled_from(SOLUTIONS[name]), label="solution")
    kwargs = {
        "box_convention": [data.draw(st.sampled_from(BOX_CONVENTIONS), label="box_convention")],
        "image_width": [data.draw(SIZES, label="width")],
        "image_height": [data.draw(SIZES, label="height")],
        "completion_ids": [list(range(data.draw(st.integers(0, 40), label="tokens")))],  # as TRL passes them
    }
    check(name, [completion], [solution], **kwargs)


HUGE = [
    "x" * 300_000,  # long prose
    "<answer>" * 40_000,  # many unclosed tags
    "<think>" * 20_000 + "</answer>" * 20_000,  # tags in the wrong order
    "[1,2,3,4]" * 30_000,  # many boxes
    '[{"bbox_2d": [1, 2, 30, 40], "label": "cat"}]' * 5_000,  # many JSON boxes
    '{"bbox_2d": [' + "[" * 20_000 + "]" * 20_000 + "]}",  # deep nesting inside a box object
    "{" * 100_000,  # unbalanced braces
    "(" * 100_000 + "1,2" + ")" * 100_000,  # deep parentheses
    "<|box_start|>" * 20_000 + "<|object_ref_start|>" * 20_000,  # dangling Qwen tokens
    "9" * 200_000,  # one enormous number
    "1," * 100_000,  # an endless list
    "<answer>" + "\\frac{" * 500 + "</answer>",  # pathological LaTeX under the length limit
]


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_huge_completions(name):
    check(name, HUGE, [SOLUTIONS[name][0]] * len(HUGE), completion_ids=[[7] * len(h) for h in HUGE])


def test_batches_keep_order():
    conversational = [{"role": "assistant", "content": "<answer>3</answer>"}]
    completions = ["<answer>3</answer>", "<answer>4</answer>", conversational]
    assert REWARDS["accuracy"](completions, ["3", "3", "3"]) == [1.0, 0.0, 1.0]


def test_names_match_registry_keys():
    # TRL logs each function as rewards/<__name__>/mean.
    assert {name: f.__name__ for name, f in REWARDS.items()} == {name: name for name in REWARDS}


def test_rewards_pickle():
    # TRL's async GRPO workers send reward functions to a child process.
    for name, reward in REWARDS.items():
        clone = pickle.loads(pickle.dumps(reward))
        args = ["<answer>3</answer>"], [SOLUTIONS[name][0]]
        kwargs = {"completion_ids": [[1, 2, 3]]}
        assert clone.__name__ == name and clone(*args, **kwargs) == reward(*args, **kwargs)


@pytest.mark.parametrize(
    "names, expected",
    [
        (["format", "accuracy"], ["format", "accuracy"]),  # our names, order kept
        (["r1v_acc", "r1v_format"], ["accuracy", "format"]),  # MMR1's counting registry names
        (["perpo_reward", "perpo_ocr_edit_distance_reward"], ["perpo_iou", "ocr"]),  # MMR1's grounding and OCR
        ([], []),  # nothing
    ],
)
def test_get_reward_funcs(names, expected):
    assert [f.__name__ for f in get_reward_funcs(names)] == expected


@pytest.mark.parametrize("names", [["yjs"], ["format", "accuracy_reward"], ["Format"]])
def test_get_reward_funcs_rejects_unknown_names(names):
    with pytest.raises(ValueError, match="valid names are format, answer_format") as error:
        get_reward_funcs(names)
    assert "r1v_acc" in str(error.value)


def test_aliases_point_to_rewards():
    assert set(ALIASES.values()) <= set(REWARDS)


@pytest.mark.parametrize(
    "task, solution",
    [
        ("counting", "3"),  # a count
        ("grounding", "[0, 0, 10, 20]"),  # a box
        ("ocr", "text"),  # a string
        ("detection", DETECTION_GT),  # labeled boxes
        ("math", "\\frac{1}{2}"),  # an expression
    ],
)
def test_validate_solution(task, solution):
    validate_solution(task, solution)


@pytest.mark.parametrize(
    "task, solution, message",
    [
        ("counting", "-2", "non-negative integer"),  # negative count
        ("grounding", "[10, 0, 0, 20]", "x1 <= x2"),  # inverted box
        ("ocr", 3, "string"),  # not text
        ("detection", "[1, 2, 3, 4]", "object 0"),  # a bare box instead of objects
        ("math", "", "empty"),  # empty
        ("captioning", "x", "counting, grounding, ocr, detection, math"),  # no validator for the task
    ],
)
def test_validate_solution_rejects(task, solution, message):
    with pytest.raises(ValueError, match=message):
        validate_solution(task, solution)


def test_solution_validators_cover_the_tasks():
    assert list(SOLUTION_VALIDATORS) == ["counting", "grounding", "ocr", "detection", "math"]
