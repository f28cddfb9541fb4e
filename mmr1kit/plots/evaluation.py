"""Evaluation and sweep figures: accuracy per group and checkpoint, and a swept parameter against a metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmr1kit.plots.figure import _Figure, _finish, _fmt_group, _is_number, _not_logged
from mmr1kit.plots.labels import metric_info

GROUP_LABELS = {"count": "true count", "label": "class", "task": "task", "difficulty": "difficulty"}


def plot_accuracy_by_group(
    eval_df: pd.DataFrame, group: str = "count", label_col: str = "label", correct_col: str = "correct", *, title=None
) -> Figure:
    """Accuracy per group (e.g. per true count) as grouped bars, one colour per label (checkpoint).

    Each bar's height is the mean of `correct_col` over the rows of that group and label; a missing (NaN) correct
    value counts as wrong. Each bar is annotated with its number of rows `n`, and the legend gives each label's
    overall accuracy. A group that a label has no rows for gets a NaN-height (invisible) bar annotated `n=0`, so
    there are always `n_groups * n_labels` bars.

    Args:
        eval_df (`pd.DataFrame`):
            Per-example records, e.g. `id, count, prediction, correct, label`.
        group (`str`, defaults to `"count"`):
            Column to group by (sorted numerically when numeric).
        label_col (`str`, defaults to `"label"`):
            Column naming the model/checkpoint ("warm start", "after GRPO"); labels keep their order of first
            appearance. When the column is absent, all rows form one label.
        correct_col (`str`, defaults to `"correct"`):
            Boolean column.

    Returns:
        `Figure` with one axes; `ax.containers` holds one `BarContainer` per label.
    """
    missing = [c for c in (group, correct_col) if c not in eval_df.columns]
    if missing:
        raise ValueError(
            f"plot_accuracy_by_group: eval_df has no column(s) {missing}; columns: {sorted(map(str, eval_df.columns))}"
        )
    df = pd.DataFrame(
        {
            "group": eval_df[group].to_numpy(),
            "label": eval_df[label_col].astype(str).to_numpy() if label_col in eval_df.columns else "all",
            "correct": eval_df[correct_col].astype("boolean").fillna(False).astype(bool).to_numpy(dtype=float),
        }
    )
    df = df[df["group"].notna()]
    groups = sorted(df["group"].unique(), key=lambda g: (0, float(g), "") if _is_number(g) else (1, 0.0, str(g)))
    labels = list(dict.fromkeys(df["label"]))
    fig_width = max(4.0, 1.0 + 0.45 * len(groups) * max(len(labels), 1)) + 3.0  # + room for the legend on the right
    fig = _Figure(figsize=(fig_width, 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(labels), 1)
    centers = np.arange(len(groups), dtype=float)
    for j, lab in enumerate(labels):
        sub = df[df["label"] == lab]
        stats = sub.groupby("group")["correct"].agg(["mean", "size"])
        acc = np.array([stats["mean"].get(g, np.nan) for g in groups], dtype=float)
        n = [int(stats["size"].get(g, 0)) for g in groups]
        overall = sub["correct"].mean()
        bars = ax.bar(
            centers + (j - (len(labels) - 1) / 2) * width,
            acc,
            width=width,
            color=f"C{j % 10}",
            label=f"{lab} (overall {overall:.1%}, n={len(sub)})",
        )
        ax.bar_label(bars, labels=[f"n={k}" if k else "" for k in n], fontsize=7, padding=1)
        for rect, k in zip(bars, n):
            if not k:  # bar_label skips NaN heights; mark the empty slot at the baseline
                ax.annotate(
                    "n=0",
                    (rect.get_x() + rect.get_width() / 2, 0),
                    xytext=(0, 1),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="0.5",
                )
    ax.set_xticks(centers, [_fmt_group(g) for g in groups])
    ax.set_xlabel(GROUP_LABELS.get(group, group.replace("_", " ")))
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_ylim(0, 1.15)
    ax.set_yticks(np.linspace(0, 1, 6))
    if labels:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        _not_logged(ax, "no rows")
    if title is None:
        title = f"Accuracy by {GROUP_LABELS.get(group, group.replace('_', ' '))}"
    ax.set_title(title, fontsize="medium")
    return fig


def plot_sweep(
    summary_df: pd.DataFrame, param: str, metric: str, *, seed_col: str = "seed", title=None, logx: bool | None = None
) -> Figure:
    """A swept parameter against a metric: one point per run (coloured by seed), and mean ± std per value.

    Rows whose `metric` is NaN (e.g. failed runs) are left out. The std is the sample std (`ddof=1`) across the
    runs that share a value, 0 when there is only one. Numeric parameters are placed on a numeric x axis (log
    scale by default when all values are positive and span at least two decades) with the means connected;
    other parameters are placed at evenly spaced categories in order of first appearance.

    Args:
        summary_df (`pd.DataFrame`):
            One row per run, with columns `param`, `metric` and optionally `seed_col`.
        param (`str`), metric (`str`):
            Column names.
        seed_col (`str`, defaults to `"seed"`):
            One scatter (one legend entry) per seed when this column exists.
        logx (`bool`, *optional*):
            Force or forbid a log x axis.

    Returns:
        `Figure` with one axes: one scatter per seed and one errorbar container for the means.
    """
    missing = [c for c in (param, metric) if c not in summary_df.columns]
    if missing:
        raise ValueError(
            f"plot_sweep: summary_df has no column(s) {missing}; columns: {sorted(map(str, summary_df.columns))}"
        )
    df = summary_df.copy()
    df["_y"] = pd.to_numeric(df[metric], errors="coerce")
    df = df[np.isfinite(df["_y"].to_numpy(dtype=float, na_value=np.nan)) & df[param].notna()]
    fig = _Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    info = metric_info(metric)
    ax.set_xlabel(param)  # the config field that was swept, as the researcher set it
    ax.set_ylabel(info.ylabel)
    ax.set_title(title or f"{info.title} by {param}", fontsize="medium")
    if df.empty:
        _not_logged(ax, f"no finite {metric}")
        return fig
    numeric = all(_is_number(v) and not isinstance(v, (str, bool)) for v in df[param])
    values = sorted(df[param].unique(), key=float) if numeric else list(dict.fromkeys(df[param]))
    pos = {v: (float(v) if numeric else float(i)) for i, v in enumerate(values)}
    df["_x"] = df[param].map(pos).astype(float)
    seeds = list(dict.fromkeys(df[seed_col])) if seed_col in df.columns else [None]
    for k, seed in enumerate(seeds):
        sub = df if seed is None else df[df[seed_col] == seed]
        ax.scatter(
            sub["_x"],
            sub["_y"],
            s=18,
            alpha=0.7,
            color=f"C{k % 10}",
            label="runs" if seed is None else f"{seed_col} {seed}",
        )
    stats = df.groupby("_x")["_y"].agg(["mean", "std"]).sort_index()
    ax.errorbar(
        stats.index.to_numpy(),
        stats["mean"].to_numpy(),
        yerr=stats["std"].fillna(0.0).to_numpy(),
        color="black",
        lw=1.5 if numeric else 0,
        marker="D",
        ms=5,
        capsize=4,
        label="mean ± std",
    )
    if logx is None:
        xs = np.array([pos[v] for v in values])
        logx = numeric and (xs > 0).all() and xs.max() / xs.min() >= 100
    if logx:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks([pos[v] for v in values], [str(v) for v in values])
    ax.legend(fontsize="small")
    return fig


def _row_label(key) -> str:
    return " · ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def plot_outcomes(table: pd.DataFrame, *, title=None) -> Figure:
    """Correct / wrong / no answer as stacked horizontal bars, one bar per row of `table`, with the accuracy's
    interval as an error bar at the end of the correct segment.

    Args:
        table (`pd.DataFrame`):
            `mmr1kit.evaluate_stats.outcome_table` output: index = model (or `(model, prompt)`), columns `n`,
            `correct`, `wrong`, `no_answer`, `accuracy`, `accuracy_low`, `accuracy_high`.

    Returns:
        `Figure` with one axes; `ax.containers` holds the three `BarContainer`s (correct, wrong, no answer) and the
        error bar.
    """
    missing = [c for c in ("n", "correct", "wrong", "no_answer", "accuracy_low", "accuracy_high") if c not in table]
    if missing:
        raise ValueError(f"plot_outcomes: table has no column(s) {missing}; expected an outcome_table")
    labels = [_row_label(k) for k in table.index][::-1]  # first row on top
    rows = table.iloc[::-1]
    n = rows["n"].to_numpy(dtype=float)
    fig = _Figure(figsize=(7.5, 1.0 + 0.45 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows), dtype=float)
    left = np.zeros(len(rows))
    for column, color, name in (("correct", "tab:green", "correct"), ("wrong", "tab:red", "wrong answer"),
                                ("no_answer", "0.7", "no answer found")):
        share = rows[column].to_numpy(dtype=float) / np.maximum(n, 1)
        ax.barh(y, share, left=left, color=color, height=0.6, label=name)
        left += share
    acc = rows["correct"].to_numpy(dtype=float) / np.maximum(n, 1)
    err = np.vstack([acc - rows["accuracy_low"].to_numpy(dtype=float), rows["accuracy_high"].to_numpy(dtype=float) - acc])
    ax.errorbar(acc, y, xerr=np.clip(err, 0, None), fmt="none", ecolor="black", capsize=3, lw=1,
                label="accuracy, 95% interval")
    for yi, a, lo, hi, k in zip(y, acc, rows["accuracy_low"], rows["accuracy_high"], n):
        ax.text(1.01, yi, f"{a:.1%} [{lo:.1%}, {hi:.1%}] n={int(k)}", va="center", fontsize=7,
                transform=ax.get_yaxis_transform())
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of examples")
    ax.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=4, frameon=False)
    return _finish(fig, title)


def plot_paired_differences(comparisons, *, title=None) -> Figure:
    """Accuracy differences of paired comparisons with their intervals (a forest plot), McNemar's p beside each.

    Args:
        comparisons: `mmr1kit.evaluate_stats.comparison_table` output (columns `a`, `b`, `difference`, `low`,
            `high`, `p_value`) or a list of `PairedComparison`.

    Returns:
        `Figure` with one axes: one error bar per comparison (blue when p < 0.05, grey otherwise) and a line at 0.
    """
    if not isinstance(comparisons, pd.DataFrame):
        from dataclasses import asdict

        comparisons = pd.DataFrame([asdict(c) for c in comparisons])
    missing = [c for c in ("a", "b", "difference", "low", "high", "p_value") if c not in comparisons]
    if missing:
        raise ValueError(f"plot_paired_differences: comparisons have no column(s) {missing}")
    rows = comparisons.iloc[::-1].reset_index(drop=True)
    fig = _Figure(figsize=(7.0, 1.0 + 0.45 * max(len(rows), 1)), layout="constrained")
    ax = fig.subplots()
    ax.axvline(0, color="0.5", lw=1, ls="--")
    for i, r in rows.iterrows():
        color = "tab:blue" if r["p_value"] < 0.05 else "0.5"
        d, lo, hi = 100 * r["difference"], 100 * r["low"], 100 * r["high"]
        ax.errorbar([d], [i], xerr=[[d - lo], [hi - d]], fmt="o", color=color, capsize=3)
        ax.text(1.01, i, f"{d:+.1f} [{lo:+.1f}, {hi:+.1f}], p={r['p_value']:.2g}", va="center", fontsize=7,
                transform=ax.get_yaxis_transform())
    ax.set_yticks(range(len(rows)), [f"{r['b']} vs {r['a']}" for _, r in rows.iterrows()])
    ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
    ax.set_xlabel("accuracy difference, points (95% paired bootstrap interval)")
    if rows.empty:
        _not_logged(ax, "no comparison")
    return _finish(fig, title)
