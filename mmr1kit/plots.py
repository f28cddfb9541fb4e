"""Matplotlib figures for training runs, rollouts, evaluations and sweeps.

Every function returns a [`matplotlib.figure.Figure`] and touches no pyplot state: figures are built with
`Figure(...)` and `fig.subplots(...)`, never registered with pyplot, so nothing has to be closed and a loop that
draws a hundred figures neither leaks nor warns. A returned figure displays exactly once when it is the last
expression of a notebook cell, and not at all when assigned (`fig = plot_kl(df)`; show it with `fig`). A figure made
by `plt.subplots` and returned from a function is displayed twice there (by the inline backend at the end of the
cell and again as the cell's result), which doubles every image in executed reports. The figures render as PNG in
IPython through `_repr_png_`, with or without pyplot imported; write them with `fig.savefig(path)`.

Runs are given as one data frame (from `metrics.jsonl`, with a `step` column or a `step` index) or as a dict
`{label: data_frame}`; several runs are overlaid, one colour per run, and the labels form the legend. Metrics that a
run did not log, or logged only at some steps (NaN elsewhere), are handled: missing points are skipped and a panel
whose metric no run logged says "not logged".
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = [
    "plot_accuracy_by_group",
    "plot_entropy",
    "plot_kl",
    "plot_lengths",
    "plot_metrics",
    "plot_rewards",
    "plot_sweep",
    "plot_temperature",
    "plot_timing",
    "rollout_gallery",
    "smooth",
]

NOT_LOGGED = "not logged"
KL_KEYS = ("kl/k1", "kl/k2", "kl/k3", "kl/exact", "kl")
_KL_STYLE = {
    "kl/k1": {"color": "C0", "lw": 1.2},
    "kl/k2": {"color": "C1", "lw": 1.2},
    "kl/k3": {"color": "C2", "lw": 1.2},
    "kl/exact": {"color": "black", "lw": 2.0},
    "kl": {"color": "0.45", "lw": 1.0, "ls": "--"},
}
TIMING_ORDER = ("timing/generate", "timing/score", "timing/ref", "timing/policy", "timing/record")
_NUM = r"[-+]?\d+(?:\.\d+)?"
_BOX_PATTERNS = (  # MMR1's extract_bbox_answer order: [a,b,c,d], (a,b,c,d), (a,b),(c,d)
    re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]"),
    re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\)"),
    re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)"),
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


# ----------------------------------------------------------------------------------------------- helpers


class _Figure(Figure):
    """A plain `Figure` that IPython can render without pyplot's inline backend being loaded."""

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def smooth(series, window: int) -> pd.Series:
    """Trailing rolling mean over the last `window` finite values, NaN-aware.

    NaN and infinite entries are skipped: they neither count toward the window nor get filled, so they stay NaN in
    the output, and a metric logged every 10th step is averaged over its last `window` logged values, not over
    `window` rows. The mean is trailing (causal: point `i` uses values `<= i`), and the first values use as many
    points as exist (`min_periods=1`), so the curve starts at the first logged value.

    Args:
        series (`pd.Series` or array-like of shape `(N,)`):
            Values in step order.
        window (`int`):
            Number of finite values to average; `0` or `1` returns the values unchanged (as floats).

    Returns:
        `pd.Series` of shape `(N,)` with the index and name of `series` when it is a Series.
    """
    if isinstance(window, bool):
        raise TypeError(f"smooth: window must be an int >= 0, got {window!r}")
    window = operator.index(window)
    if window < 0:
        raise ValueError(f"smooth: window must be >= 0, got {window}")
    s = series if isinstance(series, pd.Series) else pd.Series(np.asarray(series).ravel())
    values = pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite = np.isfinite(values)
    out = np.where(finite, values, np.nan)
    if window > 1 and finite.any():
        out[finite] = pd.Series(values[finite]).rolling(window, min_periods=1).mean().to_numpy()
    return pd.Series(out, index=s.index, name=s.name)


