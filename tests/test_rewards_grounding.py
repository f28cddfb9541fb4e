import math

import pytest
from PIL import Image

from mmr1kit.rewards.grounding import (
    box_iou,
    iou_reward,
    parse_solution_box,
    perpo_iou_reward,
    perpo_score,
    row_image_size,
    validate_grounding_solution,
)

GT = "[0, 0, 10, 20]"  # area 200


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),  # identical
        ((0, 0, 10, 10), (0, 0, 10, 20), 0.5),  # contained, half the area
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),  # disjoint
        ((10, 0, 0, 10), (0, 0, 10, 10), 0.0),  # invalid first box
        ((0, 0, 10, 10), (0, 10, 10, 0), 0.0),  # invalid second box
        ((5, 5, 5, 5), (5, 5, 5, 5), 0.0),  # empty boxes
        ((-1e308, -1e308, 1e308, 1e308), (0, 0, 1, 1), 0.0),  # areas overflow to inf
    ],
)
def test_box_iou(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<answer>[0, 0, 10, 20]</answer>", 1.0),  # exact
        ("<answer>[0, 0, 10, 10]</answer>", 0.5),  # half
        ("[0, 0, 10, 10]", 0.5),  # no tags: the whole completion
        ("<think>[0,0,1,1]?</think><answer>[0, 0, 10, 10]</answer>", 0.5),  # boxes in <think> are ignored
        ('<answer>{"bbox_2d": [0, 0, 10, 10], "label": "cat"}</answer>', 0.5),  # Qwen2.5-VL JSON
        ("<answer>(0,0),(10,10)</answer>", 0.5),  # corner points
        ("<answer>[10, 0, 0, 10]</answer>", 0.0),  # invalid box
        ("<answer>[50, 50, 60, 60]</answer>", 0.0),  # no overlap
        ("<answer>[nan, 0, 10, 10]</answer>", 0.0),  # NaN is not a number here
        ("<answer>[1e999, 0, 10, 10]</answer>", 0.0),  # infinite
        ("<answer>[-100, -100, 1000, 1000]</answer>", 200 / 1_210_000),  # outside the image: plain IoU
        ("<answer>no idea</answer>", 0.0),  # unparsable
        ("", 0.0),  # empty
    ],
)
def test_iou(completion, expected):
    assert iou_reward([completion], [GT]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("[0, 0, 10, 20]", 1.0),  # exact: IoU² = 1
        ("[0, 0, 10, 10]", 0.25),  # IoU 0.5 → 0.25
        ("[10, 0, 0, 10]", -0.6),  # x2 < x1 (MMR1 before b00d82c: +0.36)
        ("[0, 20, 10, 0]", -0.6),  # y2 < y1
        ("[50, 50, 60, 60]", -0.2),  # no overlap (MMR1 before b00d82c: +0.04)
        ("[10, 0, 20, 20]", -0.2),  # touching edge: no overlap
        ("[0, 0, 10]", -1.0),  # three numbers: unparsable
        ("[1e999, 0, 10, 10]", -1.0),  # infinite: unparsable
        ("__import__('os').system('true')", -1.0),  # code is never evaluated
        ("", -1.0),  # empty
        ([{"role": "assistant", "content": "[0, 0, 10, 10]"}], 0.25),  # conversational form
    ],
)
def test_perpo_iou(completion, expected):
    assert perpo_iou_reward([completion], [GT]) == [pytest.approx(expected)]


def test_perpo_score_zero_area_ground_truth():
    assert perpo_score((0, 0, 1, 1), (0, 0, 0, 0)) == -0.2  # nothing can overlap an empty box


