r"""MMR1's group advantages and group reward statistics, composed with TRL's advantage settings.

TRL 1.16 computes the group-relative advantage inside `GRPOTrainer._generate_and_score_completions`. `MMR1Trainer`
calls `apply` right after it, on the same round's rewards, to

- log MMR1's `reward_std`: the mean over groups of the within-group standard deviation of the summed reward
  (`reward_std/within_group`; TRL's `reward_std` is the std over the whole batch);
- subtract `beta · KL` of each completion from its reward before the group statistics when `kl_in_reward` is set
  (`kl_penalty`, verl's `use_kl_in_reward`);
- replace TRL's advantages by MMR1's `no_mean_for_same_reward` variant when it is on.

KL in the reward (`kl_in_reward`: `k1`, `k2`, `k3` or `exact`). Completion `i`'s reward becomes
`r_i - beta · Σ_t KL_{i,t}`: verl's definition (`apply_kl_penalty`: token-level rewards `score - beta · kl_t`, which
its GRPO advantage sums over the response), a sum over the completion's tokens, not a mean. `KL_{i,t}` is the
estimator at the sampled token between the policy that generated the round (`old_per_token_logps`, or the same
policy's log-probs computed here when TRL skipped them) and the reference; `exact` is the full-distribution KL at that
position. The penalty has no gradient: it acts through the advantages only. With `use_kl` the loss keeps its KL term
as well (same `beta`); with `use_kl=False` the reward is the only place the KL acts ("instead of"). verl clamps its
k3 (`low_var_kl`) to [-10, 10]; mmr1kit does not. `reward`, `rewards/*` and `reward_std/within_group` stay the task
rewards; `kl_penalty` logs the mean penalty and every rollout records its own.

Notation: `N` completions of one generation round (all processes), `G` the round's group size (`num_generations` in
training, `num_generations_eval` in evaluation), consecutive blocks of `G` completions share a prompt.

`no_mean_for_same_reward` composes with TRL's settings as follows (`config_error` refuses the rest at config time):

| TRL setting | with `no_mean_for_same_reward` |
|---|---|
| `scale_rewards="group"` | MMR1's formula: `A = clamp((r - mean_g * [g not identical]) / (std_g + 1e-4), -1, 1)` |
| `scale_rewards="batch"` | the same with the batch std in place of `std_g` |
| `scale_rewards="none"` | `A = clamp(r - mean_g * [g not identical], -1, 1)` |
| `multi_objective_aggregation="sum_then_normalize"` | the statistics are those of the weighted sum, as TRL's |
| `multi_objective_aggregation="normalize_then_sum"` | refused: TRL normalises each reward before summing, so "a group whose rewards are identical" has no single meaning |
| `num_generations_eval` | evaluation rounds use it as `G` |
| unscorable completions (every reward `None`) | excluded from the group statistics, advantage 0 (TRL's rule) |
| `kl_approximator="kimifull"` | `no_mean_for_same_reward` wins over Kimi's mean-only advantage, as in MMR1 |
"""

import math

import torch
from trl.trainer.utils import nanstd

