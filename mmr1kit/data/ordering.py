"""Dataset ordering (`order_dataset`) as samplers that keep TRL's `RepeatSampler` contract.

The contract: every prompt index is yielded `num_generations` times in a row, chunks of `batch_size` prompts are
repeated `repeat_count` times, and the sequence is the same on every process (same seed), so that accelerate's
sharding hands each group's completions to the right processes. Only the order of the prompts changes:

- `random`: a seeded permutation (TRL's default);
- `sequential`: file order;
- `curriculum`: easy to hard by the row's `difficulty` (ties in file order);
- `reverse_curriculum`: hard to easy;
- `online`: drawn at every generation round by `draw_prompts` with weight `p (1 - p)` from the prompt ledger's pass
  rates (`mmr1kit.ledger`), unseen prompts first. The trainer draws them (`mmr1kit.signal.DynamicSampling`), not the
  dataloader: a sampler is iterated ahead of training (accelerate prefetches a batch, transformers fetches a whole
  accumulation window), so its draws would see the ledger late, by an amount that depends on the batch layout, and a
  resumed run could not redraw them. The dataloader's rows are then placeholders (file order).

MMR1 implemented ordering as a `SequentialSampler` over a pre-sorted copy of the dataset, which its mini-batch merge
silently replaced by a random sampler (`docs/mmr1.md`, known bug 13). Here ordering is the sampler itself.
"""

import torch
from trl.trainer.utils import RepeatSampler

ORDERS = ("random", "sequential", "curriculum", "reverse_curriculum", "online")
ONLINE_FLOOR = 0.01  # added to p (1 - p): a prompt every completion solves (or fails) is still revisited, rarely


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
    if order in ("sequential", "online"):  # online: placeholders, the trainer draws the prompts (see above)
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


def draw_prompts(n: int, k: int, generator: torch.Generator, pass_rates=None, exclude=()) -> list[int]:
    """Draw `k` distinct prompt indexes out of `n`, avoiding `exclude` while enough others remain.

    Without `pass_rates`: uniformly at random. With `pass_rates` (one per prompt, `None` for a prompt never seen, as
    `PromptLedger.pass_rates` gives them): the `online` order. Unseen prompts come first, in random order; the rest are
    drawn without replacement with weight `p (1 - p) + ONLINE_FLOOR`, largest for prompts solved about half the time,
    whose groups carry the most signal.

    Args:
        n (`int`): Number of prompts in the dataset.
        k (`int`): Prompts to draw (`k <= n`).
        generator (`torch.Generator`): The only source of randomness: the same generator state draws the same prompts.
        pass_rates (`list[float | None]`, *optional*): Latest pass rate of each prompt.
        exclude (`set[int]`, *optional*): Prompts already drawn; used only when fewer than `k` others remain.
    """
    if not 0 < k <= n:
        raise ValueError(f"cannot draw {k} distinct prompts out of {n}")
    pool = [i for i in range(n) if i not in exclude]
    if len(pool) < k:
        pool = list(range(n))
    if pass_rates is None:
        return [pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist()]
    unseen = [i for i in pool if pass_rates[i] is None]
    first = [unseen[i] for i in torch.randperm(len(unseen), generator=generator)[:k].tolist()]
    seen = [i for i in pool if pass_rates[i] is not None]
    if len(first) == k or not seen:
        return first
    p = torch.tensor([float(pass_rates[i]) for i in seen], dtype=torch.float64).nan_to_num(0.0).clamp(0.0, 1.0)
    weights = p * (1 - p) + ONLINE_FLOOR
    picked = torch.multinomial(weights, k - len(first), replacement=False, generator=generator)
    return first + [seen[i] for i in picked.tolist()]
