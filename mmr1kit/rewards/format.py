r"""Format rewards: is the completion laid out as the prompt asked?

Differences from MMR1 (its `src/open_r1/rewards.py`; `docs/mmr1.md`, known bug 9):

1. MMR1's `think_format_reward` used `re.match(r"^<think>.*?</think><answer>.*?</answer>$", content)` without
   `re.DOTALL`, so any newline inside the tags failed, and it allowed no whitespace between `</think>` and `<answer>`.
   `format` accepts newlines inside the tags and whitespace around and between the blocks.
2. Each tag must occur exactly once, so `<answer>1</answer><answer>2</answer>` after a think block no longer passes
   through the lazy `.*?`.
3. The Qwen end tokens `<|im_end|>` / `<|endoftext|>` are ignored (see `completion_text`).

The checks use `str.count`/`str.find`, not a regex, so they are linear in the length of the completion.
"""

from .parsing import completion_text


def _blocks_in_order(text: str, tags: tuple[str, ...]) -> bool:
    """`text` is `<tag1>...</tag1>` [whitespace] `<tag2>...</tag2>` ... with each tag exactly once, nothing around."""
    text = text.strip()
    position = 0
    for k, tag in enumerate(tags):
        opening, closing = f"<{tag}>", f"</{tag}>"
        if text.count(opening) != 1 or text.count(closing) != 1:
            return False
        start, end = text.find(opening), text.find(closing)
        if start < position or end < start or (text[position:start].strip() if k else text[:start]):
            return False
        position = end + len(closing)
    return position == len(text)


def format_reward(completions: list, solution: list | None = None, **kwargs) -> list[float]:
    r"""
    Reward 1.0 for `<think>...</think>` followed by `<answer>...</answer>`, else 0.0.

    The completion, stripped, must consist of exactly one think block, optional whitespace, and exactly one answer
    block. Tag contents may span several lines and may be empty. MMR1's name: `r1v_format`.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions as strings or in TRL's conversational form `[[{"role": "assistant", "content": str}], ...]`.
        solution (`list`, *optional*):
            Unused; accepted so that every reward can be called as `f(completions, solution)`.
        **kwargs:
            Other dataset columns; unused.

    Returns:
        `list[float]`: 1.0 or 0.0 per completion.

    Example:
    ```python
    >>> format_reward(["<think>\nCount them.\n</think>\n<answer>3</answer>", "<answer>3</answer>"])
    [1.0, 0.0]
    ```
    """
    return [float(_blocks_in_order(completion_text(c), ("think", "answer"))) for c in completions]


def answer_format_reward(completions: list, solution: list | None = None, **kwargs) -> list[float]:
    r"""
    Reward 1.0 when the completion is exactly one `<answer>...</answer>` block, else 0.0.

    For answer-only prompts such as `"Answer as <answer>N</answer>."`. Whitespace around the block is allowed, the
    content may span several lines; any other text (including a think block) gives 0.0.

    Args:
        completions (`list[str]` or `list[list[dict]]`):
            Completions as strings or in TRL's conversational form.
        solution (`list`, *optional*):
            Unused; accepted so that every reward can be called as `f(completions, solution)`.
        **kwargs:
            Other dataset columns; unused.

    Returns:
        `list[float]`: 1.0 or 0.0 per completion.

    Example:
    ```python
    >>> answer_format_reward([" <answer>3</answer>\n", "3", "<think>.</think><answer>3</answer>"])
    [1.0, 0.0, 0.0]
    ```
    """
    return [float(_blocks_in_order(completion_text(c), ("answer",))) for c in completions]


format_reward.__name__ = "format"
answer_format_reward.__name__ = "answer_format"
