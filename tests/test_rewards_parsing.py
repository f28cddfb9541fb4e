import doctest
import importlib
import math
import re

import pytest

from mmr1kit.rewards.parsing import (
    BOX_CONVENTIONS,
    LabeledBox,
    completion_text,
    extract_answer,
    load_literal,
    parse_box,
    parse_boxes,
    parse_number,
    to_pixels,
)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("plain", "plain"),  # a standard-format completion
        ([{"role": "assistant", "content": "hi"}], "hi"),  # TRL's conversational form
        ([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "ab"),
        ([{"role": "assistant", "content": "x"}, {"role": "assistant", "content": "last"}], "last"),  # last message
        ("<answer>3</answer><|im_end|>", "<answer>3</answer>"),  # Qwen end token removed
        ("a<|endoftext|>", "a"),  # the other end token
        ("<|box_start|>(1,2),(3,4)<|box_end|>", "<|box_start|>(1,2),(3,4)<|box_end|>"),  # box tokens are kept
        ([], ""),  # an empty conversation
        ([{"role": "assistant", "content": None}], ""),  # a message without content
        ([{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": 5}]}], ""),  # no text parts
        (None, ""),  # not a completion at all
    ],
)
def test_completion_text(completion, expected):
    assert completion_text(completion) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer>3</answer>", "3"),  # the usual layout
        ("<answer>\n 3 \n</answer>", "3"),  # multi-line, stripped (DOTALL)
        ("<answer>1</answer> then <answer>2</answer>", "2"),  # the last block wins
        ("<answer>a<answer>b</answer>", "b"),  # nested opening: the opening closest to the closing
        ("<answer>1</answer> <answer>2", "1"),  # a truncated second block: the last complete one
        ("<think>x</think><answer> 7", "7"),  # only an unclosed <answer>: the rest
        ("<think>x</think> 7 </answer>", "7"),  # only a closing tag: after </think>
        ("7</answer>", "7"),  # only a closing tag, no think block
        ("  just text  ", "just text"),  # no tags: the whole text, stripped
        ("", ""),  # empty
        ("<answer></answer>", ""),  # empty block
        ("</answer><answer>5", "5"),  # closing before opening: the unclosed opening
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("42", 42.0),  # integer
        (" -3 ", -3.0),  # sign and whitespace
        ("+3", 3.0),  # explicit plus
        ("3.5", 3.5),  # decimal
        (".5", 0.5),  # no leading digit
        ("3.", 3.0),  # trailing decimal point
        ("1e3", 1000.0),  # scientific notation
        ("1,234", 1234.0),  # thousands separator
        ("1,234,567.5", 1234567.5),  # several separators and decimals
        ("\u22123", -3.0),  # Unicode minus
        ("7.", 7.0),  # sentence period
        ("seven", 7.0),  # number word
        ("Twenty-one", 21.0),  # hyphenated, capitalised
        ("one hundred and five", 105.0),  # British "and"
        ("two thousand three hundred", 2300.0),  # scales
        ("minus five", -5.0),  # negative word
        ("zero", 0.0),  # zero alone
        ("nineteen.", 19.0),  # word with a period
        ("1,23", None),  # separator not in groups of three
        ("3 apples", None),  # more than a number
        ("two three", None),  # two units in a row
        ("twenty zero", None),  # zero inside a compound
        ("one million two billion", None),  # scales out of order
        ("hundred", None),  # a scale without a multiplier
        ("nan", None),  # NaN is rejected
        ("inf", None),  # infinity is rejected
        ("1e999", None),  # overflows to infinity
        ("9" * 400, None),  # overflows to infinity
        ("", None),  # empty
        ("٣", None),  # non-ASCII digits are not numbers here
        ("0x10", None),  # no hexadecimal
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    "text, convention, expected",
    [
        ("[10, 20, 30, 40]", "pixel", [LabeledBox((10, 20, 30, 40), None, "pixel")]),  # plain list
        ("The box is [1.5, 2, 3, 4.25].", "relative", [LabeledBox((1.5, 2, 3, 4.25), None, "relative")]),  # prose
        ("(1, 2, 3, 4)", "pixel", [LabeledBox((1, 2, 3, 4), None, "pixel")]),  # a 4-tuple
        ("(1,2),(3,4)", "pixel", [LabeledBox((1, 2, 3, 4), None, "pixel")]),  # two corner points
        (  # Qwen2-VL tokens force the 0..1000 convention and carry the label
            "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>",
            "pixel",
            [LabeledBox((100, 200, 300, 400), "the cat", "qwen2vl_1000")],
        ),
        ("<|box_start|>(1,2),(3,4)<|box_end|>", "relative", [LabeledBox((1, 2, 3, 4), None, "qwen2vl_1000")]),
        (  # Qwen2.5-VL JSON list in a fence
            '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox_2d": [5, 6, 7, 8], "label": "dog"}]\n```',
            "pixel",
            [LabeledBox((1, 2, 3, 4), "cat", "pixel"), LabeledBox((5, 6, 7, 8), "dog", "pixel")],
        ),
        ("{'bbox_2d': [1, 2, 3, 4], 'label': 7}", "pixel", [LabeledBox((1, 2, 3, 4), "7", "pixel")]),  # quotes, int
        ('{"bbox": [1, 2, 3, 4]}', "pixel", [LabeledBox((1, 2, 3, 4), None, "pixel")]),  # "bbox" key, no label
        ("[30, 40, 10, 20]", "pixel", [LabeledBox((30, 40, 10, 20), None, "pixel")]),  # inverted box kept as written
        ("[-5, -5, 1e2, 3]", "pixel", [LabeledBox((-5, -5, 100, 3), None, "pixel")]),  # negatives, exponent
        ("[1e999, 0, 1, 1]", "pixel", []),  # infinite coordinate dropped
        ('{"bbox_2d": [NaN, 0, 1, 1]}', "pixel", []),  # JSON NaN dropped
        ('{"bbox_2d": [1, 2, 3]}', "pixel", []),  # three numbers
        ('{"bbox_2d": [true, 0, 1, 1]}', "pixel", []),  # booleans are not coordinates
        ("[1, 2, 3]", "pixel", []),  # three numbers
        ("no box here", "pixel", []),  # nothing
        ("", "pixel", []),  # empty
    ],
)
def test_parse_boxes(text, convention, expected):
    assert parse_boxes(text, convention) == expected


def test_parse_box_takes_the_first_and_limit_is_lazy():
    assert parse_box("[1, 2, 3, 4] and [5, 6, 7, 8]") == LabeledBox((1, 2, 3, 4), None, "pixel")
    assert parse_box("nothing") is None
    assert len(parse_boxes("[1,2,3,4]" * 10, limit=3)) == 3


def test_parse_boxes_rejects_unknown_convention():
    with pytest.raises(ValueError, match="pixel, qwen2vl_1000, relative"):
        parse_boxes("[1, 2, 3, 4]", "normalized")


@pytest.mark.parametrize(
    "box, convention, width, height, expected",
    [
        ((1, 2, 3, 4), "pixel", None, None, (1, 2, 3, 4)),  # pixels need no size
        ((100, 200, 500, 1000), "qwen2vl_1000", 640, 480, (64, 96, 320, 480)),  # 0..1000 → pixels
        ((0.5, 0.25, 1, 1), "relative", 200, 100, (100, 25, 200, 100)),  # 0..1 → pixels
    ],
)
def test_to_pixels(box, convention, width, height, expected):
    assert to_pixels(box, convention, width, height) == pytest.approx(expected)


@pytest.mark.parametrize(
    "convention, width, height",
    [
        ("relative", None, None),  # no size
        ("qwen2vl_1000", 0, 100),  # zero width
        ("qwen2vl_1000", 100, math.nan),  # NaN height
        ("qwen2vl_1000", "640", "480"),  # strings are not sizes
        ("absolute", 100, 100),  # unknown convention
    ],
)
def test_to_pixels_errors(convention, width, height):
    with pytest.raises(ValueError):
        to_pixels((0, 0, 1, 1), convention, width, height)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[1, 2]", [1, 2]),  # JSON
        ("{'a': (1, 2)}", {"a": (1, 2)}),  # Python literal
        ("__import__('os')", None),  # code is never evaluated
        ("[" * 10_000, None),  # malformed deep nesting
        ("[" * 10_000 + "]" * 10_000, None),  # well-formed but too deep for the parsers
    ],
)
def test_load_literal(text, expected):
    assert load_literal(text) == expected


def test_box_conventions():
    assert BOX_CONVENTIONS == ("pixel", "qwen2vl_1000", "relative")


class _FencedDocTestParser(doctest.DocTestParser):
    """Docstring examples are written TRL-style inside ```python fences; drop the fence lines."""

    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"(?m)^\s*```(?:python)?\s*$", "", string), name)


@pytest.mark.parametrize("module", ["parsing", "format", "counting", "grounding", "ocr", "detection", "math"])
def test_docstring_examples(module):
    finder = doctest.DocTestFinder(parser=_FencedDocTestParser())
    runner = doctest.DocTestRunner()
    for test in finder.find(importlib.import_module(f"mmr1kit.rewards.{module}")):
        runner.run(test)
    assert runner.failures == 0 and runner.tries > 0