ADVANTAGE_SCALES = ("group", "batch", "none")
KL_IN_REWARD = ("k1", "k2", "k3", "exact")
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def group_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    scale: str = "group",
    no_mean_for_same_reward: bool = False,
    eps: float = 1e-4,
) -> torch.Tensor:
    r"""
    Group-relative advantages, TRL's (`scale_rewards`) and MMR1's (`no_mean_for_same_reward`).

    - `scale="group"` (MMR1's default, TRL's `scale_rewards="group"`): `A = (r - mean_g) / (std_g + eps)`.
    - `scale="batch"` (TRL's `"batch"`): `A = (r - mean_g) / (std_batch + eps)`.
    - `scale="none"`: `A = r - mean_g`. This is Kimi k1.5's "mean only" advantage (MMR1 `fullkimi`).
    - `no_mean_for_same_reward=True` (MMR1): groups whose rewards are all identical are not centred, and the result
      is clamped: `A = clamp((r - mean_g * [group not all equal]) / (std + eps), -1, 1)` (no division when
      `scale="none"`). An all-equal group thus gets `clamp(r / eps, -1, 1)`: +1 if all are positive, -1 if negative,
      0 if zero.

    `std` is the unbiased (N - 1) standard deviation, as in MMR1 and TRL. NaN rewards (TRL's unscorable completions)
    are left out of every statistic and get advantage 0, as in TRL 1.16; so does every completion of a group whose
    statistics are undefined (no scorable reward, or a single one with `scale="group"`). With `num_generations=1`
    (an evaluation round with `num_generations_eval=1`) the group std is 0, as in TRL. "All identical" is tested
    with `max == min` over the scorable rewards, not `std != 0` (a float mean of identical rewards can leave a
    ~1e-17 std; MMR1's test would then silently skip the mask).

    Args:
        rewards (`torch.Tensor` of shape `(N,)`):
            Summed (weighted, scaled) reward per completion, grouped consecutively; NaN for unscorable completions.
        num_generations (`int`):
            Group size `G >= 1`; must divide `N`.
        scale (`str`, *optional*, defaults to `"group"`):
            `"group"`, `"batch"` or `"none"`.
        no_mean_for_same_reward (`bool`, *optional*, defaults to `False`):
            MMR1's flag, see above.
        eps (`float`, *optional*, defaults to `1e-4`):
            Added to the std (MMR1 and TRL use 1e-4).

    Returns:
        `torch.Tensor` of shape `(N,)`, finite.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"Unknown scale {scale!r}; valid values are {', '.join(ADVANTAGE_SCALES)}.")
    if rewards.dim() != 1:
        raise ValueError(f"`rewards` must be 1-D (N,), got shape {tuple(rewards.shape)}.")
    if num_generations < 1 or rewards.numel() % num_generations != 0:
        raise ValueError(f"num_generations={num_generations} must be >= 1 and divide N={rewards.numel()}.")
    if torch.isinf(rewards).any():
        raise ValueError("`rewards` must be finite or NaN (unscorable); got an infinite reward.")
    grouped = rewards.view(-1, num_generations)
    centre = torch.nanmean(grouped, dim=1, keepdim=True)
    if no_mean_for_same_reward:
        scorable = ~torch.isnan(grouped)
        high = torch.where(scorable, grouped, -torch.inf).amax(1, keepdim=True)
        low = torch.where(scorable, grouped, torch.inf).amin(1, keepdim=True)
        centre = torch.where(high == low, torch.zeros_like(centre), centre)
    advantages = grouped - centre
    if scale == "group":
        std = nanstd(grouped, dim=1, keepdim=True) if num_generations > 1 else torch.zeros_like(centre)
        advantages = advantages / (std + eps)
    elif scale == "batch":
        std = nanstd(rewards) if rewards.numel() > 1 else torch.zeros(())
        advantages = advantages / (std + eps)
    advantages = torch.nan_to_num(advantages.reshape(-1), nan=0.0)
    return advantages.clamp(-1.0, 1.0) if no_mean_for_same_reward else advantages


def within_group_std(rewards: torch.Tensor, num_generations: int) -> float:
    """MMR1's `reward_std`: the mean over groups of the unbiased within-group std of `rewards` `(N,)`.

    NaN (unscorable) rewards are left out; groups with fewer than two scorable rewards do not count. Returns NaN
    when no group counts (e.g. `num_generations=1`).
    """
    grouped = rewards.view(-1, num_generations)
    if num_generations < 2:
        return float("nan")
    stds = nanstd(grouped, dim=1)
    stds = stds[torch.isfinite(stds)]
    return stds.mean().item() if stds.numel() else float("nan")


def summed_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`(N, n_funcs)` rewards -> `(N,)` weighted sum, NaN where every function returned None (TRL's rule)."""
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return total


