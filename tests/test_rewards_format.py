import pytest

from mmr1kit.rewards.format import answer_format_reward, format_reward


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>x</think><answer>3</answer>", 1.0),  # MMR1's exact layout
        ("<think>\nline 1\nline 2\n</think>\n<answer>\n3\n</answer>", 1.0),  # newlines in tags (MMR1: 0)
        ("<think>x</think>  \n <answer>3</answer>", 1.0),  # whitespace between the blocks (MMR1: 0)
        ("  <think>x</think><answer>3</answer>\n", 1.0),  # whitespace around
        ("<think></think><answer></answer>", 1.0),  # empty tags are allowed, as in MMR1
        ("<think>x</think><answer>3</answer><|im_end|>", 1.0),  # end token decoded with skip_special_tokens=False
        ([{"role": "assistant", "content": "<think>x</think><answer>3</answer>"}], 1.0),  # conversational form
        ("<answer>3</answer>", 0.0),  # no think block
        ("<think>x</think>", 0.0),  # no answer block
        ("<think>x</think> 3", 0.0),  # answer without tags
        ("<think>x</think>so<answer>3</answer>", 0.0),  # text between the blocks
        ("I think <think>x</think><answer>3</answer>", 0.0),  # text before
        ("<think>x</think><answer>3</answer> done", 0.0),  # text after
        ("<answer>3</answer><think>x</think>", 0.0),  # wrong order
        ("<think>x</think><answer>1</answer><answer>2</answer>", 0.0),  # two answer blocks
        ("<think><think>x</think></think><answer>3</answer>", 0.0),  # nested think
        ("<think>x<answer>3</answer></think>", 0.0),  # answer inside think
        ("<think>x</think><answer>3", 0.0),  # truncated answer
        ("<think>x<answer>3</answer>", 0.0),  # unclosed think
        ("</think><think><answer>3</answer>", 0.0),  # closing before opening
        ("", 0.0),  # empty
    ],
)
def test_format(completion, expected):
    assert format_reward([completion]) == [expected]


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<answer>3</answer>", 1.0),  # the answer-only layout
        ("\n <answer>\n3\n</answer> \n", 1.0),  # whitespace around and newlines inside
        ("<answer></answer>", 1.0),  # empty content still has the format
        ([{"role": "assistant", "content": "<answer>3</answer><|im_end|>"}], 1.0),  # conversational, end token
        ("3", 0.0),  # no tags
        ("The answer is <answer>3</answer>", 0.0),  # text before
        ("<answer>3</answer>.", 0.0),  # text after
        ("<think>x</think><answer>3</answer>", 0.0),  # a think block is not answer-only
        ("<answer>3</answer><answer>4</answer>", 0.0),  # two blocks
        ("<answer><answer>3</answer>", 0.0),  # two openings
        ("<answer>3", 0.0),  # unclosed
        ("</answer>3<answer>", 0.0),  # reversed tags
    ],
)
def test_answer_format(completion, expected):
    assert answer_format_reward([completion]) == [expected]


def test_format_rewards_keep_batch_order_and_ignore_columns():
    completions = ["<think>a</think><answer>1</answer>", "<answer>1</answer>"]
    assert format_reward(completions, solution=["1", "1"], task=["counting"] * 2) == [1.0, 0.0]
    assert answer_format_reward(completions, ["1", "1"]) == [0.0, 1.0]
