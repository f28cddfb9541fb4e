"""Metric curves of training runs: any logged metric per step, and the rewards with their std bands.

Runs are given as one data frame (from `metrics.jsonl`, with a `step` column or a `step` index) or as a dict
`{label: data_frame}`; several runs are overlaid, one colour per run, and the labels form the legend. Metrics that a
run did not log, or logged only at some steps (NaN elsewhere), are handled: missing points are skipped and a panel
whose metric no run logged says "not logged". Titles, axis labels and units come from `mmr1kit.plots.labels`;
schedules and timings are never smoothed.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from mmr1kit.plots.figure import _finish, _grid, _not_logged
from mmr1kit.plots.labels import STEP_LABEL, metric_info

BAND_LABEL = "±1 std over the step's completions"

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
        return {None if label is None else str(label): df for label, df in runs.items()}
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


def _line(ax, x, y, *, smooth_window=0, show_raw=True, label=None, **style):
    """Raw values as a faint line and the smoothed values as a solid one (or just the raw line when not smoothing)."""
    label = "_nolegend_" if label is None else label  # a single unlabelled run needs no legend entry
    if smooth_window and smooth_window > 1:
        if show_raw:
            ax.plot(x, y, alpha=0.25, lw=0.8, color=style.get("color"), label="_raw")
        return ax.plot(x, smooth(y, smooth_window).to_numpy(), label=label, **style)[0]
    return ax.plot(x, y, label=label, **style)[0]


def _step_axis(ax) -> None:
    """x axis: optimizer steps, whole numbers only."""
    ax.set_xlabel(STEP_LABEL)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _label_panel(ax, key: str) -> None:
    info = metric_info(key)
    ax.set_title(info.title, fontsize="medium")
    ax.set_ylabel(info.ylabel)


def _style_handles(smoothed: int, show_raw: bool, band: bool) -> list:
    """Legend entries that explain the drawing: the smoothed line, the faint raw one, the std band."""
    handles = []
    if smoothed and smoothed > 1:
        handles.append(Line2D([], [], color="0.25", lw=1.5, label=f"mean of the last {smoothed} logged steps"))
        if show_raw:
            handles.append(Line2D([], [], color="0.25", alpha=0.3, lw=0.8, label="raw values"))
    if band:
        handles.append(Patch(color="0.25", alpha=0.15, lw=0, label=BAND_LABEL))
    return handles


def _figure_legend(axes, *, smoothed: int = 0, show_raw: bool = True, band: bool = False, **kw) -> None:
    """One legend, on the first panel with data: the runs' labels (when labelled), then what the styles mean."""
    for ax in axes:
        lines = [h for h in ax.get_lines() if not str(h.get_label()).startswith("_")]
        if not ax.get_lines():
            continue
        handles = lines + _style_handles(smoothed, show_raw, band)
        if handles:
            ax.legend(handles=handles, fontsize="small", **kw)
        return


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


def plot_metrics(runs, keys, *, smooth_window: int = 0, title=None, ncols: int = 3, show_raw: bool = True) -> Figure:
    """One panel per metric, step on the x axis, runs overlaid.

    Each panel is titled and labelled from `mmr1kit.plots.labels.metric_info` (readable title, y label with its
    unit). Schedules and timings (`learning_rate`, `temperature`, `step_time`, `timing/*`, ...) are drawn as logged
    whatever `smooth_window` says.

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
        `show_raw`. The legend (first panel with data) names the runs and, when smoothing, the two line styles.
    """
    runs = _as_runs(runs)
    keys = _expand_keys(keys, runs)
    if not keys:
        raise ValueError("plot_metrics: keys is empty")
    fig, axes = _grid(len(keys), ncols)
    smoothed = 0
    for ax, key in zip(axes, keys):
        _label_panel(ax, key)
        if not _has(runs, key):
            _not_logged(ax)
            continue
        info = metric_info(key)
        window = smooth_window if info.smooth else 0
        smoothed = max(smoothed, window or 0)
        for i, (label, df) in enumerate(runs.items()):
            x, y = _xy(df, key, label)
            if x.size:
                _line(ax, x, y, smooth_window=window, show_raw=show_raw, label=label, color=f"C{i % 10}")
        _step_axis(ax)
        if info.bounds is not None:  # a fraction's axis does not run below 0 or above 1
            low, high = ax.get_ylim()
            margin = 0.02 * (info.bounds[1] - info.bounds[0])
            ax.set_ylim(max(low, info.bounds[0] - margin), min(high, info.bounds[1] + margin))
    _figure_legend(axes, smoothed=smoothed, show_raw=show_raw)
    return _finish(fig, title)


def _reward_bounds(key: str, bounds: Mapping | None) -> tuple[float, float] | None:
    """The range of a reward metric: `bounds[key]`, else the documented range of a known reward function."""
    if bounds and key in bounds:
        return tuple(bounds[key])
    match = re.fullmatch(r"rewards/(.+)/mean", key)
    if match:
        from mmr1kit.rewards import ALIASES, REWARD_RANGES

        return REWARD_RANGES.get(ALIASES.get(match.group(1), match.group(1)))
    return None


def plot_rewards(
    runs, *, smooth_window: int = 0, title=None, ncols: int = 3, show_raw: bool = True, show_std: bool = True,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> Figure:
    """Total reward and every reward function's mean, one panel each, with a ±std band clipped to the reward's range.

    Reads `reward` (band from `reward_std`) and every `rewards/<func>/mean` column (band from `rewards/<func>/std`).
    In TRL 1.16 both stds are taken over all completions of the step, not within groups. With smoothing, the band
    is drawn around the smoothed mean with the smoothed std. A reward lies in a known range (e.g. [0, 1] for
    `accuracy`), so mean ± std is clipped to it and the y axis shows the whole range.

    Args:
        runs (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            As in [`plot_metrics`].
        smooth_window, title, ncols, show_raw:
            As in [`plot_metrics`].
        show_std (`bool`, defaults to `True`):
            Shade mean ± std where the std column is logged.
        bounds (`Mapping[str, tuple[float, float]]`, *optional*):
            The range of each metric key, e.g. `mmr1kit.plots.reward_bounds(run.config)` (which also knows the
            total's range from the weights). Without it, each function in `mmr1kit.rewards.REWARD_RANGES` gets its
            documented range and the total none (its range depends on the weights).

    Returns:
        `Figure` with one axes for `reward` and one per reward function.
    """
    runs = _as_runs(runs)
    funcs = sorted({str(c) for df in runs.values() for c in df.columns if re.fullmatch(r"rewards/.+/mean", str(c))})
    fig = plot_metrics(
        runs, ["reward", *funcs], smooth_window=smooth_window, title=title, ncols=ncols, show_raw=show_raw
    )
    band = False
    for ax, key in zip(fig.axes, ["reward", *funcs]):
        limits = _reward_bounds(key, bounds)
        if limits is not None and ax.get_lines():
            margin = 0.05 * (limits[1] - limits[0])
            ax.set_ylim(limits[0] - margin, limits[1] + margin)
        std_key = "reward_std" if key == "reward" else key[: -len("mean")] + "std"
        for i, (label, df) in enumerate(runs.items()):
            if not show_std or key not in df.columns or std_key not in df.columns:
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
            low, high = m - s, m + s
            if limits is not None:
                low, high = np.clip(low, *limits), np.clip(high, *limits)
            ax.fill_between(x, low, high, color=f"C{i % 10}", alpha=0.15, lw=0, label="_std")
            band = True
    for ax in fig.axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    _figure_legend(fig.axes, smoothed=smooth_window, show_raw=show_raw, band=band)
    return fig
