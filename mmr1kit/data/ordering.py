"""Dataset ordering (`order_dataset`) as samplers that keep TRL's `RepeatSampler` contract.

The contract: every prompt index is yielded `num_generations` times in a row, chunks of `batch_size` prompts are
repeated `repeat_count` times, and the sequence is the same on every process (same seed), so that accelerate's
sharding hands each group's completions to the right processes. Only the order of the prompts changes:

- `random`: a seeded permutation (TRL's default);
- `sequential`: file order;
- `curriculum`: easy to hard by the row's `difficulty` (ties in file order);
- `reverse_curriculum`: hard to easy.

MMR1 implemented ordering as a `SequentialSampler` over a pre-sorted copy of the dataset, which its mini-batch merge
silently replaced by a random sampler (mmr1-spec §5, §15.20). Here ordering is the sampler itself.
"""

import torch
from trl.trainer.utils import RepeatSampler

ORDERS = ("random", "sequential", "curriculum", "reverse_curriculum")


def prompt_order(order: str, difficulties=None, n: int | None = None, seed: int = 0) -> list[int]:
    """Return the order in which the prompt indexes are visited (one epoch).

    Args:
        order (`str`): One of `ORDERS`.
        difficulties (`list[float]`, *optional*): One value per row; needed by the curriculum orders.
        n (`int`, *optional*): Number of rows, when `difficulties` is not given.
        seed (`int`): Seed of the `random` order.
    """
    if order not in ORDERS:
        raise ValueError(f"order_dataset={order!r} is not one of {ORDERS}")
    n = len(difficulties) if difficulties is not None else n
    if order == "random":
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    if order == "sequential":
        return list(range(n))
    if difficulties is None or any(d is None for d in difficulties):
        missing = n if difficulties is None else sum(d is None for d in difficulties)
        raise ValueError(
            f"order_dataset={order!r} needs a 'difficulty' value on every row ({missing} of {n} rows have none); "
            "add the column or measure one with mmr1kit.data.difficulty.measure_difficulty"
        )
    ranked = sorted(range(n), key=lambda i: (float(difficulties[i]), i))
    return ranked if order == "curriculum" else ranked[::-1]


class OrderedRepeatSampler(RepeatSampler):
    """`trl.trainer.utils.RepeatSampler` that visits the prompts in a fixed `order` instead of its own.

    With `order=None` it is exactly `RepeatSampler` (seeded shuffling each epoch).
    """

    def __init__(self, data_source, mini_repeat_count, batch_size=1, repeat_count=1, order=None, seed=None):
        super().__init__(data_source, mini_repeat_count, batch_size, repeat_count, shuffle=order is None, seed=seed)
        self.order = order

    def __iter__(self):
        if self.order is None:
            yield from super().__iter__()
            return
        chunks = [self.order[i : i + self.batch_size] for i in range(0, len(self.order), self.batch_size)]
        for chunk in chunks:
            if len(chunk) < self.batch_size:
                continue
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index
