"""Metric curves of training runs: rewards, KL estimators, entropy, temperature, lengths and step timing.

Runs are given as one data frame (from `metrics.jsonl`, with a `step` column or a `step` index) or as a dict
`{label: data_frame}`; several runs are overlaid, one colour per run, and the labels form the legend. Metrics that a
run did not log, or logged only at some steps (NaN elsewhere), are handled: missing points are skipped and a panel
whose metric no run logged says "not logged".
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmr1kit.plots.figure import _finish, _grid, _legend, _not_logged

KL_KEYS = ("kl/k1", "kl/k2", "kl/k3", "kl/exact", "kl")
_KL_STYLE = {
    "kl/k1": {"color": "C0", "lw": 1.2},
    "kl/k2": {"color": "C1", "lw": 1.2},
    "kl/k3": {"color": "C2", "lw": 1.2},
    "kl/exact": {"color": "black", "lw": 2.0},
    "kl": {"color": "0.45", "lw": 1.0, "ls": "--"},
}
TIMING_ORDER = ("timing/generate", "timing/score", "timing/ref", "timing/policy", "timing/record")
TIMING_PARTS = ("timing/generate_wasted",)  # a part of another phase (timing/generate), never stacked on top of it


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


def _line(ax, x, y, *, smooth_window=0, show_raw=True, label=None, **style):
    """Raw values as a faint line and the smoothed values as a solid one (or just the raw line when not smoothing)."""
    label = "_nolegend_" if label is None else label  # a single unlabelled run needs no legend entry
    if smooth_window and smooth_window > 1:
        if show_raw:
            ax.plot(x, y, alpha=0.25, lw=0.8, color=style.get("color"), label="_raw")
        return ax.plot(x, smooth(y, smooth_window).to_numpy(), label=label, **style)[0]
    return ax.plot(x, y, label=label, **style)[0]


def _run_lines(runs: Mapping, panels, *, smooth_window: int, show_raw: bool) -> None:
    """For each run (colour `C<i>`) and each `(key, linestyle, axes)` of `panels`: the key's line, when logged."""
    for i, (label, df) in enumerate(runs.items()):
        name = "" if label is None else f"{label}: "
        for key, ls, target in panels:
            x, y = _xy(df, key, label)
            if x.size:
                _line(target, x, y, smooth_window=smooth_window, show_raw=show_raw, label=f"{name}{key}",
                      color=f"C{i % 10}", ls=ls)


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
    _run_lines(runs, (("entropy", "-", ax), ("entropy/ref", "--", ax), ("entropy/ref_delta", "-", ax_delta)),
               smooth_window=smooth_window, show_raw=show_raw)
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
            ax.plot(x, y, color=f"C{i % 10}", label="_nolegend_" if label is None else label)
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
    _run_lines(runs, (("completions/mean_length", "-", ax), ("completions/clipped_ratio", "--", twin)),
               smooth_window=smooth_window, show_raw=show_raw)
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
    `timing/record`, then any other `timing/*` but the parts of a phase, `TIMING_PARTS`); a phase missing at a step
    counts as 0 there, and steps with no timing at all are left out. The gap between the stack and `step_time` is time no phase accounts for.

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
        cols += sorted(c for c in map(str, run.columns)
                       if c.startswith("timing/") and c not in cols and c not in TIMING_PARTS)
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
