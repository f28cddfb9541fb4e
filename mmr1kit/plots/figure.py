"""The figure class every plot returns, and the axis helpers the plot modules share."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

NOT_LOGGED = "not logged"


class _Figure(Figure):
    """A plain `Figure` that IPython can render without pyplot's inline backend being loaded."""

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


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


def _legend(ax, **kw) -> None:
    if any(not str(h.get_label()).startswith("_") for h in ax.get_lines() + ax.collections):
        ax.legend(fontsize="small", **kw)


def _finish(fig: Figure, title) -> Figure:
    if title:
        fig.suptitle(title)
    return fig


def _is_number(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _fmt_group(g) -> str:
    return str(int(float(g))) if _is_number(g) and float(g).is_integer() else str(g)
