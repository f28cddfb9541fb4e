"""`plots.plot_memory`: the memory/peak_* curves of a real run, several runs side by side, and "not logged"."""

import json

import matplotlib
import pandas as pd
from runs_fixture import grounding_dir, tiny_run  # noqa: F401 (pytest fixtures)

from mmr1kit import plots

matplotlib.use("Agg")


def test_plot_memory_draws_each_phase_and_the_step_peak(tiny_run, tmp_path):  # noqa: F811
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    df = pd.DataFrame([r for r in rows if "loss" in r])
    fig = plots.plot_memory(df, budget_gib=80)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["generate", "reference", "rollout", "loss", "optimizer", "step peak", "GPU 80 GiB"]
    assert all(len(line.get_xdata()) == 3 for line in fig.axes[0].get_lines()[:-1])
    fig.savefig(tmp_path / "memory.png")
    assert (tmp_path / "memory.png").read_bytes()[:4] == b"\x89PNG"
    two = plots.plot_memory({"a": df, "b": pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]})})
    assert len(two.axes) == 2 and len(two.axes[0].get_lines()) == 6
    assert [t.get_text() for t in two.axes[1].texts] == [plots.NOT_LOGGED]
