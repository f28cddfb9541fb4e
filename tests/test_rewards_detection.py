import json
import pickle

import numpy as np
import pytest

from mmr1kit.rewards.detection import (
    MAX_PRED_BOXES,
    detection_iou_reward,
    detection_reward,
    iou_matrix,
    make_detection_reward,
    match_detections,
    parse_solution_boxes,
    validate_detection_solution,
)


def objects(*items):
    """A JSON detection answer/solution from `(label, x1, y1, x2, y2)` tuples."""
    return json.dumps([{"bbox_2d": list(box), "label": label} for label, *box in items])


CAT, DOG = ("cat", 0, 0, 10, 10), ("dog", 20, 20, 30, 30)
GT = objects(CAT, DOG)


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        (objects(CAT, DOG), GT, 1.0),  # perfect
        (objects(DOG, CAT), GT, 1.0),  # order does not matter
        (objects(CAT), GT, 2 / 3),  # one miss: P=1, R=1/2
        (objects(CAT, DOG, ("bird", 40, 40, 50, 50)), GT, 0.8),  # one false positive: 2*2/(3+2)
        (objects(("Cat ", 0, 0, 10, 10)), objects(CAT), 1.0),  # labels case- and whitespace-insensitive
        (objects(("dog", 0, 0, 10, 10)), objects(CAT), 0.0),  # right box, wrong label
        (objects(("cat", 0, 0, 10, 4)), objects(CAT), 0.0),  # IoU 0.4 < 0.5
        (objects(("cat", 0, 0, 10, 5)), objects(CAT), 1.0),  # IoU 0.5 >= 0.5
        (objects(CAT, CAT), objects(CAT), 2 / 3),  # a duplicate matches only once
        (objects(("cat", 10, 10, 0, 0)), objects(CAT), 0.0),  # invalid predicted box matches nothing
        ("[]", "[]", 1.0),  # nothing to detect, nothing predicted
        ("no objects", "[]", 1.0),  # unparsable answer with nothing to detect
        (objects(CAT), "[]", 0.0),  # false positive on an empty image
        ("", GT, 0.0),  # empty completion
        (f"<think>look</think><answer>{objects(CAT, DOG)}</answer>", GT, 1.0),  # inside <answer>
        ("[0, 0, 10, 10]", objects(("", 0, 0, 10, 10)), 1.0),  # an unlabeled box matches an empty label
        ("[0, 0, 10, 10]", objects(CAT), 0.0),  # an unlabeled box cannot match a labeled one
        ('[{"bbox_2d": [NaN, 0, 10, 10], "label": "cat"}]', objects(CAT), 0.0),  # NaN box dropped
        ('[{"bbox_2d": [0, 0, 10, 10], "label": "cat"}, {"bbox_2d": "x"}]', objects(CAT), 1.0),  # junk entry skipped
    ],
)
def test_detection_f1(completion, solution, expected):
    assert detection_reward([completion], [solution]) == [pytest.approx(expected)]


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        (objects(CAT, DOG), GT, 1.0),  # perfect
        (objects(("cat", 0, 0, 10, 5), DOG), GT, 0.75),  # (0.5 + 1) / 2
        (objects(CAT), GT, 0.5),  # 1 / max(1, 2)
        (objects(CAT, DOG, ("bird", 40, 40, 50, 50)), GT, 2 / 3),  # 2 / max(3, 2)
        ("[]", "[]", 1.0),  # both empty
    ],
)
def test_detection_mean_iou(completion, solution, expected):
    assert detection_iou_reward([completion], [solution]) == [pytest.approx(expected)]


