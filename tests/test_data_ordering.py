import json
from collections import Counter

import pytest
import torch

from mmr1kit.data.ordering import OrderedRepeatSampler, prompt_order


DIFFICULTY = [0.5, 0.1, 0.9, 0.1, 0.3, 0.7]


@pytest.mark.parametrize(
    "order, expected",
    [
        ("sequential", [0, 1, 2, 3, 4, 5]),  # file order
        ("curriculum", [1, 3, 4, 0, 5, 2]),  # easy to hard; the tie 0.1 keeps file order (1 before 3)
        ("reverse_curriculum", [2, 5, 0, 4, 3, 1]),  # hard to easy
    ],
)
def test_fixed_orders(order, expected):
    assert prompt_order(order, DIFFICULTY) == expected


def test_random_order_is_seeded():
    a, b, c = (prompt_order("random", n=50, seed=s) for s in (0, 0, 1))
    assert a == b != c and sorted(a) == list(range(50))


def test_curriculum_needs_difficulties():
    with pytest.raises(ValueError, match="difficulty.*2 of 3 rows"):
        prompt_order("curriculum", [0.1, None, None])
    with pytest.raises(ValueError, match="order_dataset='hard_first'"):
        prompt_order("hard_first", n=3)


def test_sampler_keeps_trls_repeat_contract():
    order = prompt_order("curriculum", DIFFICULTY)
    sampler = OrderedRepeatSampler(range(6), mini_repeat_count=2, batch_size=3, repeat_count=2, order=order)
    # Each prompt G=2 times in a row; each chunk of 3 prompts repeated twice (num_iterations x steps_per_generation).
    assert list(sampler) == [1, 1, 3, 3, 4, 4] * 2 + [0, 0, 5, 5, 2, 2] * 2
    assert len(list(sampler)) == len(sampler)


def test_sampler_without_order_is_trls_shuffle():
    from trl.trainer.utils import RepeatSampler

    ours = list(OrderedRepeatSampler(range(10), mini_repeat_count=4, batch_size=2, seed=3))
    trls = list(RepeatSampler(range(10), mini_repeat_count=4, batch_size=2, shuffle=True, seed=3))
    assert ours == trls


def test_draws_are_seeded_distinct_and_avoid_excluded_prompts():
    from mmr1kit.data.ordering import draw_prompts

    draw = lambda seed, **kw: draw_prompts(10, 4, torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    assert draw(0) == draw(0) != draw(1) and len(set(draw(0))) == 4
    assert not set(draw(0, exclude={0, 1, 2, 3, 4, 5})) & {0, 1, 2, 3, 4, 5}
    assert len(set(draw(0, exclude=set(range(8))))) == 4  # too few left: the whole set again


def test_online_draws_unseen_first_then_by_p_times_one_minus_p():
    from mmr1kit.data.ordering import ONLINE_FLOOR, draw_prompts, prompt_order

    rates = [None, 0.5, None, 1.0, 0.0, 0.5, None, 0.9]
    first = draw_prompts(8, 3, torch.Generator().manual_seed(0), pass_rates=rates)
    assert sorted(first) == [0, 2, 6]  # the three unseen prompts
    picks = Counter()
    for seed in range(400):
        picks.update(draw_prompts(8, 4, torch.Generator().manual_seed(seed), pass_rates=rates)[3:])
    weight = {1: 0.25, 5: 0.25, 3: 0.0, 4: 0.0, 7: 0.09}  # p (1 - p), plus the floor
    total = sum(w + ONLINE_FLOOR for w in weight.values())
    for i, w in weight.items():  # the one seen prompt drawn after the unseen ones: its share follows the weights
        assert picks[i] / 400 == pytest.approx((w + ONLINE_FLOOR) / total, abs=0.06), i
    assert prompt_order("online", n=3) == [0, 1, 2]  # the dataloader's placeholder order


@pytest.mark.slow
def test_online_order_trains_from_the_ledger(qwen_path, counting_dir, tmp_path):
    """order_dataset='online': the trained prompts are the ones drawn from the ledger, not the dataloader's."""
    from mmr1kit.config import MMR1Config
    from mmr1kit.data import load_dataset
    from mmr1kit.trainer import MMR1Trainer

    config = MMR1Config(run_dir=str(tmp_path / "run"), dataset=str(counting_dir), max_steps=1, save_strategy="no",
                        order_dataset="online", train_sample_size=6, max_completion_length=4, seed=3)
    dataset = load_dataset(counting_dir, "train", config)
    trainer = MMR1Trainer(model=str(qwen_path), reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                          args=config, train_dataset=dataset)
    trainer.train()
    visited = [json.loads(x)["index"] for x in (tmp_path / "run" / "prompts.jsonl").read_text().splitlines()]
    expected = draw_expected(len(dataset), seed=3)
    assert visited == expected and visited != [0, 1]  # not the dataloader's file order


def draw_expected(n, seed):
    import numpy as np

    from mmr1kit.data.ordering import draw_prompts

    state = np.random.SeedSequence([seed, 0, 0, 0]).generate_state(1)[0]  # (seed, step, micro-step, try)
    return draw_prompts(n, 2, torch.Generator().manual_seed(int(state)), pass_rates=[None] * n)
