"""The figure class every plot returns, and the axis helpers the plot modules share."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

NOT_LOGGED = "not logged"


def png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    """`fig` as PNG bytes (tight bounding box).

    A character that no installed font has is drawn as a box, and matplotlib warns once per glyph ("Glyph 27 missing
    from font(s)"); the box already says it, so the warning stays out of reports. Control characters never get here:
    the galleries write them as `\\xNN` (`mmr1kit.plots.rollouts.printable`).
    """
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
        fig.savefig(buf, format="png", dpi=dpi or "figure", bbox_inches="tight")
    return buf.getvalue()


class _Figure(Figure):
    """A plain `Figure` that IPython can render without pyplot's inline backend being loaded."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)


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
    """A legend on `ax` when something on it is labelled (no empty legend box)."""
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


def save_figure(fig: Figure, path, *, dpi: int = 100) -> None:
    """Write `fig` to `path` as PNG and show that same image as the output of the notebook cell.

    A figure that is only saved never reaches the executed notebook, so neither JupyterLab nor the HTML report shows
    it; this keeps "saved" and "shown" one act, with identical bytes. The output's text form names the file, which is
    what the console of a headless run prints for it. Outside IPython only the file is written.

    Returns `None`, so that a cell ending with it shows the figure and nothing else.
    """
    import base64
    from pathlib import Path

    data = png_bytes(fig, dpi)
    path = Path(path)
    path.write_bytes(data)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # IPython is a dependency of ipykernel, but the library does not need it
        return
    if get_ipython() is not None:
        png = base64.b64encode(data).decode("ascii")
        display({"image/png": png, "text/plain": f"figure: {path}"}, raw=True)
