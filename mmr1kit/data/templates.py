"""MMR1's prompt templates (`src/open_r1/constants.py`), verbatim, plus mmr1kit's own.

Verbatim from MMR1 (the commit is named where it is not main HEAD `a2f8a03`): the system prompts `default` / `qwen`,
`llava`, `r1v`, `ocr`, `grounding` (`f19eab9`); the question templates `default`, `r1v`, `counting` (`dev_lkh`),
`qwenvl_rec` (`dev_lkh`'s `qwenvl_rec_format`); the answer templates `default`, `r1v`. mmr1kit's own: the system
prompt `none`. `docs/objective.md` says where mmr1kit's prompts differ from what MMR1's code sent.

A template field of `MMR1Config` names a key of these dicts, or is a literal template string: one containing
`{question}` (question templates) or `{answer}` (answer templates), or any text (system prompts).
"""

SYSTEM_PROMPTS = {
    "none": "",  # no system turn at all: the chat template adds its own default, as for an unprompted model
    "default": "You are a helpful assistant. ",  # MMR1's QWEN2_SYS, trailing space included
    "qwen": "You are a helpful assistant. ",
    "llava": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions."
    ),
    "r1v": (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
        "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
        "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>"
    ),
    "ocr": "You are given an image. You should ocr the image and output the text in the image without other output.",
    # MMR1 f19eab9 GROUNDING_PROMPT, used by its --system_prompt_template grounding sweeps; the missing spaces after
    # "text." and "floats." are MMR1's (two string literals joined without one)
    "grounding": (
        "You are given an image and an object to box in text.You should output the bounding box of the object, "
        "which should only be a list of floats.Here is an example of what you should output: "
        "[x_min, y_min, x_max, y_max]. Please mind directly to output the list, do not add any other text."
    ),
}

QUESTION_TEMPLATES = {
    "default": "{question}",
    "r1v": "{question} Output the thinking process in <think> </think> and final answer (number) in <answer> </answer> tags.",
    "counting": "{question} Output the final answer (number) in <answer> </answer> tags.",
    "qwenvl_rec": "Output the bounding box of the {question} in the image.",
}

ANSWER_TEMPLATES = {
    "default": "{answer}",
    "r1v": "<answer> {answer} </answer>",
}


def resolve(kind: str, value: str) -> str:
    """Return the template text for a registry key or a literal template; raise `ValueError` when invalid.

    Args:
        kind (`str`): `"system_prompt_template"`, `"question_template"` or `"answer_template"` (the config field).
        value (`str`): A key of the matching dict, or a literal template.
    """
    table, slot = {
        "system_prompt_template": (SYSTEM_PROMPTS, None),
        "question_template": (QUESTION_TEMPLATES, "{question}"),
        "answer_template": (ANSWER_TEMPLATES, "{answer}"),
    }[kind]
    if value in table:
        return table[value]
    if slot is None and " " in value:  # a literal system prompt: any sentence
        return value
    if slot is not None and slot in value:
        return value
    expected = f"or a literal template containing {slot}" if slot else "or a literal prompt (a sentence)"
    raise ValueError(f"{kind}={value!r} is not a known template ({', '.join(table)}) {expected}")
