r"""Dynamic sampling: what trains when a group's completions all score alike (`dynamic_sampling`).

A group whose `G` completions all get the same reward has advantage 0 and carries no policy gradient. On easy or
hard data most groups are like that. `dynamic_sampling` (EasyR1's `online_filtering`, verl's DAPO `filter_groups`)
acts on them:

| `dynamic_sampling` | what trains |
|---|---|
| `none` (default) | every group, as in TRL |
| `filter` | only the groups with signal from the one generation round: a smaller batch |
| `replace` | new prompts are drawn and generated until the generation batch is full of groups with signal; after `max_tries` rounds it trains on what it has and says so (`signal/batch_filled`, a warning) |

A group has signal when `filter_low < mean_g(filter_key) < filter_high`. These are EasyR1's names and its meaning,
with strict inequalities. `filter_key` names a reward function of `reward_funcs`. The default is the first one, the
task's accuracy in MMR1's and mmr1kit's presets. `"overall"` (EasyR1's default name) is the weighted mean of all
rewards, `Σ_k w_k r_k / Σ_k w_k`; EasyR1's overall score is such a weighted mean. The group means use all of a group's
completions, gathered over processes, as TRL's advantages do.

How it fits TRL 1.16 (`docs/signal.md` has the full design and its limits). `_prepare_inputs` buffers one generation
batch per process (`per_device_train_batch_size × steps_per_generation` completions) and splits it into
`steps_per_generation` slices. `MMR1Trainer._generate_and_score_completions` produces that batch, so the tries happen
inside it. Each try is one full TRL generation round: the dataloader's prompts first, then prompts drawn by
`mmr1kit.data.ordering.draw_prompts`, seeded by `(seed, step, micro-step, try)`, so that every process draws the same
prompts without communicating and a resumed run draws what the uninterrupted one drew. Every process knows every
group's rewards, so every process computes which rows each process trains (`take_rows_plan`): process `p` keeps its
first rows with signal until it holds its share. Rows are then merged across tries (`concat_rows`: prompts padded on
the left, completions on the right, images as per-sample lists). The batch every process returns has the same
number of rows, a multiple of `steps_per_generation`, so TRL's split, its cross-process gathers and DDP all see
valid shapes.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from accelerate.utils import gather_object
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from mmr1kit.data.ordering import draw_prompts
from mmr1kit.rounds import record_rounds, tag_capsule

logger = logging.getLogger(__name__)

DYNAMIC_SAMPLING = ("none", "filter", "replace")
OVERALL = "overall"

# How each key of TRL 1.16's generation output (plus mmr1kit's `ref_hidden`) is padded when rows of several tries
# are merged: prompt-side tensors `(B, P)` are left-padded, completion-side tensors `(B, C, ...)` right-padded, tensors
# over prompt + completion `(B, P + C)` split at `P` and padded on both sides. "pad" means the tokenizer's pad id.
PROMPT_SIDE = {"prompt_ids": "pad", "prompt_mask": 0}
COMPLETION_SIDE = {"completion_ids": "pad", "completion_mask": 0, "old_per_token_logps": 0.0,
                   "ref_per_token_logps": 0.0, "sampling_per_token_logps": 0.0, "tool_mask": 1, "ref_hidden": 0.0,
                   "importance_sampling_ratio": 0.0}
BOTH_SIDES = ("token_type_ids", "mm_token_type_ids")


def config_error(config) -> tuple[str, str] | None:
    """`(field, message)` for a dynamic-sampling setting that cannot work, or `None`; checked by `MMR1Config`."""
    from mmr1kit.rewards import ALIASES

    if config.dynamic_sampling not in DYNAMIC_SAMPLING:
        return "dynamic_sampling", f"expected one of {DYNAMIC_SAMPLING}"
    if not config.filter_low < config.filter_high:
        return "filter_low", (f"must be below filter_high={config.filter_high} (a group has signal when "
                              f"filter_low < its mean of filter_key < filter_high)")
    names = [ALIASES.get(n, n) for n in config.reward_funcs]
    key = config.filter_key
    if key is not None and key != OVERALL and ALIASES.get(key, key) not in names:
        return "filter_key", f"expected one of reward_funcs {list(config.reward_funcs)} or {OVERALL!r}"
    if config.max_tries < 1:
        return "max_tries", "must be >= 1 (generation rounds per batch with dynamic_sampling='replace')"
    return None


def key_values(rewards_per_func: torch.Tensor, weights: torch.Tensor, names: list[str], key: str | None):
    """The per-completion value of `filter_key`: `(N, n_funcs)` rewards -> `(N,)`, NaN where it is unscorable.

    `key=None` is the first reward function; `"overall"` the weighted mean `Σ_k w_k r_k / Σ_k w_k` over the functions
    that scored the completion.
    """
    if key is None:
        return rewards_per_func[:, 0]
    if key == OVERALL:
        w = weights.to(rewards_per_func).unsqueeze(0).expand_as(rewards_per_func)
        scored = ~torch.isnan(rewards_per_func)
        total = (torch.nan_to_num(rewards_per_func) * w).sum(1)
        return total / (w * scored).sum(1).where(scored.any(1), torch.tensor(float("nan")))
    if key not in names:
        raise ValueError(f"MMR1Config.filter_key={key!r}: no such reward function in this trainer; its reward "
                         f"functions are {names} (or use {OVERALL!r})")
    return rewards_per_func[:, names.index(key)]


def group_signal(values: torch.Tensor, num_generations: int, low: float, high: float):
    """Group means of `values` `(N,)` (NaN left out) and which groups have signal: `low < mean < high`.

    Returns `(means (N/G,), signal (N/G,) bool, all_high (N/G,) bool, all_low (N/G,) bool)`; a group with no
    scorable value has no signal and is neither high nor low.
    """
    means = torch.nanmean(values.view(-1, num_generations).float(), dim=1)
    finite = ~torch.isnan(means)
    return means, finite & (means > low) & (means < high), finite & (means >= high), finite & (means <= low)


def take_rows_plan(signal_rows: torch.Tensor, world: int, n_local: int, counts: list[int]):
    """Which rows of one try each process trains, the same answer on every process.

    Args:
        signal_rows (`torch.Tensor` of shape `(N,)`, bool): rows of groups with signal, in TRL's global order (process
            `p` holds rows `p * n_local ... (p + 1) * n_local - 1`).
        world (`int`): number of processes.
        n_local (`int`): rows per process in a full generation batch.
        counts (`list[int]`): rows each process already holds from earlier tries.

    Returns:
        `(taken (N,) bool, counts)`: process `p` takes its first `n_local - counts[p]` rows with signal; `counts` is
        updated. When `n_local` is a multiple of `G` a process holds whole groups, so it takes whole groups.
    """
    taken = torch.zeros_like(signal_rows, dtype=torch.bool)
    counts = list(counts)
    for p in range(world):
        rows = torch.nonzero(signal_rows[p * n_local:(p + 1) * n_local]).flatten()[: n_local - counts[p]]
        taken[p * n_local + rows] = True
        counts[p] += rows.numel()
    return taken, counts


def balanced_size(counts: list[int], steps_per_generation: int) -> int:
    """Rows every process returns: the smallest count, rounded down to a multiple of `steps_per_generation` (TRL
    splits the batch into that many equal slices), and at least `steps_per_generation`."""
    return max(steps_per_generation, min(counts) // steps_per_generation * steps_per_generation)


def take_rows(batch: dict, index) -> dict:
    """The rows `index` of a generation batch whose images are per-sample lists (`split_pixel_values_by_grid`)."""
    index = [int(i) for i in index]
    out = {}
    for key, value in batch.items():
        if value is None or (torch.is_tensor(value) and value.ndim == 0):
            out[key] = value
        elif torch.is_tensor(value):
            out[key] = value[index]
        else:
            out[key] = [value[i] for i in index]
    return out


def _pad_width(t: torch.Tensor, width: int, value, left: bool) -> torch.Tensor:
    if t.size(1) == width:
        return t
    pad = t.new_full((t.size(0), width - t.size(1), *t.shape[2:]), value)
    return torch.cat([pad, t] if left else [t, pad], dim=1)


def concat_rows(batches: list[dict], pad_token_id: int, sequence_level_ratio: bool = False) -> dict:
    """Merge generation batches (images as per-sample lists) row-wise; widths are padded as TRL pads them.

    `sequence_level_ratio`: vLLM's importance-sampling ratio is `(B, 1)` (TRL's `sequence_*` modes), not per token.
    Keys outside TRL 1.16's known layout are concatenated as row tensors `(B, ...)`; scalars (`num_items_in_batch`)
    are taken from the first batch and must be recomputed by the caller.
    """
    batches = [b for b in batches if b["prompt_ids"].size(0)] or batches[:1]
    if len(batches) == 1:
        return dict(batches[0])
    P = max(b["prompt_ids"].size(1) for b in batches)
    C = max(b["completion_ids"].size(1) for b in batches)
    out = {}
    for key, first in batches[0].items():
        values = [b.get(key) for b in batches]
        if first is None or (torch.is_tensor(first) and first.ndim == 0):
            out[key] = first
        elif not torch.is_tensor(first):
            out[key] = [x for v in values for x in v]
        elif key in PROMPT_SIDE:
            fill = pad_token_id if PROMPT_SIDE[key] == "pad" else PROMPT_SIDE[key]
            out[key] = torch.cat([_pad_width(v, P, fill, left=True) for v in values])
        elif key in COMPLETION_SIDE and not (key == "importance_sampling_ratio" and sequence_level_ratio):
            fill = pad_token_id if COMPLETION_SIDE[key] == "pad" else COMPLETION_SIDE[key]
            out[key] = torch.cat([_pad_width(v, C, fill, left=False) for v in values])
        elif key in BOTH_SIDES:
            parts = []
            for b, v in zip(batches, values):
                p = b["prompt_ids"].size(1)
                parts.append(torch.cat([_pad_width(v[:, :p], P, 0, left=True),
                                        _pad_width(v[:, p:], C, 0, left=False)], dim=1))
            out[key] = torch.cat(parts)
        else:
            out[key] = torch.cat(values)
    return out


class DynamicSampling:
    """The trainer hook: `generate(inputs)` returns the generation batch that trains, after 1 or more tries.

    Each try calls `trainer._score_round(rows, attempt)`, one TRL generation round with mmr1kit's advantages, which
    returns the local generation batch and the round's record (rewards and `filter_key` values of all processes).
    Once the rows that train are known, `mmr1kit.rounds.record_rounds` writes every try's rollouts and ledger visits,
    and the merged batch gets its capsule tags (`mmr1kit.rounds.tag_capsule`: exactly the rows that train). With
    `order_dataset="online"` the first try's prompts are drawn here too, from the ledger (`mmr1kit.ledger`).
    """

    def __init__(self, trainer):
        args = trainer.args
        self.trainer = trainer
        self.mode = args.dynamic_sampling
        self.low, self.high = args.filter_low, args.filter_high
        from mmr1kit.rewards import ALIASES

        self.key = ALIASES.get(args.filter_key, args.filter_key)
        self.max_tries = args.max_tries if self.mode == "replace" else 1
        self.online = args.order_dataset == "online"
        self.n_local = args.per_device_train_batch_size * args.steps_per_generation
        self._dataset = None
        self._warned = False
        if (self.mode == "replace" or self.online) and not hasattr(trainer.train_dataset, "__len__"):
            field = "order_dataset='online'" if self.online else "dynamic_sampling='replace'"
            raise ValueError(f"MMR1Config.{field} draws prompts by their index: it needs a map-style training set, "
                             f"not a streaming (iterable) one")
        if self.key not in (None, OVERALL):  # a custom reward list: the key must be one of this trainer's functions
            key_values(torch.zeros(1, len(trainer.reward_func_names)), trainer.reward_weights,
                       trainer.reward_func_names, self.key)

    def values(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """`(N, n_funcs)` rewards -> `(N,)` values of `filter_key` (the ledger's pass rate is their group mean)."""
        t = self.trainer
        return key_values(rewards_per_func, t.reward_weights.cpu(), t.reward_func_names, self.key)

    def signal(self, values: torch.Tensor):
        """`group_signal` of this trainer's settings: `(means, signal, all_high, all_low)` per group."""
        return group_signal(values, self.trainer.num_generations, self.low, self.high)

    # --- prompts of a try ----------------------------------------------------------------------------------------

    def _train_rows(self):
        if self._dataset is None:
            t = self.trainer
            dataset = t.train_dataset
            if t.args.remove_unused_columns:  # as `Trainer._get_dataloader` does for the dataloader's rows
                dataset = t._remove_unused_columns(dataset, description="training")
            self._dataset = dataset
        return self._dataset

    def draw_rows(self, attempt: int, used: set) -> list[dict]:
        """This process's rows of a try whose prompts are drawn here (a replacement try, or any online try)."""
        t = self.trainer
        G = t.num_generations
        n_prompts = t.args.generation_batch_size // G
        dataset = self._train_rows()
        pass_rates = t.ledger.pass_rates(len(dataset)) if self.online else None
        # One generator per (seed, optimizer step, micro-step, try): the same draw on every process and after a resume.
        micro = t._step % t.current_gradient_accumulation_steps
        seed = np.random.SeedSequence([t.args.seed, t.state.global_step, micro, attempt]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        prompts = draw_prompts(len(dataset), n_prompts, generator, pass_rates=pass_rates, exclude=used)
        used.update(prompts)
        rank = t.accelerator.process_index
        indexes = [i for i in prompts for _ in range(G)][rank * self.n_local:(rank + 1) * self.n_local]
        return [dataset[i] for i in indexes]

    # --- the round -----------------------------------------------------------------------------------------------

    def generate(self, inputs: list[dict]) -> dict:
        """The generation batch of one training round, with the `signal/*` metrics and `timing/generate_wasted`."""
        t = self.trainer
        world, rank, n_local, G = t.accelerator.num_processes, t.accelerator.process_index, self.n_local, \
            t.num_generations
        used = set()  # dataset indexes generated this round, all processes: replacement tries draw other prompts
        if self.mode == "replace" and not self.online:
            used.update(t.ledger.indexes_of(gather_object([x.get("id") for x in inputs])))
        rows = self.draw_rows(0, used) if self.online else inputs
        counts, tries, takens = [0] * world, [], []
        stats = {"groups": 0, "high": 0, "low": 0}
        for attempt in range(self.max_tries):
            generated_before = t.phases.seconds.get("generate", 0.0)
            output, round_ = t._score_round(rows, attempt)
            tries.append((output, round_, t.phases.seconds.get("generate", 0.0) - generated_before))
            _, signal, high, low = self.signal(round_["values"])
            stats["groups"] += signal.numel()
            stats["high"] += int(high.sum())
            stats["low"] += int(low.sum())
            signal_rows = signal.repeat_interleave(G) if self.mode != "none" else torch.ones(G * signal.numel(),
                                                                                              dtype=torch.bool)
            taken, counts = take_rows_plan(signal_rows, world, n_local, counts)
            takens.append(taken)
            if self.mode != "replace" or min(counts) >= n_local:
                break
            rows = self.draw_rows(attempt + 1, used)
        size = balanced_size(counts, t.args.steps_per_generation)
        trained = final_rows(takens, world, n_local, size)
        record_rounds(t, [round_ for _, round_, _ in tries], trained)
        filled = min(counts) / n_local
        if self.mode == "none":
            batch = tries[0][0]
        else:
            parts = [take_rows(split_pixel_values_by_grid(out), torch.nonzero(m[rank * n_local:(rank + 1) * n_local])
                               .flatten()) for (out, _, _), m in zip(tries, trained)]
            batch = concat_rows(parts, t._tokenizer.pad_token_id,
                                sequence_level_ratio=t.vllm_importance_sampling_mode.startswith("sequence"))
            batch = unsplit_pixel_values_by_grid(batch)
            mask = batch["completion_mask"] * batch.get("tool_mask", 1)
            batch["num_items_in_batch"] = t.accelerator.gather(mask.sum()).sum()
            if filled < 1.0 and self.mode == "replace" and t.accelerator.is_main_process:
                (logger.info if self._warned else logger.warning)(
                    "dynamic_sampling='replace': %d tries (max_tries) filled %.0f%% of the generation batch with "
                    "groups with signal at step %d; training on %d rows per process (signal/batch_filled)",
                    len(tries), 100 * filled, t.state.global_step + 1, size)
                self._warned = True
        tag_capsule(t, batch, [round_ for _, round_, _ in tries], trained, rank, n_local)  # the rows that train
        stats["dropped"] = sum(int((~m.view(-1, G).any(1)).sum()) for m in trained)
        stats["wasted"] = sum(g * float((~m[rank * n_local:(rank + 1) * n_local]).sum()) / n_local
                              for (_, _, g), m in zip(tries, trained))
        _log_round(t, stats, tries=len(tries), output=batch, filled=filled)
        return batch


def final_rows(takens: list[torch.Tensor], world: int, n_local: int, size: int) -> list[torch.Tensor]:
    """The rows that train, per try, as `(N,)` bool masks over all processes (every process computes the same).

    Process `p` keeps the rows `take_rows_plan` gave it, in try order, up to `size` rows; with fewer than `size`, it
    tops up with the last try's rows that it did not take (groups without signal, or surplus), so that every process
    returns `size` rows.
    """
    out = [torch.zeros_like(taken) for taken in takens]
    for p in range(world):
        local = slice(p * n_local, (p + 1) * n_local)
        remaining = size
        for taken, mask in zip(takens, out):
            rows = torch.nonzero(taken[local]).flatten()[:remaining]
            mask[p * n_local + rows] = True
            remaining -= rows.numel()
        if remaining > 0:
            rows = torch.nonzero(~takens[-1][local]).flatten()[:remaining]
            out[-1][p * n_local + rows] = True
    return out


def _log_round(trainer, stats: dict, tries: int, output: dict, filled: float) -> None:
    """Append one generation round's `signal/*` metrics and `timing/generate_wasted` (docs/metrics.md)."""
    metrics = trainer._metrics["train"]
    groups = max(stats["groups"], 1)
    metrics["signal/groups_all_correct"].append(stats["high"] / groups)
    metrics["signal/groups_all_wrong"].append(stats["low"] / groups)
    metrics["signal/tries"].append(float(tries))
    metrics["signal/prompts_dropped"].append(float(stats["dropped"]))
    metrics["signal/batch_filled"].append(filled)
    mask = output["completion_mask"] * output.get("tool_mask", 1)
    zero = (output["advantages"].abs() < 1e-12).unsqueeze(1) * mask
    totals = trainer.accelerator.reduce(torch.stack([zero.sum().float(), mask.sum().float()]), reduction="sum")
    metrics["signal/frac_tokens_zero_advantage"].append(float(totals[0] / totals[1]) if totals[1] else math.nan)
    metrics["timing/generate_wasted"].append(stats["wasted"])