@pytest.mark.parametrize(
    "completion, solution, kwargs, expected",
    [
        (  # Qwen2-VL tokens (0..1000) against pixel ground truth: (0, 0, 10, 10) px in a 20x40 image
            "<|box_start|>(0,0),(500,250)<|box_end|>",
            GT,
            {"image_width": [20], "image_height": [40]},
            0.5,
        ),
        (  # the same with the loader's width/height columns
            "<|box_start|>(0,0),(500,250)<|box_end|>",
            GT,
            {"width": [20], "height": [40]},
            0.5,
        ),
        (  # the same with a PIL image column
            "<|box_start|>(0,0),(500,250)<|box_end|>",
            GT,
            {"image": [Image.new("RGB", (20, 40))]},
            0.5,
        ),
        ("<|box_start|>(0,0),(500,250)<|box_end|>", GT, {}, 0.0),  # no image size: frames cannot be aligned
        (  # 1000-scale data and box tokens: same frame, no size needed
            "<|box_start|>(0,0),(500,250)<|box_end|>",
            "[0, 0, 500, 500]",
            {"box_convention": ["qwen2vl_1000"]},
            0.5,
        ),
        ("[0, 0, 0.5, 0.25]", "[0, 0, 0.5, 0.5]", {"box_convention": ["relative"]}, 0.5),  # relative data
        ("[0, 0, 0.5, 0.25]", "[0, 0, 0.5, 0.5]", {"box_convention": "relative"}, 0.5),  # a scalar column value
        ("[0, 0, 500, 250]", "[0, 0, 500, 500]", {"box_convention": ["qwen2vl_1000"]}, 0.5),  # 1000 without tokens
    ],
)
def test_iou_conventions(completion, solution, kwargs, expected):
    assert iou_reward([completion], [solution], **kwargs) == [pytest.approx(expected)]


def test_unknown_convention_is_an_error():
    with pytest.raises(ValueError, match="box_convention"):
        iou_reward(["[0, 0, 1, 1]"], [GT], box_convention=["normalized"])


@pytest.mark.parametrize(
    "solution, expected",
    [
        ("[0, 0, 10, 20]", (0, 0, 10, 20)),  # string list
        ([0, 0, 10, 20], (0, 0, 10, 20)),  # list
        ((1.5, 2, 3, 4), (1.5, 2, 3, 4)),  # tuple of floats
        ("<answer> [0, 0, 10, 20] </answer>", (0, 0, 10, 20)),  # wrapped by the r1v answer template
        ('{"bbox_2d": [0, 0, 10, 20], "label": "cat"}', (0, 0, 10, 20)),  # bbox_2d JSON
        ('[{"bbox_2d": [0, 0, 10, 20]}]', (0, 0, 10, 20)),  # a one-element list of bbox_2d
        ({"bbox": [0, 0, 10, 20]}, (0, 0, 10, 20)),  # a dict with "bbox"
        ("[5, 5, 5, 5]", (5, 5, 5, 5)),  # a degenerate but ordered box is valid
    ],
)
def test_parse_solution_box(solution, expected):
    assert parse_solution_box(solution) == expected


@pytest.mark.parametrize(
    "solution, message",
    [
        ("[0, 0, 10]", "4 finite numbers"),  # three numbers
        ("[0, 0, 10, 20, 30]", "4 finite numbers"),  # five numbers (MMR1 ignored extras)
        ("[0, 0, NaN, 20]", "4 finite numbers"),  # NaN
        ("[0, 0, Infinity, 20]", "4 finite numbers"),  # infinity
        ('["0", "0", "10", "20"]', "4 finite numbers"),  # strings
        ("[10, 0, 0, 20]", "x1 <= x2"),  # x2 < x1
        ("[0, 20, 10, 0]", "y1 <= y2"),  # y2 < y1
        ("cat", "4 finite numbers"),  # not a box
        (None, "4 finite numbers"),  # missing
    ],
)
def test_validate_grounding_solution_rejects(solution, message):
    with pytest.raises(ValueError, match=message):
        validate_grounding_solution(solution)


@pytest.mark.parametrize("solution", ["[0, 0, 10]", "[10, 0, 0, 20]", "cat"])
def test_malformed_solution_scores_zero(solution):
    assert iou_reward(["[0, 0, 1, 1]"], [solution]) == [0.0]
    assert perpo_iou_reward(["[0, 0, 1, 1]"], [solution]) == [0.0]


def test_row_image_size_and_names():
    assert row_image_size({"image_width": [3, 4], "image_height": [5, 6]}, 1) == (4, 6)
    assert row_image_size({"image": [None]}, 0) is None
    assert iou_reward.__name__ == "iou" and perpo_iou_reward.__name__ == "perpo_iou"
    assert all(math.isfinite(r) for r in perpo_iou_reward(["[0,0,1,1]"] * 3, [GT] * 3))
