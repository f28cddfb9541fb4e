"""Matplotlib figures for training runs, rollouts, evaluations and sweeps.

Every function returns a [`matplotlib.figure.Figure`] and touches no pyplot state: figures are built with
`Figure(...)` and `fig.subplots(...)`, never registered with pyplot, so nothing has to be closed and a loop that
draws a hundred figures neither leaks nor warns. A returned figure displays exactly once when it is the last
expression of a notebook cell, and not at all when assigned (`fig = plot_kl(df)`; show it with `fig`). A figure made
by `plt.subplots` and returned from a function is displayed twice there (by the inline backend at the end of the
cell and again as the cell's result), which doubles every image in executed reports. The figures render as PNG in
IPython through `_repr_png_`, with or without pyplot imported. In a notebook, `save_figure(fig, path)` writes the PNG
and shows the same image in the cell, so that every saved figure is also in the report.

Runs are given as one data frame (from `metrics.jsonl`, with a `step` column or a `step` index) or as a dict
`{label: data_frame}`; several runs are overlaid, one colour per run, and the labels form the legend. Metrics that a
run did not log, or logged only at some steps (NaN elsewhere), are handled: missing points are skipped and a panel
whose metric no run logged says "not logged". Titles, axis labels with units, value ranges and which metrics may be
smoothed come from `labels.METRICS`.

Modules: `curves` (any metric per step, rewards with std bands), `diagnostics` (KL estimators, entropy, temperature,
lengths, timing), `memory` (peak memory per phase), `evaluation` (accuracy per group, outcomes with intervals, paired
differences, sweeps), `rollouts` (the rollout gallery), `ledger` (what became of each training prompt), `objective` (the objective lab's replays), `labels` (what each metric is called), `figure` (the figure
class, `save_figure` and shared axis helpers). Everything public is importable from here.
"""

from mmr1kit.plots.curves import plot_metrics, plot_rewards, smooth
from mmr1kit.plots.diagnostics import (
    KL_KEYS as KL_KEYS,
)
from mmr1kit.plots.diagnostics import (
    TIMING_ORDER as TIMING_ORDER,
)
from mmr1kit.plots.diagnostics import plot_entropy, plot_kl, plot_lengths, plot_temperature, plot_timing
from mmr1kit.plots.evaluation import plot_accuracy_by_group, plot_outcomes, plot_paired_differences, plot_sweep
from mmr1kit.plots.figure import NOT_LOGGED as NOT_LOGGED
from mmr1kit.plots.figure import _Figure as _Figure
from mmr1kit.plots.figure import save_figure
from mmr1kit.plots.labels import metric_info, reward_bounds
from mmr1kit.plots.ledger import plot_prompt_fates
from mmr1kit.plots.memory import plot_memory
from mmr1kit.plots.objective import (
    plot_estimators_vs_exact,
    plot_gradient_cosine,
    plot_length_bias,
    plot_token_weights,
)
from mmr1kit.plots.rollouts import _load_image as _load_image
from mmr1kit.plots.rollouts import rollout_gallery

__all__ = [
    "metric_info",
    "plot_accuracy_by_group",
    "plot_entropy",
    "plot_estimators_vs_exact",
    "plot_gradient_cosine",
    "plot_kl",
    "plot_length_bias",
    "plot_lengths",
    "plot_memory",
    "plot_metrics",
    "plot_outcomes",
    "plot_paired_differences",
    "plot_prompt_fates",
    "plot_rewards",
    "plot_sweep",
    "plot_temperature",
    "plot_timing",
    "reward_bounds",
    "plot_token_weights",
    "rollout_gallery",
    "save_figure",
    "smooth",
]