def sequence_kl_penalty(kl_per_token: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """`beta · Σ_t KL_t · m_t` per completion: `(B, T), (B, T) -> (B,)` (verl's KL-in-reward, summed over tokens)."""
    return beta * (kl_per_token * mask.to(kl_per_token.dtype)).sum(-1)


def kl_penalty(trainer, output: dict, mode: str) -> torch.Tensor | None:
    """The hook: `(N,)` `beta · KL` of every completion of the round (all processes, CPU), or `None` when
    `kl_in_reward` is off. Logs `kl_penalty`, the mean over the round."""
    kind = trainer.args.kl_in_reward
    if kind is None:
        return None
    from mmr1kit import kl
    from mmr1kit.scale import _trainer_logps  # the policy's log-probs when TRL skipped them (on-policy rounds)

    mask = output["completion_mask"] * output.get("tool_mask", 1)
    with torch.no_grad():
        if kind == "exact":
            per_token, _ = trainer._exact_kl(trainer.model, output, None, with_grad=False)
        else:
            logps = output.get("old_per_token_logps")
            logps = _trainer_logps(trainer, output) if logps is None else logps
            per_token = kl.estimate(kind, logps, output["ref_per_token_logps"])
    penalty = trainer.accelerator.gather(sequence_kl_penalty(per_token, mask, trainer.beta)).float().cpu()
    trainer._metrics[mode]["kl_penalty"].append(penalty.mean().item())
    return penalty


def config_error(config) -> tuple[str, str] | None:
    """`(field, message)` for an advantage setting `MMR1Trainer` cannot honour, or `None`; checked by `MMR1Config`."""
    if config.scale_rewards not in ADVANTAGE_SCALES:
        return "scale_rewards", f"expected one of {ADVANTAGE_SCALES} (or True = 'group', False = 'none')"
    if config.multi_objective_aggregation not in AGGREGATIONS:
        return "multi_objective_aggregation", f"expected one of {AGGREGATIONS}"
    if config.no_mean_for_same_reward and config.multi_objective_aggregation != "sum_then_normalize":
        return "multi_objective_aggregation", (
            "no_mean_for_same_reward needs 'sum_then_normalize' (identical groups are those of the summed reward); "
            "set no_mean_for_same_reward=False to normalise each reward first")
    if config.kl_approximator == "kimifull":
        if config.multi_objective_aggregation != "sum_then_normalize":
            return "multi_objective_aggregation", "kl_approximator='kimifull' uses A = r - mean(group) of the sum"
        if config.scale_rewards != "none" and not config.no_mean_for_same_reward:
            return "scale_rewards", (
                "kl_approximator='kimifull' uses A = r - mean(group): set scale_rewards='none' (or "
                "no_mean_for_same_reward=True, whose advantage then wins, as in MMR1)")
    if config.kl_in_reward is not None:
        if config.kl_in_reward not in KL_IN_REWARD:
            return "kl_in_reward", f"expected one of {KL_IN_REWARD} (or None: no KL in the reward)"
        if config.beta <= 0:
            return "beta", "kl_in_reward subtracts beta * KL from the reward: it needs beta > 0 (the reference model)"
        if config.multi_objective_aggregation != "sum_then_normalize":
            return "multi_objective_aggregation", (
                "kl_in_reward is subtracted from the summed reward: use 'sum_then_normalize'")
        if config.kl_in_reward == "exact" and config.use_peft:
            return "kl_in_reward", "'exact' needs a separate reference model; with use_peft use k1, k2 or k3"
    return None


def apply(trainer, output: dict, rewards_per_func: torch.Tensor, mode: str,
          penalty: torch.Tensor | None = None) -> torch.Tensor:
    """The hook `MMR1Trainer._score_round` calls after TRL scored a round.

    Logs `reward_std/within_group`; with `no_mean_for_same_reward` or a KL `penalty` replaces `output["advantages"]`
    `(B_local,)` by the advantages of `reward - penalty` (MMR1's variant when it is on), and TRL's logged copy, so
    completion tables show what trained.

    Args:
        trainer (`MMR1Trainer`): The trainer (reads its config, weights, group sizes and process index).
        output (`dict`): What TRL's `_generate_and_score_completions` returned; edited in place.
        rewards_per_func (`torch.Tensor` of shape `(N, n_funcs)`): This round's rewards, all processes (the value
            TRL's `_calculate_rewards` returned).
        mode (`str`): `"train"` or `"eval"`.
        penalty (`torch.Tensor` of shape `(N,)`, *optional*): `kl_penalty`'s `beta · KL` per completion.

    Returns:
        `torch.Tensor` of shape `(N,)`: the advantages the loss uses, all processes, in TRL's order.
    """
    G = trainer.num_generations if mode == "train" else trainer.num_generations_eval
    total = summed_rewards(rewards_per_func, trainer.reward_weights)
    spread = within_group_std(total, G)
    if not math.isnan(spread):
        trainer._metrics[mode]["reward_std/within_group"].append(spread)
    n_total = total.numel()
    logged = trainer._logs["advantages"]  # TRL appended this round's N advantages last
    no_mean = trainer.args.no_mean_for_same_reward
    if not no_mean and penalty is None:
        return torch.tensor(list(logged)[-n_total:])
    total = total.cpu() - (penalty if penalty is not None else 0.0)
    advantages = group_advantages(total, G, scale=trainer.scale_rewards, no_mean_for_same_reward=no_mean)
    n_local = output["advantages"].size(0)
    start = trainer.accelerator.process_index * n_local
    output["advantages"] = advantages[start : start + n_local].to(output["advantages"])
    for _ in range(n_total):
        logged.pop()
    logged.extend(advantages.tolist())
    return advantages
