"""Prompt groups of a run's rollouts: their reward statistics, and the filters the rollout browser offers.

Pure functions over the `rollouts` data frame of a run (`mmr1kit.runs.load_run(path).rollouts`, one row per
completion: `step`, `group`, `prompt_id`, `completion`, `rewards/<func>`, `reward`, `truncated`, ...):

- [`group_table`]: one row per `(step, group)` with the group's reward statistics;
- [`filter_groups`]: the groups that fail, have zero reward variance, or score below a threshold;
- [`worst_groups`]: the `n` groups with the lowest mean reward;
- [`step_overview`]: per step, how many groups each filter finds.

Filters (`kind`), with the reward each one reads when `reward` is not given:

| kind            | a group is kept when                                          | default reward              |
|-----------------|---------------------------------------------------------------|-----------------------------|
| `all`           | always                                                        | -                           |
| `failures`      | no completion scores above `threshold` (default 0)            | the first reward function   |
| `zero_variance` | all its completions have the same reward (so advantage 0)     | `reward` (the total)        |
| `below`         | its mean reward is below `threshold` (required)               | `reward` (the total)        |

The first reward function is the first `rewards/<func>` column, i.e. the first of `reward_funcs`; MMR1 lists its
accuracy reward first (`["accuracy", "answer_format"]`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KINDS = ("all", "failures", "zero_variance", "below")
KIND_LABELS = {"all": "all", "failures": "failures", "zero_variance": "zero variance", "below": "below threshold"}
FLAT = 1e-6  # rewards closer than this count as equal (zero variance)
GROUP_KEYS = ["step", "group"]


def reward_columns(rollouts: pd.DataFrame) -> list[str]:
    """The per-function reward columns (`rewards/<func>`), in logged order."""
    return [str(c) for c in rollouts.columns if str(c).startswith("rewards/")]


def reward_column(rollouts: pd.DataFrame, reward: str | None, kind: str = "all") -> str:
    """Resolve `reward` (`"iou"`, `"rewards/iou"`, `"reward"` or None for the kind's default) to a column name."""
    funcs = reward_columns(rollouts)
    if reward is None or reward == "":
        if kind == "failures" and funcs:
            return funcs[0]
        return "reward"
    for name in (reward, f"rewards/{reward}"):
        if name in rollouts.columns and (name == "reward" or name in funcs):
            return name
    valid = ["reward", *(f.removeprefix("rewards/") for f in funcs)]
    raise ValueError(f"reward={reward!r} is not logged in these rollouts; valid: {', '.join(valid)}")


def check_rollouts(rollouts: pd.DataFrame) -> None:
    """Raise a `ValueError` naming the missing columns when `rollouts` is not a run's rollouts table."""
    missing = [c for c in ("step", "group", "completion", "reward") if c not in rollouts.columns]
    if missing:
        raise ValueError(f"rollouts have no column(s) {missing}; columns: {sorted(map(str, rollouts.columns))} "
                         f"(expected the rollouts.jsonl of a run folder)")


def group_table(rollouts: pd.DataFrame, reward: str | None = None) -> pd.DataFrame:
    """One row per `(step, group)`, sorted: prompt, size and the statistics of a reward over its completions.

    Args:
        rollouts (`pd.DataFrame`): one row per completion (a run's `rollouts`).
        reward (`str`, *optional*): the reward summarized in `mean` / `std` / `min` / `max` (default: the total).

    Returns:
        `pd.DataFrame` with columns `step, group, prompt_id, n, mean, std, min, max, zero_variance, truncated` and one
        `rewards/<func>` column per function (the group's mean). `std` is the population std (TRL's `ddof=0` would
        differ only in scale); `zero_variance` is `max - min <= 1e-6`; `truncated` counts truncated completions.
    """
    check_rollouts(rollouts)
    col = reward_column(rollouts, reward)
    df = rollouts.assign(_r=pd.to_numeric(rollouts[col], errors="coerce"))
    if "prompt_id" not in df.columns:
        df = df.assign(prompt_id=None)
    if "truncated" not in df.columns:
        df = df.assign(truncated=False)
    grouped = df.groupby(GROUP_KEYS, sort=True)
    out = grouped.agg(prompt_id=("prompt_id", "first"), n=("completion", "size"), mean=("_r", "mean"),
                      std=("_r", lambda s: float(np.std(s.to_numpy(dtype=float)))), min=("_r", "min"),
                      max=("_r", "max"), truncated=("truncated", lambda s: int(s.fillna(False).astype(bool).sum())))
    out["zero_variance"] = (out["max"] - out["min"]).fillna(0.0) <= FLAT
    for func in reward_columns(rollouts):
        out[func] = grouped[func].mean()
    return out.reset_index()


def filter_groups(rollouts: pd.DataFrame, kind: str = "all", *, reward: str | None = None,
                  threshold: float | None = None, step: int | None = None) -> pd.DataFrame:
    """The groups a filter keeps (see the module docstring's table), as rows of [`group_table`].

    Args:
        rollouts (`pd.DataFrame`): one row per completion.
        kind (`str`, defaults to `"all"`): `"all"`, `"failures"`, `"zero_variance"` or `"below"`.
        reward (`str`, *optional*): reward function name (`"iou"` or `"rewards/iou"`) or `"reward"` for the total;
            defaults per kind. The returned `mean` / `std` / `min` / `max` are of this reward.
        threshold (`float`, *optional*): for `failures` (default 0.0) and `below` (required).
        step (`int`, *optional*): only groups of this step.

    Returns:
        `pd.DataFrame`: the kept rows of `group_table(rollouts, reward)`, sorted by step and group.

    Raises:
        `ValueError`: unknown `kind` or `reward`, or `kind="below"` without a threshold.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not a filter; valid: {', '.join(KINDS)}")
    if kind == "below" and threshold is None:
        raise ValueError("kind='below' needs a threshold: the groups whose mean reward is below it")
    table = group_table(rollouts, reward_column(rollouts, reward, kind))
    if step is not None:
        table = table[table["step"] == step]
    if kind == "failures":
        table = table[~(table["max"] > (0.0 if threshold is None else threshold))]
    elif kind == "zero_variance":
        table = table[table["zero_variance"]]
    elif kind == "below":
        table = table[table["mean"] < threshold]
    return table.reset_index(drop=True)


def worst_groups(rollouts: pd.DataFrame, n: int = 5, *, reward: str | None = None, kind: str = "all",
                 threshold: float | None = None, step: int | None = None) -> pd.DataFrame:
    """The `n` groups with the lowest mean reward among those `kind` keeps; ties go to the later step first.

    Args are as in [`filter_groups`]; `reward` is both the filter's and the ranking's (default per kind).

    Returns:
        `pd.DataFrame`: at most `n` rows of [`group_table`], worst first.
    """
    table = filter_groups(rollouts, kind, reward=reward, threshold=threshold, step=step)
    order = table.assign(_s=-table["step"]).sort_values(["mean", "_s", "group"], kind="stable", na_position="first")
    return order.drop(columns="_s").head(max(int(n), 0)).reset_index(drop=True)


def step_overview(rollouts: pd.DataFrame, *, reward: str | None = None, threshold: float = 0.5) -> pd.DataFrame:
    """Per step: groups, their mean total reward, and how many groups each filter keeps.

    `failures` uses its default (first reward function, nothing above 0) unless `reward` is given; `below` uses
    `threshold` on `reward` (default: the total).

    Returns:
        `pd.DataFrame` indexed by `step` with columns `groups, reward, failures, zero_variance, below`.
    """
    table = group_table(rollouts)
    out = table.groupby("step").agg(groups=("group", "size"), reward=("mean", "mean"))
    for kind in ("failures", "zero_variance", "below"):
        kept = filter_groups(rollouts, kind, reward=reward, threshold=threshold if kind == "below" else None)
        out[kind] = kept.groupby("step").size().reindex(out.index, fill_value=0)
    return out
