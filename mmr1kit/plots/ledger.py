"""The prompt ledger's figure: what became of each training prompt (`mmr1kit.ledger`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mmr1kit.plots.figure import _Figure, _finish, _fmt_group, _is_number, _not_logged

FATE_COLORS = {"solved from the start": "#4c9f70", "learned": "#2f6fb0", "forgotten": "#e08a2c",
               "never learned": "#b84a4a"}


def plot_prompt_fates(fates: pd.DataFrame, by: str | None = None, *, title=None) -> Figure:
    """Left: prompts per fate, stacked, one bar per value of the data column `by` (one bar without it), each bar
    annotated with its number of prompts. Right: every visit's pass rate against its step, one line per prompt seen
    at least twice, coloured by fate.

    Args:
        fates (`pd.DataFrame`): `mmr1kit.ledger.prompt_fates` of a run.
        by (`str`, *optional*): A data column (e.g. `"count"`, the true count); numeric values sort numerically.

    Returns:
        `Figure` with two axes; the left one's `containers` hold one `BarContainer` per fate.
    """
    from mmr1kit.ledger import FATES, fate_table

    fig = _Figure(figsize=(11.0, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1.0])
    if fates.empty:
        _not_logged(left, "no prompt ledger (prompts.jsonl)")
        _not_logged(right, "no prompt ledger (prompts.jsonl)")
        return _finish(fig, title)
    table = fate_table(fates, by)
    keys = sorted(table.index, key=lambda g: (0, float(g), "") if _is_number(g) else (1, 0.0, str(g)))
    table = table.loc[keys]
    x = np.arange(len(keys), dtype=float)
    bottom = np.zeros(len(keys))
    for fate in FATES:
        counts = table[fate].to_numpy(dtype=float)
        left.bar(x, counts, bottom=bottom, color=FATE_COLORS[fate], label=f"{fate} ({int(counts.sum())})")
        bottom += counts
    for xi, total in zip(x, bottom):
        left.annotate(f"n={int(total)}", (xi, total), xytext=(0, 1), textcoords="offset points", ha="center",
                      va="bottom", fontsize=7)
    left.set_xticks(x, [_fmt_group(k) for k in keys])
    left.set_xlabel(by or "all prompts")
    left.set_ylabel("prompts")
    left.set_ylim(0, max(bottom.max(), 1) * 1.15)
    left.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    revisited = fates[fates["visits"] >= 2]
    alpha = min(0.8, max(0.1, 8 / max(len(revisited), 1)))  # faint when there are many prompts
    for fate in FATES:
        for i, history in enumerate(revisited.loc[revisited["fate"] == fate, "history"]):
            steps, rates = zip(*history)
            right.plot(steps, rates, color=FATE_COLORS[fate], alpha=alpha, lw=1, marker=".", ms=3,
                       label=fate if i == 0 else "_")
    if revisited.empty:
        _not_logged(right, "no prompt was visited twice")
    else:
        right.legend(fontsize="small")
    right.set_xlabel("step")
    right.set_ylabel("pass rate of the visit")
    right.set_ylim(-0.05, 1.05)
    right.set_title(f"{len(revisited)} of {len(fates)} prompts visited at least twice", fontsize="small")
    return _finish(fig, title)
