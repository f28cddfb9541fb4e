"""The prompt templates that mmr1kit calls MMR1's are MMR1's, character for character.

The expected strings are copied from MMR1's `src/open_r1/constants.py` (github.com/linkangheng/MMR1) in MMR1's own
layout, adjacent string literals included, so a missing or added space shows.
"""

import pytest

from mmr1kit.data import templates

MMR1 = {
    # main a2f8a03
    ("system", "default"): "You are a helpful assistant. ",
    ("system", "qwen"): "You are a helpful assistant. ",
    ("system", "llava"): (
        "A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions."
    ),
    ("system", "r1v"): (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
        "first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning "
        "process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., "
        "<think> reasoning process here </think><answer> answer here </answer>"
    ),
    ("system", "ocr"): (
        "You are given an image. You should ocr the image and output the text in the image without other output."
    ),
    # f19eab9 GROUNDING_PROMPT (the --system_prompt_template grounding sweeps)
    ("system", "grounding"): (
        "You are given an image and an object to box in text.You should output the bounding box of the object, which should only be a list of floats."
        "Here is an example of what you should output: [x_min, y_min, x_max, y_max]. Please mind directly to output the list, do not add any other text."
    ),
    ("question", "default"): "{question}",
    ("question", "r1v"): "{question} Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags.",
    # dev_lkh d303e11
    ("question", "counting"): "{question} Output the final answer (number) in <answer> </answer> tags.",
    ("question", "qwenvl_rec"): "Output the bounding box of the {question} in the image.",  # "qwenvl_rec_format"
    ("answer", "default"): "{answer}",
    ("answer", "r1v"): "<answer> {answer} </answer>",
}
TABLES = {"system": templates.SYSTEM_PROMPTS, "question": templates.QUESTION_TEMPLATES,
          "answer": templates.ANSWER_TEMPLATES}


@pytest.mark.parametrize("kind, key", list(MMR1), ids=lambda v: str(v))
def test_template_is_mmr1s_verbatim(kind, key):
    assert TABLES[kind][key] == MMR1[kind, key]


def test_every_registry_key_is_mmr1s_or_declared_our_own():
    ours = {("system", "none")}  # no system turn: mmr1kit's own
    assert {(kind, key) for kind, table in TABLES.items() for key in table} == set(MMR1) | ours


def test_resolve_takes_keys_and_literal_templates_and_names_the_field():
    assert templates.resolve("question_template", "counting") == MMR1["question", "counting"]
    assert templates.resolve("question_template", "{question} Answer briefly.") == "{question} Answer briefly."
    with pytest.raises(ValueError, match="question_template='nope' is not a known template"):
        templates.resolve("question_template", "nope")
