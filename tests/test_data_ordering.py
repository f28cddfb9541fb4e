import pytest

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
