"""Run diagnostics per step: the KL estimators against the exact KL, entropy against the reference, the sampling
temperature, completion lengths with truncation, and where each step's time goes.

Runs are given as in `mmr1kit.plots.curves` (one data frame or `{label: data_frame}`). The temperature schedule and
the timings are drawn as logged, never smoothed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmr1kit.plots.curves import _as_runs, _figure_legend, _line, _step_axis, _steps, _style_handles, _xy
from mmr1kit.plots.figure import _finish, _grid, _not_logged
from mmr1kit.plots.labels import NATS

# estimator key -> (legend label, style); colours mean the same estimator in every panel
KL_LINES = {
    "kl/k1": ("k1 = r, r = log π/π_ref", {"color": "C0", "lw": 1.2}),
    "kl/k2": ("k2 = r²/2 (Kimi)", {"color": "C1", "lw": 1.2}),
    "kl/k3": ("k3 = exp(−r) + r − 1", {"color": "C2", "lw": 1.2}),
    "kl/exact": ("exact (full vocabulary)", {"color": "black", "lw": 2.0}),
    "kl": ("kl, as TRL logs it", {"color": "0.45", "lw": 1.0, "ls": "--"}),
}
KL_KEYS = tuple(KL_LINES)
TIMING_ORDER = ("timing/generate", "timing/score", "timing/ref", "timing/policy", "timing/record")
TIMING_PARTS = ("timing/generate_wasted",)  # a part of another phase (timing/generate), never stacked on top of it


def _run_lines(runs, panels, *, smooth_window: int, show_raw: bool) -> None:
    """For each run (colour `C<i>`) and each `(key, legend name, linestyle, axes)` of `panels`: the key's line."""
    for i, (label, df) in enumerate(runs.items()):
        for key, name, ls, target in panels:
            x, y = _xy(df, key, label)
            if x.size:
                _line(target, x, y, smooth_window=smooth_window, show_raw=show_raw,
                      label=name if label is None else f"{label}: {name}", color=f"C{i % 10}", ls=ls)


def plot_kl(runs, *, smooth_window: int = 0, title=None, show_raw: bool = True, ncols: int = 2) -> Figure:
    """KL estimators k1, k2, k3 and the exact KL on one axes per run, to see each estimator's bias and noise.

    Reads `kl/k1`, `kl/k2`, `kl/k3`, `kl/exact` (thick black) and `kl` (the value TRL logs, dashed grey) where
    logged; the legend names each estimator by its formula (`KL_LINES`). Colours mean the same estimator in every
    panel.

    Args:
        runs (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            As in `plot_metrics`; one panel per run, titled with its label.
        smooth_window, title, show_raw, ncols:
            As in `plot_metrics`.

    Returns:
        `Figure` with one axes per run and one line per logged estimator (two when smoothing with `show_raw`).
    """
    runs = _as_runs(runs)
    fig, axes = _grid(len(runs), ncols, panel=(5.0, 3.4))
    for ax, (label, df) in zip(axes, runs.items()):
        ax.set_title("KL to the reference" + ("" if label is None else f" — {label}"), fontsize="medium")
        ax.set_ylabel(f"KL ({NATS})")
        for key, (name, style) in KL_LINES.items():
            x, y = _xy(df, key, label)
            if x.size:
                _line(ax, x, y, smooth_window=smooth_window, show_raw=show_raw, label=name, **style)
        if not ax.get_lines():
            _not_logged(ax)
            continue
        _step_axis(ax)
        _figure_legend([ax], smoothed=smooth_window, show_raw=show_raw)
    return _finish(fig, title)


def plot_entropy(runs, *, smooth_window: int = 0, title=None, show_raw: bool = True) -> Figure:
    """Policy entropy against the reference model's, and their difference on a second panel.

    Left panel: `entropy` (solid) and `entropy/ref` (dashed), same colour per run. Right panel:
    `entropy/ref_delta` with a dotted zero line.

    Args:
        runs (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            As in `plot_metrics`.
        smooth_window, title, show_raw:
            As in `plot_metrics`.

    Returns:
        `Figure` with two axes.
    """
    runs = _as_runs(runs)
    fig, (ax, ax_delta) = _grid(2, 2)
    ax.set_title("Entropy: policy (solid), reference (dashed)", fontsize="medium")
    ax_delta.set_title("Entropy: policy − reference", fontsize="medium")
    _run_lines(runs, (("entropy", "policy", "-", ax), ("entropy/ref", "reference", "--", ax),
                      ("entropy/ref_delta", "policy − reference", "-", ax_delta)),
               smooth_window=smooth_window, show_raw=show_raw)
    for a, ylabel in ((ax, f"entropy ({NATS})"), (ax_delta, f"difference ({NATS})")):
        if a.get_lines():
            a.set_ylabel(ylabel)
            _step_axis(a)
            _figure_legend([a], smoothed=smooth_window, show_raw=show_raw)
        else:
            _not_logged(a)
    if ax_delta.get_lines():
        ax_delta.axhline(0.0, color="0.5", lw=0.8, ls=":", label="_zero")
    return _finish(fig, title)


def plot_temperature(runs, *, title=None) -> Figure:
    """Sampling temperature per step (`temperature`), one line per run, as logged (a schedule is never smoothed).

    Returns:
        `Figure` with one axes.
    """
    runs = _as_runs(runs)
    fig, (ax,) = _grid(1, 1, panel=(5.5, 3.2))
    ax.set_title("Sampling temperature", fontsize="medium")
    for i, (label, df) in enumerate(runs.items()):
        x, y = _xy(df, "temperature", label)
        if x.size:
            ax.plot(x, y, color=f"C{i % 10}", label="_nolegend_" if label is None else label)
    if ax.get_lines():
        ax.set_ylabel("temperature")
        _step_axis(ax)
        _figure_legend([ax])
    else:
        _not_logged(ax)
    return _finish(fig, title)


def plot_lengths(runs, *, smooth_window: int = 0, title=None, show_raw: bool = True) -> Figure:
    """Mean completion length (left axis, solid) and the truncated fraction (right axis, dashed, [0, 1]), per run.

    Reads `completions/mean_length` and `completions/clipped_ratio` (the fraction of completions cut at
    `max_completion_length`).

    Returns:
        `Figure` with two axes (the second is the twin y axis).
    """
    runs = _as_runs(runs)
    fig, (ax,) = _grid(1, 1, panel=(6.0, 3.4))
    twin = ax.twinx()
    ax.set_title("Completion length and truncation", fontsize="medium")
    ax.set_ylabel("mean length (tokens, solid)")
    twin.set_ylabel("truncated completions (fraction, dashed)")
    _run_lines(runs, (("completions/mean_length", "mean length", "-", ax),
                      ("completions/clipped_ratio", "truncated", "--", twin)),
               smooth_window=smooth_window, show_raw=show_raw)
    handles = [h for a in (ax, twin) for h in a.get_lines() if not h.get_label().startswith("_")]
    if handles:
        _step_axis(ax)
        ax.legend(handles=handles + _style_handles(smooth_window, show_raw, band=False), fontsize="small")
        if twin.get_lines():
            twin.set_ylim(-0.03, 1.03)
        else:
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
        ax.set_title("Time per step by phase" + ("" if label is None else f" — {label}"), fontsize="medium")
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
                ax.plot(sx, sy, color="black", lw=1.2, label="step time")
        _step_axis(ax)
        ax.set_ylabel("fraction of the step" if normalize else "seconds")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(fig, title)
