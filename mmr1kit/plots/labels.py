"""What each logged metric is called on a figure: a readable title, a y-axis label with its unit, the range its values
can take (bands are clipped to it), and whether a trailing mean may smooth it.

Schedules (learning rate, temperature) and timings are drawn as logged, never smoothed: a smoothed schedule shows a
value the optimizer never used, a smoothed step time hides the slow steps. Names and meanings follow `docs/metrics.md`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

STEP_LABEL = "optimizer step"
NATS = "nats per token"


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is drawn.

    Attributes:
        title (`str`): panel title; `{name}` is the part of the key that the pattern's `*` matched.
        ylabel (`str`): y-axis label with the unit.
        smooth (`bool`): whether a trailing mean may be drawn over it (False for schedules and timings).
        bounds (`tuple[float, float]` or `None`): the values the metric can take; std bands are clipped to it.
    """

    title: str
    ylabel: str
    smooth: bool = True
    bounds: tuple[float, float] | None = None


FRACTION = (0.0, 1.0)
# key pattern (fnmatch) -> MetricInfo; the first pattern that matches wins
METRICS: dict[str, MetricInfo] = {
    "reward": MetricInfo("Total reward (weighted sum)", "reward per completion"),
    "reward_std": MetricInfo("Total reward: std over the step", "reward std"),
    "rewards/*/mean": MetricInfo("Reward: {name}", "reward per completion"),
    "rewards/*/std": MetricInfo("Reward {name}: std over the step", "reward std"),
    "frac_reward_zero_std": MetricInfo("Groups with equal rewards", "fraction of groups", bounds=FRACTION),
    "kl": MetricInfo("KL to the reference (TRL's k3)", f"KL ({NATS})"),
    "kl/exact": MetricInfo("Exact KL to the reference", f"KL ({NATS})"),
    "kl/*": MetricInfo("KL estimate {name}", f"KL ({NATS})"),
    "entropy": MetricInfo("Policy entropy", f"entropy ({NATS})"),
    "entropy/ref": MetricInfo("Reference model entropy", f"entropy ({NATS})"),
    "entropy/ref_delta": MetricInfo("Entropy: policy − reference", f"difference ({NATS})"),
    "entropy/loss": MetricInfo("Entropy term of the loss (−H)", f"−entropy ({NATS})"),
    "temperature": MetricInfo("Sampling temperature", "temperature", smooth=False),
    "learning_rate": MetricInfo("Learning rate", "learning rate", smooth=False),
    "grad_norm": MetricInfo("Gradient norm (before clipping)", "L2 norm"),
    "loss": MetricInfo("Training loss", "loss"),
    "step_time": MetricInfo("Step time", "seconds", smooth=False),
    "timing/*": MetricInfo("Time in {name}", "seconds", smooth=False),
    "tokens_per_second/*": MetricInfo("Throughput: {name}", "tokens per second", smooth=False),
    "num_tokens": MetricInfo("Tokens seen", "tokens", smooth=False),
    "epoch": MetricInfo("Epoch", "epochs", smooth=False),
    "completions/clipped_ratio": MetricInfo("Truncated completions", "fraction of completions", bounds=FRACTION),
    "completions/*_length": MetricInfo("Completion length ({name})", "tokens"),
    "clip_ratio/low_*": MetricInfo("Clipped ratios, low side ({name})", "fraction of tokens", bounds=FRACTION),
    "clip_ratio/high_*": MetricInfo("Clipped ratios, high side ({name})", "fraction of tokens", bounds=FRACTION),
    "clip_ratio/region_mean": MetricInfo("Clipped ratios, either side", "fraction of tokens", bounds=FRACTION),
    "eval/accuracy*": MetricInfo("Held-out accuracy ({name})", "accuracy (fraction correct)", bounds=FRACTION),
    "final/*": MetricInfo("Final {name}", "{name}"),
}


def metric_info(key: str) -> MetricInfo:
    """The `MetricInfo` of `key`, with `{name}` filled in; an unknown key is titled with itself."""
    key = str(key)
    for pattern, info in METRICS.items():
        if fnmatch.fnmatchcase(key, pattern):
            name = _star(pattern, key)
            if name is not None and pattern == "final/*":
                inner = metric_info(name)
                return MetricInfo(f"Final {inner.title[0].lower()}{inner.title[1:]}", inner.ylabel, inner.smooth,
                                  inner.bounds)
            fill = {"name": (name or "").strip("_").replace("_", " ")}
            if pattern in ("kl/*", "rewards/*/mean", "rewards/*/std", "timing/*", "tokens_per_second/*"):
                fill["name"] = name  # names of estimators, reward functions and phases stay as written
            return MetricInfo(info.title.format(**fill), info.ylabel.format(**fill), info.smooth, info.bounds)
    return MetricInfo(key, key)


def _star(pattern: str, key: str) -> str | None:
    """The text the single `*` of `pattern` matched in `key` (None without a `*`)."""
    if "*" not in pattern:
        return None
    head, tail = pattern.split("*", 1)
    return key[len(head) : len(key) - len(tail)]


def reward_bounds(config) -> dict[str, tuple[float, float]]:
    """The range of `reward` and of each `rewards/<name>/mean` for a run's config, for clipping std bands.

    Each function's range is its documented one (`mmr1kit.rewards.REWARD_RANGES`); the total is
    `reward_scale · Σ_k w_k r_k`, so its range is the sum of the weighted ranges. Functions whose range is not
    documented (custom callables) get none, and then neither does the total.

    Args:
        config (`Mapping` or `MMR1Config`): `reward_funcs`, and optionally `reward_weights` (default: all 1, as in
            TRL) and `reward_scale` (default 1), e.g. `load_run(path).config`.

    Returns:
        `dict[str, tuple[float, float]]`: metric key -> (low, high).
    """
    from mmr1kit.rewards import ALIASES, REWARD_RANGES

    get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
    names = [str(n) for n in (get("reward_funcs") or [])]
    weights = get("reward_weights") or [1.0] * len(names)
    scale = float(get("reward_scale", 1.0) or 1.0)
    out: dict[str, tuple[float, float]] = {}
    low = high = 0.0
    for name, weight in zip(names, weights):
        bounds = REWARD_RANGES.get(ALIASES.get(name, name))
        if bounds is not None:
            out[f"rewards/{name}/mean"] = bounds
            ends = (scale * float(weight) * bounds[0], scale * float(weight) * bounds[1])
            low, high = low + min(ends), high + max(ends)
    if names and len(out) == len(names):  # every function's range is known
        out["reward"] = (low, high)
    return out