def test_matching_maximizes_the_number_of_matches_first():
    # IoUs: A-g1 1.0, A-g2 0.33, B-g1 0.35, B-g2 0.12. At threshold 0.3, maximizing the summed IoU would take A-g1
    # alone (1.0 > 0.33 + 0.35) and leave B unmatched; the count-first weighting takes A-g2 and B-g1.
    pred = [((0, 0, 10, 10), "a"), ((0, 0, 10, 3.5), "a")]
    gt = [((0, 0, 10, 10), "a"), ((0, 0, 10, 30), "a")]
    assert sorted(match_detections(pred, gt, 0.3)) == pytest.approx([1 / 3, 0.35])
    assert match_detections(pred, gt, 0.5) == [1.0]


def test_qwen2vl_tokens_against_pixel_ground_truth():
    completion = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(0,0),(500,500)<|box_end|>"
    assert detection_reward([completion], [objects(CAT)], image_width=[20], image_height=[20]) == [1.0]
    assert detection_reward([completion], [objects(CAT)]) == [0.0]  # no image size: nothing can match


def test_runaway_answers_score_zero():
    completion = objects(*[CAT] * (MAX_PRED_BOXES + 1))
    assert detection_reward([completion], [objects(CAT)]) == [0.0]


def test_iou_matrix_cleans_hostile_values():
    pred = np.array([[0, 0, 10, 10], [-1e308, -1e308, 1e308, 1e308], [10, 10, 0, 0]], dtype=float)
    ious = iou_matrix(pred, np.array([[0, 0, 10, 10]], dtype=float))
    assert ious.tolist() == [[1.0], [0.0], [0.0]]


@pytest.mark.parametrize(
    "threshold, mode, name",
    [
        (0.5, "f1", "detection"),  # the default
        (0.5, "mean_iou", "detection_iou"),  # the IoU-weighted variant
        (0.75, "f1", "detection_0.75"),  # a stricter threshold gets its own metric name
    ],
)
def test_factory_names_and_pickling(threshold, mode, name):
    reward = make_detection_reward(threshold, mode)
    assert reward.__name__ == name
    assert pickle.loads(pickle.dumps(reward))([GT], [GT]) == [1.0]


@pytest.mark.parametrize("threshold, mode", [(0, "f1"), (1.5, "f1"), (float("nan"), "f1"), (0.5, "map")])
def test_factory_rejects_bad_arguments(threshold, mode):
    with pytest.raises(ValueError):
        make_detection_reward(threshold, mode)


@pytest.mark.parametrize(
    "solution, expected",
    [
        (GT, [((0, 0, 10, 10), "cat"), ((20, 20, 30, 30), "dog")]),  # JSON list
        ("[]", []),  # nothing to detect
        ([{"bbox": [0, 0, 1, 1]}], [((0, 0, 1, 1), None)]),  # a Python list, "bbox", no label
        ('{"bbox_2d": [0, 0, 1, 1], "label": "x"}', [((0, 0, 1, 1), "x")]),  # a single object
        (f"<answer>{objects(CAT)}</answer>", [((0, 0, 10, 10), "cat")]),  # wrapped in <answer>
    ],
)
def test_parse_solution_boxes(solution, expected):
    assert parse_solution_boxes(solution) == expected


@pytest.mark.parametrize(
    "solution, message",
    [
        ("cat", "JSON list"),  # not a list
        ('[{"label": "cat"}]', "object 0"),  # no box
        ('[{"bbox_2d": [0, 0, 1], "label": "cat"}]', "object 0"),  # three numbers
        ('[{"bbox_2d": [1, 0, 0, 1], "label": "cat"}]', "x1 <= x2"),  # inverted box
        ('[{"bbox_2d": [0, 0, 1, NaN], "label": "cat"}]', "finite"),  # NaN
        ('[{"bbox_2d": [0, 0, 1, 1], "label": 3}]', "string label"),  # non-string label
        ("[[0, 0, 1, 1]]", "object 0"),  # a bare list instead of an object
    ],
)
def test_validate_detection_solution_rejects(solution, message):
    with pytest.raises(ValueError, match=message):
        validate_detection_solution(solution)
    assert detection_reward([GT], [solution]) == [0.0]  # the reward scores a malformed row 0
