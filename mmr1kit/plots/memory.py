"""Peak memory per phase of each optimizer step (`memory/peak_*`, logged by `mmr1kit.phases`)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mmr1kit.plots.curves import _as_runs, _xy
from mmr1kit.plots.figure import _finish, _grid, _not_logged

MEMORY_ORDER = ("memory/peak_generate", "memory/peak_reference", "memory/peak_rollout", "memory/peak_loss",
                "memory/peak_optimizer")


def plot_memory(df, *, title=None, ncols: int = 2, budget_gib: float | None = None) -> Figure:
    """The highest memory each phase reached, per optimizer step, with `memory/peak` (the step's highest) in black.

    On a GPU the figures are the CUDA allocator's peak of tensor bytes; on the CPU the process's resident set peak
    (libraries included), so CPU curves sit on a plateau of a gigabyte or so.

    Args:
        df (`pd.DataFrame` or `dict[str, pd.DataFrame]`):
            One run's metrics, or `{label: metrics}` for one panel per run.
        title, ncols:
            As in [`plot_metrics`].
        budget_gib (`float`, *optional*):
            Draw the GPU's memory as a dashed line (e.g. the `--gpu-mem` of `mmr1kit plan`).

    Returns:
        `Figure` with one axes per run.
    """
    runs = _as_runs(df)
    fig, axes = _grid(len(runs), ncols, panel=(6.0, 3.4))
    for ax, (label, run) in zip(axes, runs.items()):
        ax.set_title("peak memory per phase" if label is None else f"peak memory — {label}", fontsize="medium")
        keys = [k for k in MEMORY_ORDER if k in run.columns]
        keys += sorted(c for c in map(str, run.columns) if c.startswith("memory/peak_") and c not in keys)
        drawn = 0
        for j, key in enumerate(keys):
            x, y = _xy(run, key, label)
            if x.size:
                ax.plot(x, y, marker="o", ms=3, lw=1.2, color=f"C{j % 10}", label=key.removeprefix("memory/peak_"))
                drawn += 1
        x, y = _xy(run, "memory/peak", label)
        if x.size:
            ax.plot(x, y, color="black", lw=1.6, label="step peak")
            drawn += 1
        if not drawn:
            _not_logged(ax)
            continue
        if budget_gib is not None:
            ax.axhline(budget_gib, color="0.3", ls="--", lw=1.0, label=f"GPU {budget_gib:g} GiB")
        low = min(np.nanmin(line.get_ydata()) for line in ax.get_lines())
        ax.set_ylim(bottom=max(0.0, 0.9 * low))
        ax.set_xlabel("step")
        ax.set_ylabel("GiB")
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _finish(fig, title)
