"""Figures of the objective lab (`mmr1kit.replay.ReplayResult`): one batch, several objectives.

- `plot_token_weights`: each variant's per-token weight over the completions' text (heat maps);
- `plot_length_bias`: how much weight a completion gets against its length;
- `plot_estimators_vs_exact`: k1 / k2 / k3 against the exact KL on the same tokens (bias and spread);
- `plot_gradient_cosine`: the cosine similarity between the variants' gradients.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from mmr1kit.plots.figure import _finish, _grid, _legend, _not_logged

PUSH = "RdBu"  # blue: the step raises the token's log-prob (negative d loss / d logp), red: it lowers it


def _labels(result, labels) -> list[str]:
    known = list(result.variants["label"])
    if labels is None:
        return known
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"unknown variant label(s) {unknown}; the replay has {known}")
    return list(labels)


def plot_token_weights(result, labels=None, *, max_completions: int = 8, max_tokens: int = 48, ncols: int = 2,
                       title="Per-token weight d loss / d logp (each panel scaled to its largest |weight|)") -> Figure:
    """Heat maps of `result.token_weights[label]` `(N, T)` over the completion tokens, one panel per variant.

    Rows are the completions with the largest |advantage| first (up to `max_completions`), each labelled with its
    advantage and length; cells carry the token's text. Colour is `-weight / max|weight|` of the panel: blue where
    a descent step raises the token's log-prob, red where it lowers it.
    """
    labels = _labels(result, labels)
    order = np.argsort(-np.abs(result.advantages), kind="stable")[:max_completions]
    T = min(result.mask.shape[1], max_tokens)
    fig, axes = _grid(len(labels), ncols, panel=(0.42 * T + 1.6, 0.32 * len(order) + 1.0))
    for ax, label in zip(axes, labels):
        push = -result.token_weights[label][order, :T]
        scale = float(np.abs(push).max()) or 1.0
        shown = np.where(result.mask[order, :T] > 0, push / scale, np.nan)
        ax.imshow(shown, cmap=PUSH, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
        for r, i in enumerate(order):
            for t, text in enumerate(result.tokens[i][:T]):
                ax.text(t, r, text.strip()[:6] or "␣", ha="center", va="center", fontsize=6,
                        color="white" if abs(shown[r, t]) > 0.6 else "black")
        ax.set_yticks(range(len(order)),
                      [f"A={result.advantages[i]:+.2f} n={int(result.mask[i].sum())}" for i in order], fontsize=7)
        ax.set_xticks(range(0, T, max(1, T // 8)))
        ax.set_xlabel("token position")
        ax.set_title(f"{label}  (max |w| {scale:.2g})", fontsize=9)
    return _finish(fig, title)


def plot_length_bias(result, labels=None, *, title="Weight per unit of advantage against completion length") -> Figure:
    """Per completion with a non-zero advantage: its total |weight| / |advantage| (left) and its mean |weight| per
    token / |advantage| (right) against its length; dots are completions, lines the mean per length. Each variant is
    divided by its own mean so that shapes compare: flat on the left means every completion pushes alike whatever its
    length (`grpo`'s per-sequence mean); rising means long completions weigh more (`dapo`, `dr_grpo`)."""
    labels = _labels(result, labels)
    df = result.completions
    fig, axes = _grid(2, 2, panel=(5.0, 3.6))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    for label in labels:
        rows = df[(df["label"] == label) & (df["length"] > 0) & (df["advantage"].abs() > 1e-6)]
        lengths = rows["length"].to_numpy()
        total = rows["weight_abs_sum"].to_numpy() / rows["advantage"].abs().to_numpy()
        for ax, values in zip(axes, (total, total / np.maximum(lengths, 1))):
            if not values.mean() > 0:
                continue
            values = values / values.mean()
            ax.scatter(lengths, values, s=8, alpha=0.4, color=colors[label])
            at = np.unique(lengths)
            ax.plot(at, [values[lengths == n].mean() for n in at], marker="o", ms=3, lw=1, color=colors[label],
                    label=label)
    for ax, what in zip(axes, ("sum of |weight| / |advantage|", "mean |weight| per token / |advantage|")):
        ax.set_xlabel("completion length (tokens)")
        ax.set_ylabel(f"{what}\n/ variant mean", fontsize=8)
        if not ax.get_lines():
            _not_logged(ax, "no completion with a non-zero advantage and weight")
    _legend(axes[0], loc="best")
    return _finish(fig, title)


def plot_estimators_vs_exact(result, *, title="KL estimators against the exact KL, same tokens") -> Figure:
    """One panel per estimator (k1, k2, k3): its per-token value against the exact per-token KL at the capsule's
    weights, with the identity line; the panel's title gives the bias (mean of estimator - exact) and the spread
    (standard deviation of estimator - exact) over the completion tokens."""
    names = [name for name in ("k1", "k2", "k3") if name in result.estimators]
    fig, axes = _grid(max(len(names), 1), 3, panel=(3.8, 3.6))
    if not names:
        _not_logged(axes[0], "no reference log-probs in the capsule")
        return _finish(fig, title)
    mask = result.mask > 0
    exact = result.estimators["exact"][mask]
    for ax, name in zip(axes, names):
        values = result.estimators[name][mask]
        diff = values - exact
        ax.scatter(exact, values, s=6, alpha=0.6)
        lo, hi = float(min(exact.min(), values.min())), float(max(exact.max(), values.max()))
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--", label="estimator = exact")
        ax.set_title(f"{name}: bias {diff.mean():+.3g}, spread {diff.std():.3g}", fontsize=9)
        ax.set_xlabel("exact KL per token")
        ax.set_ylabel(f"{name} per token")
    _legend(axes[0], loc="upper left")
    return _finish(fig, title)


def plot_gradient_cosine(result, *, title="Cosine similarity between the variants' gradients") -> Figure:
    """The `(V, V)` matrix `result.cosine`, values written in the cells."""
    matrix = result.cosine.to_numpy()
    n = len(matrix)
    fig, axes = _grid(1, 1, panel=(0.55 * n + 4.0, 0.45 * n + 1.5))
    ax = axes[0]
    low = float(matrix.min())  # the colour range spans the matrix: near-1 similarities still read apart
    image = ax.imshow(matrix, cmap="viridis", vmin=low if low < 1 else 0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=6,
                    color="white" if matrix[i, j] < 0.5 * (1 + low) else "black")
    ax.set_xticks(range(n), [f"v{i + 1}" for i in range(n)])
    ax.set_yticks(range(n), [f"v{i + 1} {label}" for i, label in enumerate(result.cosine.index)], fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _finish(fig, title)