def _as_runs(runs) -> dict[str | None, pd.DataFrame]:
    if isinstance(runs, pd.DataFrame):
        return {None: runs}
    if isinstance(runs, Mapping):
        if not runs:
            raise ValueError("runs is an empty dict; pass a DataFrame or {label: DataFrame}")
        for label, df in runs.items():
            if not isinstance(df, pd.DataFrame):
                raise TypeError(f"runs[{label!r}] is a {type(df).__name__}, expected a pandas DataFrame")
        return {str(label): df for label, df in runs.items()}
    raise TypeError(f"runs must be a DataFrame or a dict {{label: DataFrame}}, got {type(runs).__name__}")


def _steps(df: pd.DataFrame, label) -> np.ndarray:
    if "step" in df.columns:
        steps = df["step"]
    elif df.index.name == "step":
        steps = df.index.to_series()
    else:
        where = "the run" if label is None else f"run {label!r}"
        raise ValueError(f"{where} has no 'step' column or index; columns: {sorted(map(str, df.columns))}")
    return pd.to_numeric(steps, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _xy(df: pd.DataFrame, key: str, label=None) -> tuple[np.ndarray, np.ndarray]:
    """Finite (step, value) pairs of `key`, sorted by step; empty arrays when the column is missing."""
    if key not in df.columns:
        return np.empty(0), np.empty(0)
    x = _steps(df, label)
    y = pd.to_numeric(df[key], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(x) & np.isfinite(y)
    order = np.argsort(x[ok], kind="stable")
    return x[ok][order], y[ok][order]


def _has(runs: Mapping, key: str) -> bool:
    return any(_xy(df, key, label)[0].size for label, df in runs.items())


def _grid(n: int, ncols: int, panel=(4.2, 3.0), **fig_kw) -> tuple[Figure, list]:
    n = max(n, 1)
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    fig = _Figure(figsize=(panel[0] * ncols, panel[1] * nrows), layout="constrained", **fig_kw)
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def _not_logged(ax, what: str = NOT_LOGGED) -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="0.5", style="italic")
    ax.set_xticks([])
    ax.set_yticks([])


def _line(ax, x, y, *, smooth_window=0, show_raw=True, label=None, **style):
    """Raw values as a faint line and the smoothed values as a solid one (or just the raw line when not smoothing)."""
    if smooth_window and smooth_window > 1:
        if show_raw:
            ax.plot(x, y, alpha=0.25, lw=0.8, color=style.get("color"), label="_raw")
        return ax.plot(x, smooth(y, smooth_window).to_numpy(), label=label, **style)[0]
    return ax.plot(x, y, label=label, **style)[0]


def _legend(ax, **kw) -> None:
    if any(not str(h.get_label()).startswith("_") for h in ax.get_lines() + ax.collections):
        ax.legend(fontsize="small", **kw)


def _finish(fig: Figure, title) -> Figure:
    if title:
        fig.suptitle(title)
    return fig


def _expand_keys(keys, runs: Mapping) -> list[str]:
    if isinstance(keys, str):
        keys = [keys]
    columns = sorted({str(c) for df in runs.values() for c in df.columns})
    out: list[str] = []
    for key in keys:
        matched = fnmatch.filter(columns, key) if any(ch in key for ch in "*?[") else []
        for k in matched or [key]:
            if k not in out:
                out.append(k)
    return out


# ----------------------------------------------------------------------------------------------- run curves


def plot_metrics(runs, keys, *, smooth_window: int = 0, title=None, ncols: int = 3, show_raw: bool = True) -> Figure:
    """One panel per metric, step on the x axis, runs overlaid.

    Args:
        runs (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            One run's metrics (a `step` column or index plus one column per metric) or `{label: metrics}`.
        keys (`str` or `Sequence[str]`):
            Metric columns, one panel each. Shell patterns expand against the logged columns
            (`"rewards/*/mean"`); a key or pattern that no run logged gets a panel that says "not logged".
        smooth_window (`int`, defaults to `0`):
            Width of the trailing mean from [`smooth`]; `0` draws the raw values only.
        title (`str`, *optional*):
            Figure title.
        ncols (`int`, defaults to `3`):
            Panels per row.
        show_raw (`bool`, defaults to `True`):
            When smoothing, also draw the raw values as a faint line.

    Returns:
        `Figure` with one axes per key. Per run and key: one line, or two (raw, smoothed) when smoothing with
        `show_raw`.
    """
    runs = _as_runs(runs)
    keys = _expand_keys(keys, runs)
    if not keys:
        raise ValueError("plot_metrics: keys is empty")
    fig, axes = _grid(len(keys), ncols)
    for ax, key in zip(axes, keys):
        ax.set_title(key, fontsize="medium")
        if not _has(runs, key):
            _not_logged(ax)
            continue
        for i, (label, df) in enumerate(runs.items()):
            x, y = _xy(df, key, label)
            if x.size:
                _line(ax, x, y, smooth_window=smooth_window, show_raw=show_raw, label=label, color=f"C{i % 10}")
        ax.set_xlabel("step")
    if len(runs) > 1 or next(iter(runs)) is not None:
        for ax in axes:
            if ax.get_lines():
                _legend(ax)
                break
    return _finish(fig, title)


def plot_rewards(
    runs, *, smooth_window: int = 0, title=None, ncols: int = 3, show_raw: bool = True, show_std: bool = True
) -> Figure:
    """Total reward and every reward function's mean, one panel each, with a ±std band.

    Reads `reward` (band from `reward_std`) and every `rewards/<func>/mean` column (band from `rewards/<func>/std`).
    In TRL 1.16 both stds are taken over all completions of the step, not within groups. With smoothing, the band
    is drawn around the smoothed mean with the smoothed std.

    Args:
        runs (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            As in [`plot_metrics`].
        smooth_window, title, ncols, show_raw:
            As in [`plot_metrics`].
        show_std (`bool`, defaults to `True`):
            Shade mean ± std where the std column is logged.

    Returns:
        `Figure` with one axes for `reward` and one per reward function.
    """
    runs = _as_runs(runs)
    funcs = sorted({str(c) for df in runs.values() for c in df.columns if re.fullmatch(r"rewards/.+/mean", str(c))})
    fig = plot_metrics(
        runs, ["reward", *funcs], smooth_window=smooth_window, title=title, ncols=ncols, show_raw=show_raw
    )
    if not show_std:
        return fig
    for ax, key in zip(fig.axes, ["reward", *funcs]):
        std_key = "reward_std" if key == "reward" else key[: -len("mean")] + "std"
        for i, (label, df) in enumerate(runs.items()):
            if key not in df.columns or std_key not in df.columns:
                continue
            x = _steps(df, label)
            m = pd.to_numeric(df[key], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            s = pd.to_numeric(df[std_key], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            ok = np.isfinite(x) & np.isfinite(m) & np.isfinite(s)
            if not ok.any():
                continue
            order = np.argsort(x[ok], kind="stable")
            x, m, s = x[ok][order], m[ok][order], s[ok][order]
            if smooth_window and smooth_window > 1:
                m, s = smooth(m, smooth_window).to_numpy(), smooth(s, smooth_window).to_numpy()
            ax.fill_between(x, m - s, m + s, color=f"C{i % 10}", alpha=0.15, lw=0, label="_std")
    return fig


def plot_kl(runs, *, smooth_window: int = 0, title=None, show_raw: bool = True, ncols: int = 2) -> Figure:
    """KL estimators k1, k2, k3 and the exact KL on one axes per run, to see each estimator's bias and noise.

    Reads `kl/k1`, `kl/k2`, `kl/k3`, `kl/exact` (thick black) and `kl` (the value TRL logs, dashed grey) where
    logged. Colours mean the same estimator in every panel.

    Args:
        runs (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            As in [`plot_metrics`]; one panel per run, titled with its label.
        smooth_window, title, show_raw, ncols:
            As in [`plot_metrics`].

    Returns:
        `Figure` with one axes per run and one line per logged estimator (two when smoothing with `show_raw`).
    """
    runs = _as_runs(runs)
    fig, axes = _grid(len(runs), ncols, panel=(5.0, 3.4))
    for ax, (label, df) in zip(axes, runs.items()):
        ax.set_title("KL" if label is None else f"KL — {label}", fontsize="medium")
        drawn = False
        for key in KL_KEYS:
            x, y = _xy(df, key, label)
            if x.size:
                _line(ax, x, y, smooth_window=smooth_window, show_raw=show_raw, label=key, **_KL_STYLE[key])
                drawn = True
        if not drawn:
            _not_logged(ax)
            continue
        ax.set_xlabel("step")
        _legend(ax)
    return _finish(fig, title)


def plot_entropy(runs, *, smooth_window: int = 0, title=None, show_raw: bool = True) -> Figure:
    """Policy entropy against the reference model's, and their difference on a second panel.

    Left panel: `entropy` (solid) and `entropy/ref` (dashed), same colour per run. Right panel:
    `entropy/ref_delta` with a dotted zero line.

    Args:
        runs (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            As in [`plot_metrics`].
        smooth_window, title, show_raw:
            As in [`plot_metrics`].

    Returns:
        `Figure` with two axes.
    """
    runs = _as_runs(runs)
    fig, (ax, ax_delta) = _grid(2, 2)
    ax.set_title("entropy (solid) vs entropy/ref (dashed)", fontsize="medium")
    ax_delta.set_title("entropy/ref_delta", fontsize="medium")
    for i, (label, df) in enumerate(runs.items()):
        name = "" if label is None else f"{label}: "
        for key, ls, target in (("entropy", "-", ax), ("entropy/ref", "--", ax), ("entropy/ref_delta", "-", ax_delta)):
            x, y = _xy(df, key, label)
            if x.size:
                _line(
                    target,
                    x,
                    y,
                    smooth_window=smooth_window,
                    show_raw=show_raw,
                    label=f"{name}{key}",
                    color=f"C{i % 10}",
                    ls=ls,
                )
    for a in (ax, ax_delta):
        if a.get_lines():
            a.set_xlabel("step")
            _legend(a)
        else:
            _not_logged(a)
    if ax_delta.get_lines():
        ax_delta.axhline(0.0, color="0.5", lw=0.8, ls=":", label="_zero")
    return _finish(fig, title)


def plot_temperature(runs, *, title=None) -> Figure:
    """Sampling temperature per step (`temperature`), one line per run.

    Returns:
        `Figure` with one axes.
    """
    runs = _as_runs(runs)
    fig, (ax,) = _grid(1, 1, panel=(5.5, 3.2))
    ax.set_title("temperature", fontsize="medium")
    for i, (label, df) in enumerate(runs.items()):
        x, y = _xy(df, "temperature", label)
        if x.size:
            ax.plot(x, y, color=f"C{i % 10}", label=label)
    if ax.get_lines():
        ax.set_xlabel("step")
        if len(runs) > 1 or label is not None:
            _legend(ax)
    else:
        _not_logged(ax)
    return _finish(fig, title)


def plot_lengths(runs, *, smooth_window: int = 0, title=None, show_raw: bool = True) -> Figure:
    """Mean completion length (left axis, solid) and the clipped ratio (right axis, dashed), per run.

    Reads `completions/mean_length` and `completions/clipped_ratio` (the fraction of completions cut at
    `max_completion_length`).

    Returns:
        `Figure` with two axes (the second is the twin y axis).
    """
    runs = _as_runs(runs)
    fig, (ax,) = _grid(1, 1, panel=(6.0, 3.4))
    twin = ax.twinx()
    ax.set_title("completion length", fontsize="medium")
    ax.set_ylabel("completions/mean_length")
    twin.set_ylabel("completions/clipped_ratio (dashed)")
    for i, (label, df) in enumerate(runs.items()):
        name = "" if label is None else f"{label}: "
        for key, ls, target in (("completions/mean_length", "-", ax), ("completions/clipped_ratio", "--", twin)):
            x, y = _xy(df, key, label)
            if x.size:
                _line(
                    target,
                    x,
                    y,
                    smooth_window=smooth_window,
                    show_raw=show_raw,
                    label=f"{name}{key}",
                    color=f"C{i % 10}",
                    ls=ls,
                )
    handles = [h for a in (ax, twin) for h in a.get_lines() if not h.get_label().startswith("_")]
    if handles:
        ax.set_xlabel("step")
        ax.legend(handles=handles, fontsize="small")
        if not twin.get_lines():
            twin.set_yticks([])
    else:
        _not_logged(ax)
        twin.set_yticks([])
    return _finish(fig, title)


def plot_timing(df, *, kind: str = "area", normalize: bool = False, title=None, ncols: int = 2) -> Figure:
    """Where each step's time goes: the `timing/*` columns stacked, with `step_time` as a black line.

    Columns are stacked in pipeline order (`timing/generate`, `timing/score`, `timing/ref`, `timing/policy`,
    `timing/record`, then any other `timing/*`); a phase missing at a step counts as 0 there, and steps with no
    timing at all are left out. The gap between the stack and `step_time` is time no phase accounts for.

    Args:
        df (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            One run's metrics, or `{label: metrics}` for one panel per run.
        kind (`str`, defaults to `"area"`):
            `"area"` (stackplot) or `"bar"` (one stacked bar per step).
        normalize (`bool`, defaults to `False`):
            Plot each phase's fraction of the stacked total instead of seconds (`step_time` is then not drawn).
        title, ncols:
            As in [`plot_metrics`].

    Returns:
        `Figure` with one axes per run.
    """
    if kind not in ("area", "bar"):
        raise ValueError(f"plot_timing: kind must be 'area' or 'bar', got {kind!r}")
    runs = _as_runs(df)
    fig, axes = _grid(len(runs), ncols, panel=(6.0, 3.4))
    for ax, (label, run) in zip(axes, runs.items()):
        ax.set_title("timing" if label is None else f"timing — {label}", fontsize="medium")
        cols = [c for c in TIMING_ORDER if c in run.columns]
        cols += sorted(c for c in map(str, run.columns) if c.startswith("timing/") and c not in cols)
        x = _steps(run, label)
        t = run[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float, na_value=np.nan) if cols else None
        keep = np.isfinite(x) & (np.isfinite(t).any(axis=1) if cols else False)
        if not keep.any():
            _not_logged(ax)
            continue
        order = np.argsort(x[keep], kind="stable")
        x, t = x[keep][order], np.nan_to_num(t[keep][order], nan=0.0, posinf=0.0, neginf=0.0)
        if normalize:
            total = t.sum(axis=1, keepdims=True)
            t = np.divide(t, total, out=np.zeros_like(t), where=total > 0)
        names = [c.removeprefix("timing/") for c in cols]
        if kind == "area":
            ax.stackplot(x, t.T, labels=names, alpha=0.85)
        else:
            width = 0.8 * (np.min(np.diff(np.unique(x))) if np.unique(x).size > 1 else 1.0)
            bottom = np.zeros(len(x))
            for j, name in enumerate(names):
                ax.bar(x, t[:, j], width=width, bottom=bottom, label=name, color=f"C{j % 10}")
                bottom += t[:, j]
        if not normalize and "step_time" in run.columns:
            sx, sy = _xy(run, "step_time", label)
            if sx.size:
                ax.plot(sx, sy, color="black", lw=1.2, label="step_time")
        ax.set_xlabel("step")
        ax.set_ylabel("fraction of step" if normalize else "seconds")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(fig, title)


# ----------------------------------------------------------------------------------------------- evaluation


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
    ax.set_xlabel(group)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.15)
    if labels:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        _not_logged(ax, "no rows")
    return _finish(fig, title)


def _is_number(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _fmt_group(g) -> str:
    return str(int(float(g))) if _is_number(g) and float(g).is_integer() else str(g)


# ----------------------------------------------------------------------------------------------- rollouts


def _box(value) -> list[float] | None:
    """A box `[x1, y1, x2, y2]` from a list/array, or from text with MMR1's three patterns (inside `<answer>` first)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        answer = _ANSWER.search(value)
        for text in ([answer.group(1)] if answer else []) + [value]:
            for pattern in _BOX_PATTERNS:
                m = pattern.search(text)
                if m:
                    return [float(v) for v in m.groups()]
        return None
    try:
        box = [float(v) for v in np.asarray(value, dtype=float).ravel()]
    except (TypeError, ValueError):
        return None
    return box[:4] if len(box) >= 4 and all(math.isfinite(v) for v in box[:4]) else None


def _load_image(value, image_root):
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.convert("RGB"), None
    if isinstance(value, Mapping):  # Hugging Face datasets Image feature: {"bytes": ..., "path": ...}
        if value.get("bytes"):
            import io

            return Image.open(io.BytesIO(value["bytes"])).convert("RGB"), None
        value = value.get("path")
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "":
        return None, "no image"
    path = Path(str(value))
    if image_root is not None and not path.is_absolute():
        path = Path(image_root) / path
    try:
        with Image.open(path) as im:
            return im.convert("RGB"), None
    except (OSError, ValueError) as err:
        return None, f"cannot open {path.name}: {type(err).__name__}"


def _shorten(text: str, max_chars: int) -> str:
    """Cut the middle out of `text` so that the answer at its end stays visible."""
    if len(text) <= max_chars:
        return text
    tail = min(max(max_chars // 3, 1), 48)
    return text[: max(max_chars - tail - 1, 0)] + "…" + text[-tail:]


def _fmt_value(v, signed=False) -> str:
    if _is_number(v) and not isinstance(v, str):
        return f"{float(v):+.2f}" if signed else f"{float(v):.2f}"
    return str(v)


def rollout_gallery(
    rows,
    *,
    image_root=None,
    ncols: int = 4,
    max_items: int = 8,
    reward_cols=None,
    draw_boxes: bool = True,
    box_format: str = "pixels",
    wrap: int = 30,
    max_chars: int = 150,
) -> Figure:
    """A grid of rollout images, each titled with its completion and labelled with its rewards and advantage.

    The title is the completion with whitespace collapsed, cut to `max_chars` characters by removing its middle
    (so the final answer stays visible) and wrapped to `wrap` characters, in monospace (no mathtext, so `$` is shown as is). Below each image: `step`, `prompt_id` and
    `group` when present, the rewards, `advantage`, and `length` / `truncated`. Boxes: a `gt_box` and a `pred_box`
    column (lists `[x1, y1, x2, y2]`) are used when present; otherwise the ground truth is parsed from `solution`
    and the prediction from `completion` (inside `<answer>...</answer>` first) with MMR1's patterns `[a,b,c,d]`,
    `(a,b,c,d)`, `(a,b),(c,d)`. GT is drawn green, the prediction red; a row with neither has no rectangles.

    Args:
        rows (`pd.DataFrame`, list of dicts or `pd.Series`):
            Rollouts: `image` (path, PIL image, or `{"bytes", "path"}`), `completion`, `reward`, `advantage`,
            `rewards/<func>`, optionally `step`, `prompt_id`, `group`, `solution`, `length`, `truncated`,
            `gt_box`, `pred_box`.
        image_root (`str` or `Path`, *optional*):
            Folder that relative `image` paths are relative to (default: the working directory). An image that
            cannot be opened leaves a panel that says why.
        ncols (`int`, defaults to `4`), max_items (`int`, defaults to `8`):
            Grid width and the number of rows shown (the first `max_items`).
        reward_cols (`Sequence[str]`, *optional*):
            Columns to print under each image; default `reward` and every `rewards/*` column. `advantage` is
            always added when present.
        draw_boxes (`bool`, defaults to `True`):
            Draw GT / predicted boxes.
        box_format (`str`, defaults to `"pixels"`):
            Coordinates of the boxes: `"pixels"`, `"0-1000"` (Qwen2-VL style) or `"0-1"`; scaled to the image.

    Returns:
        `Figure` with one axes per shown rollout; boxes are `Rectangle` patches (`ax.patches`).
    """
    if box_format not in ("pixels", "0-1000", "0-1"):
        raise ValueError(f"rollout_gallery: box_format must be 'pixels', '0-1000' or '0-1', got {box_format!r}")
    if isinstance(rows, pd.Series):
        rows = rows.to_frame().T
    elif not isinstance(rows, pd.DataFrame):
        rows = pd.DataFrame(list(rows))
    rows = rows.head(max(int(max_items), 0))
    if reward_cols is None:
        reward_cols = [
            c for c in ["reward", *sorted(map(str, rows.columns))] if c == "reward" or c.startswith("rewards/")
        ]
    reward_cols = [c for c in dict.fromkeys(reward_cols) if c in rows.columns]
    if "advantage" in rows.columns and "advantage" not in reward_cols:
        reward_cols.append("advantage")
    fig, axes = _grid(len(rows), ncols, panel=(3.2, 4.4))
    if rows.empty:
        _not_logged(axes[0], "no rollouts")
        return fig
    for ax, (_, row) in zip(axes, rows.iterrows()):
        image, problem = _load_image(row.get("image"), image_root)
        if image is not None:
            ax.imshow(np.asarray(image))
        else:
            ax.text(
                0.5,
                0.5,
                problem,
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="0.5",
                fontsize=8,
                wrap=True,
                parse_math=False,
            )
        ax.set_xticks([])
        ax.set_yticks([])
        completion = _shorten(" ".join(str(row.get("completion", "") or "").split()), max_chars)
        title = textwrap.fill(completion, width=wrap, break_on_hyphens=False) if completion else "(empty completion)"
        ax.set_title(title, fontsize=7, fontfamily="monospace", loc="left", parse_math=False)
        head = [
            f"{k} {_fmt_group(row[k])}" for k in ("step", "prompt_id", "group") if k in row.index and pd.notna(row[k])
        ]
        vals = [f"{c.removeprefix('rewards/')}={_fmt_value(row[c], signed=c == 'advantage')}" for c in reward_cols]
        if "length" in row.index and pd.notna(row["length"]):
            vals.append(f"len={_fmt_group(row['length'])}")
        if "truncated" in row.index and pd.notna(row["truncated"]) and bool(row["truncated"]):
            vals.append("TRUNCATED")
        lines = [" · ".join(head)] if head else []
        lines += textwrap.wrap("  ".join(vals), width=wrap + 6)
        ax.set_xlabel("\n".join(lines), fontsize=7, fontfamily="monospace", parse_math=False)
        if draw_boxes:
            _draw_boxes(ax, row, image, box_format)
    return fig


def _draw_boxes(ax, row: pd.Series, image, box_format: str) -> None:
    gt = _box(row["gt_box"]) if "gt_box" in row.index else _box(row.get("solution"))
    pred = _box(row["pred_box"]) if "pred_box" in row.index else _box(row.get("completion"))
    if gt is None and pred is None:
        return
    w, h = image.size if image is not None else (1.0, 1.0)
    scale = {"pixels": (1.0, 1.0), "0-1000": (w / 1000, h / 1000), "0-1": (w, h)}[box_format]
    for box, color, name in ((gt, "limegreen", "gt"), (pred, "red", "pred")):
        if box is None:
            continue
        x1, y1, x2, y2 = box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=2, label=name))
    if image is not None:
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    else:
        ax.autoscale_view()
        if not ax.yaxis_inverted():
            ax.invert_yaxis()


# ----------------------------------------------------------------------------------------------- sweeps


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
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    if df.empty:
        _not_logged(ax, f"no finite {metric}")
        return _finish(fig, title)
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
    return _finish(fig, title)
