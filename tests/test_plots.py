"""Tests for mmr1kit.plots: real figures drawn with the Agg backend from small synthetic runs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from mmr1kit import plots


def _metrics(n=12, seed=0, sparse_exact=False):
    rng = np.random.default_rng(seed)
    step = np.arange(1, n + 1)
    exact = 0.01 * step
    df = pd.DataFrame(
        {
            "step": step,
            "loss": rng.normal(size=n),
            "reward": np.linspace(0, 1, n),
            "reward_std": np.full(n, 0.2),
            "rewards/format/mean": np.linspace(0.5, 1, n),
            "rewards/format/std": np.full(n, 0.1),
            "rewards/accuracy/mean": np.linspace(0, 0.8, n),
            "kl": exact + rng.normal(0, 0.002, n),
            "kl/k1": exact + rng.normal(0, 0.01, n),
            "kl/k2": exact * 0.9,
            "kl/k3": exact * 1.05,
            "kl/exact": exact,
            "entropy": np.linspace(2, 1, n),
            "entropy/ref": np.full(n, 2.0),
            "entropy/ref_delta": np.linspace(0, -1, n),
            "temperature": np.linspace(1.2, 0.7, n),
            "completions/mean_length": np.linspace(40, 20, n),
            "completions/clipped_ratio": np.linspace(0.3, 0.0, n),
            "step_time": np.full(n, 3.0),
            "timing/generate": np.full(n, 1.5),
            "timing/score": np.full(n, 0.1),
            "timing/ref": np.full(n, 0.3),
            "timing/policy": np.full(n, 0.9),
        }
    )
    if sparse_exact:
        df.loc[df.index % 3 != 0, "kl/exact"] = np.nan
    return df


def _text(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _lines(fig):
    return sum(len(ax.get_lines()) for ax in fig.axes)


def test_smooth_is_trailing_mean_over_finite_values():
    s = pd.Series([1.0, np.nan, 3.0, np.inf, 5.0, 7.0], index=list("abcdef"), name="m")
    out = plots.smooth(s, 2)
    assert list(out.index) == list("abcdef") and out.name == "m"
    np.testing.assert_allclose(out.to_numpy(), [1.0, np.nan, 2.0, np.nan, 4.0, 6.0])
    np.testing.assert_allclose(plots.smooth([1, 2, 3], 0).to_numpy(), [1, 2, 3])
    with pytest.raises(ValueError, match="window"):
        plots.smooth(s, -1)


def test_plot_metrics_one_panel_per_key_and_missing_key(tmp_path):
    fig = plots.plot_metrics(_metrics(), ["loss", "reward", "nope"], title="t")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == ["Training loss", "Total reward (weighted sum)", "nope"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1, 0]
    assert plots.NOT_LOGGED in [t.get_text() for t in fig.axes[2].texts]
    x, _y = fig.axes[0].get_lines()[0].get_data()
    np.testing.assert_array_equal(x, np.arange(1, 13))
    fig.savefig(tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 0


def test_plot_metrics_overlays_runs_smooths_and_expands_patterns():
    a, b = _metrics(seed=0), _metrics(seed=1).drop(columns=["loss"])
    fig = plots.plot_metrics({"a": a, "b": b}, ["loss", "rewards/*/mean"], smooth_window=3, ncols=2)
    assert [ax.get_title() for ax in fig.axes] == ["Training loss", "Reward: accuracy", "Reward: format"]
    # loss: only run a (raw + smooth); each reward panel: 2 runs x (raw + smooth)
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 4, 4]
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "mean of the last 3 logged steps", "raw values"]
    smooth_line = fig.axes[0].get_lines()[1]
    np.testing.assert_allclose(smooth_line.get_ydata(), plots.smooth(a["loss"], 3).to_numpy())
    no_raw = plots.plot_metrics({"a": a, "b": b}, ["reward"], smooth_window=3, show_raw=False)
    assert _lines(no_raw) == 2


def test_plot_metrics_skips_nan_steps_and_accepts_step_index():
    df = _metrics(sparse_exact=True).set_index("step")
    fig = plots.plot_metrics(df, ["kl/exact"])
    x, _ = fig.axes[0].get_lines()[0].get_data()
    np.testing.assert_array_equal(x, [1, 4, 7, 10])
    with pytest.raises(ValueError, match="no 'step'"):
        plots.plot_metrics(df.reset_index(drop=True), ["loss"])


def test_plot_rewards_bands_and_panels():
    fig = plots.plot_rewards(_metrics())
    assert [ax.get_title() for ax in fig.axes] == ["Total reward (weighted sum)", "Reward: accuracy", "Reward: format"]
    # std band where the std column exists: reward_std and rewards/format/std, not accuracy
    assert [len(ax.collections) for ax in fig.axes] == [1, 0, 1]
    fig2 = plots.plot_rewards({"a": _metrics(), "b": _metrics(seed=2)}, smooth_window=2, show_std=False)
    assert [len(ax.collections) for ax in fig2.axes] == [0, 0, 0]
    assert _lines(fig2) == 3 * 2 * 2
    only_total = plots.plot_rewards(pd.DataFrame({"step": [1, 2], "reward": [0.0, 1.0]}))
    assert [ax.get_title() for ax in only_total.axes] == ["Total reward (weighted sum)"]


def test_plot_kl_one_axes_per_run_one_line_per_estimator(tmp_path):
    df = _metrics().drop(columns=["kl"])
    fig = plots.plot_kl(df)
    assert len(fig.axes) == 1 and _lines(fig) == 4
    assert {line.get_label() for line in fig.axes[0].get_lines()} == {
        plots.diagnostics.KL_LINES[k][0] for k in ("kl/k1", "kl/k2", "kl/k3", "kl/exact")}
    fig2 = plots.plot_kl({"run1": df, "run2": _metrics(seed=3).drop(columns=["kl"])})
    assert len(fig2.axes) == 2 and _lines(fig2) == 8
    assert "run2" in fig2.axes[1].get_title()
    fig3 = plots.plot_kl({"with kl": _metrics(), "none": pd.DataFrame({"step": [1, 2], "loss": [0, 1]})})
    assert [len(ax.get_lines()) for ax in fig3.axes] == [5, 0]
    assert plots.NOT_LOGGED in _text(fig3)
    fig2.savefig(tmp_path / "kl.png")


def test_plot_entropy_two_panels_and_missing():
    fig = plots.plot_entropy({"a": _metrics(), "b": _metrics(seed=1)})
    assert len(fig.axes) == 2
    assert len(fig.axes[0].get_lines()) == 4  # entropy + entropy/ref per run
    assert len(fig.axes[1].get_lines()) == 3  # ref_delta per run + zero line
    fig2 = plots.plot_entropy(_metrics().drop(columns=["entropy/ref", "entropy/ref_delta"]))
    assert len(fig2.axes[0].get_lines()) == 1 and not fig2.axes[1].get_lines()
    assert plots.NOT_LOGGED in [t.get_text() for t in fig2.axes[1].texts]


def test_plot_temperature_and_lengths(tmp_path):
    fig = plots.plot_temperature({"a": _metrics(), "b": _metrics()})
    assert len(fig.axes) == 1 and _lines(fig) == 2
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(), _metrics()["temperature"])
    assert plots.NOT_LOGGED in _text(plots.plot_temperature(pd.DataFrame({"step": [1]})))
    lengths = plots.plot_lengths({"a": _metrics(), "b": _metrics()})
    assert len(lengths.axes) == 2  # twin axis
    assert [len(ax.get_lines()) for ax in lengths.axes] == [2, 2]
    assert len(lengths.axes[0].get_legend().get_texts()) == 4
    lengths.savefig(tmp_path / "len.png")


def test_plot_timing_area_and_bar(tmp_path):
    df = _metrics(n=5)
    df.loc[2, "timing/ref"] = np.nan
    area = plots.plot_timing(df)
    assert len(area.axes) == 1
    assert len(area.axes[0].collections) == 4  # one stacked area per timing/* column
    assert [line.get_label() for line in area.axes[0].get_lines()] == ["step time"]
    bar = plots.plot_timing(df, kind="bar")
    rects = [p for p in bar.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rects) == 5 * 4
    assert len(bar.axes[0].containers) == 4
    top = bar.axes[0].containers[-1]  # policy, stacked on generate+score+ref
    assert top[0].get_y() == pytest.approx(1.5 + 0.1 + 0.3)
    assert top[2].get_y() == pytest.approx(1.5 + 0.1)  # ref missing at that step counts as 0
    norm = plots.plot_timing(df, kind="bar", normalize=True)
    assert norm.axes[0].containers[-1][0].get_y() + norm.axes[0].containers[-1][0].get_height() == pytest.approx(1)
    assert not norm.axes[0].get_lines()
    assert plots.NOT_LOGGED in _text(plots.plot_timing(pd.DataFrame({"step": [1], "loss": [1]})))
    with pytest.raises(ValueError, match="kind"):
        plots.plot_timing(df, kind="pie")
    bar.savefig(tmp_path / "t.png")
    wasted = plots.plot_timing(df.assign(**{"timing/generate_wasted": 1.0}))  # a part of timing/generate
    legend = [t.get_text() for t in wasted.axes[0].get_legend().get_texts()]
    assert len(wasted.axes[0].collections) == 4 and "generate" in legend and "generate_wasted" not in legend


def _eval_df():
    rows = []
    truth = {
        ("warm start", 1): [1, 1, 0],
        ("warm start", 2): [0, 0],
        ("after GRPO", 1): [1, 1, 1],
        ("after GRPO", 2): [1, 0],
        ("after GRPO", 10): [1],
    }
    i = 0
    for (label, count), corrects in truth.items():
        for c in corrects:
            rows.append(
                {
                    "id": i % 6,
                    "count": count,
                    "prediction": count if c else count + 1,
                    "correct": bool(c),
                    "label": label,
                }
            )
            i += 1
    return pd.DataFrame(rows)


def test_plot_accuracy_by_group_bars_heights_and_legend(tmp_path):
    fig = plots.plot_accuracy_by_group(_eval_df())
    ax = fig.axes[0]
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(containers) == 2
    assert sum(len(c) for c in containers) == 3 * 2  # groups x labels
    warm, after = containers
    np.testing.assert_allclose([r.get_height() for r in warm], [2 / 3, 0.0, np.nan])
    np.testing.assert_allclose([r.get_height() for r in after], [1.0, 0.5, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "10"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["warm start (overall 40.0%, n=5)", "after GRPO (overall 83.3%, n=6)"]
    assert {"n=3", "n=2", "n=0", "n=1"} <= set(_text(fig))
    fig.savefig(tmp_path / "acc.png")
    one = plots.plot_accuracy_by_group(_eval_df().drop(columns=["label"]))
    assert sum(len(c) for c in one.axes[0].containers) == 3
    with pytest.raises(ValueError, match="difficulty"):
        plots.plot_accuracy_by_group(_eval_df(), group="difficulty")


def _outcomes():
    from mmr1kit.evaluate_stats import outcome_table

    rows = []
    for label, correct, answered in (("warm start", [1, 0, 0, 0], [1, 1, 0, 1]), ("after GRPO", [1, 1, 1, 0], [1] * 4)):
        rows += [{"id": str(i), "sample": 0, "label": label, "correct": bool(c), "answered": bool(a)}
                 for i, (c, a) in enumerate(zip(correct, answered))]
    return pd.DataFrame(rows), outcome_table(pd.DataFrame(rows))


def test_plot_outcomes_stacks_correct_wrong_and_no_answer(tmp_path):
    _, table = _outcomes()
    fig = plots.plot_outcomes(table)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 3 and all(len(b) == 2 for b in bars)
    correct, wrong, none = bars  # rows drawn bottom-up: "after GRPO" first
    np.testing.assert_allclose([r.get_width() for r in correct], [0.75, 0.25])
    np.testing.assert_allclose([r.get_width() for r in wrong], [0.25, 0.5])
    np.testing.assert_allclose([r.get_width() for r in none], [0.0, 0.25])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["after GRPO", "warm start"]
    assert any(t.startswith("75.0% [") and t.endswith("n=4") for t in _text(fig))
    fig.savefig(tmp_path / "outcomes.png")
    with pytest.raises(ValueError, match="outcome_table"):
        plots.plot_outcomes(table.drop(columns=["accuracy_low"]))


def test_plot_paired_differences_one_interval_per_comparison(tmp_path):
    from mmr1kit.evaluate_stats import comparison_table, paired_comparison

    records, _ = _outcomes()
    fig = plots.plot_paired_differences(comparison_table(records))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["after GRPO vs warm start"]
    assert any(t.startswith("+50.0 [") and "p=0.5" in t for t in _text(fig))  # 2 discordant pairs: p = 0.5
    fig.savefig(tmp_path / "paired.png")
    same = plots.plot_paired_differences([paired_comparison(records, "warm start", "after GRPO")])
    assert [t.get_text() for t in same.axes[0].get_yticklabels()] == ["after GRPO vs warm start"]


@pytest.fixture
def images(tmp_path):
    for name, color in (("a.png", (200, 30, 30)), ("b.png", (30, 200, 30))):
        Image.new("RGB", (40, 30), color).save(tmp_path / name)
    return tmp_path


def _rollouts(n=3):
    return pd.DataFrame(
        {
            "step": [1] * n,
            "prompt_id": list(range(n)),
            "group": [0] * n,
            "image": (["a.png", "b.png", "missing.png"] * n)[:n],
            "problem": ["How many?"] * n,
            "solution": ["<answer>3</answer>"] * n,
            "completion": ["<think>" + "count the $ red $ things " * 10 + "</think><answer>3</answer>"] * n,
            "reward": [1.0, 0.5, 0.0][:n],
            "advantage": [0.8, 0.0, -0.8][:n],
            "rewards/format": [1.0] * n,
            "rewards/accuracy": [0.0, 0.5, 1.0][:n],
            "length": [40] * n,
            "truncated": [False, True, False][:n],
        }
    )


def test_rollout_gallery_grid_titles_and_missing_image(images, tmp_path):
    fig = plots.rollout_gallery(_rollouts(), image_root=images, ncols=2)
    assert len(fig.axes) == 3
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 0]
    assert any("missing.png" in t for t in [t.get_text() for t in fig.axes[2].texts])
    title = fig.axes[0].get_title(loc="left")
    assert title.startswith("<think>count the $ red $")
    assert max(len(line) for line in title.splitlines()) <= 30
    assert "…" in title and title.replace("\n", "").endswith("</think><answer>3</answer>")  # answer kept
    xlabel = fig.axes[1].get_xlabel()
    assert "reward=0.50" in xlabel and "format=1.00" in xlabel and "advantage=+0.00" in xlabel
    assert "TRUNCATED" in xlabel and "step 1" in xlabel
    assert not any(isinstance(p, Rectangle) for ax in fig.axes for p in ax.patches)  # counting: no boxes
    assert len(plots.rollout_gallery(_rollouts(), image_root=images, max_items=2).axes) == 2
    fig.savefig(tmp_path / "gallery.png")


def test_rollout_gallery_draws_boxes(images, tmp_path):
    rows = _rollouts(2)
    rows["gt_box"] = [[2, 3, 20, 25], None]
    rows["pred_box"] = [[5, 5, 30, 28], [1, 1, 10, 10]]
    fig = plots.rollout_gallery(rows, image_root=images)
    boxes = [[p for p in ax.patches if isinstance(p, Rectangle)] for ax in fig.axes]
    assert [len(b) for b in boxes] == [2, 1]
    gt, pred = boxes[0]
    assert gt.get_edgecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb("limegreen"))
    assert pred.get_edgecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb("red"))
    assert (gt.get_x(), gt.get_y(), gt.get_width(), gt.get_height()) == (2, 3, 18, 22)
    assert len(plots.rollout_gallery(rows, image_root=images, draw_boxes=False).axes[0].patches) == 0
    # parsed from text when there are no box columns; Qwen 0-1000 coordinates scaled to the 40x30 image
    parsed = _rollouts(1).assign(
        solution="[0, 0, 500, 500]", completion="<think>x</think><answer>(100,200),(300,400)</answer>"
    )
    fig2 = plots.rollout_gallery(parsed, image_root=images, box_format="0-1000")
    gt, pred = [p for p in fig2.axes[0].patches if isinstance(p, Rectangle)]
    assert (gt.get_width(), gt.get_height()) == pytest.approx((20, 15))
    assert (pred.get_x(), pred.get_y()) == pytest.approx((4, 6))
    fig2.savefig(tmp_path / "boxes.png")


def test_plot_sweep_points_and_mean_std(tmp_path):
    summary = pd.DataFrame(
        {
            "learning_rate": [1e-6, 1e-6, 1e-5, 1e-5, 1e-4, 1e-4],
            "seed": [0, 1, 0, 1, 0, 1],
            "accuracy": [0.2, 0.4, 0.5, 0.7, 0.1, np.nan],
        }
    )
    fig = plots.plot_sweep(summary, "learning_rate", "accuracy")
    ax = fig.axes[0]
    assert len(ax.collections[:2]) == 2  # one scatter per seed
    assert sum(len(c.get_offsets()) for c in ax.collections[:2]) == 5  # NaN run dropped
    means = ax.containers[0].lines[0]
    np.testing.assert_allclose(means.get_xdata(), [1e-6, 1e-5, 1e-4])
    np.testing.assert_allclose(means.get_ydata(), [0.3, 0.6, 0.1])
    assert ax.get_xscale() == "log"
    fig.savefig(tmp_path / "sweep.png")
    cat = plots.plot_sweep(summary.assign(loss=["a", "a", "b", "b", "c", "c"]), "loss", "accuracy")
    assert [t.get_text() for t in cat.axes[0].get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="missing_metric"):
        plots.plot_sweep(summary, "learning_rate", "missing_metric")


def test_figures_are_not_registered_with_pyplot():
    before = plt.get_fignums()
    plots.plot_metrics(_metrics(), ["loss"])
    plots.plot_kl(_metrics())
    assert plt.get_fignums() == before


# ---------------------------------------------------------------------------------------------- paper-ready figures


def _legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_every_figure_has_readable_titles_labelled_axes_and_no_none_legend(images):
    one_run = _metrics()  # a single unlabelled run, as notebook 01 passes it
    figures = {
        "rewards": plots.plot_rewards(one_run, smooth_window=5),
        "metrics": plots.plot_metrics(one_run, ["learning_rate", "grad_norm", "loss", "step_time", "kl/k3"]),
        "kl": plots.plot_kl(one_run, smooth_window=5),
        "entropy": plots.plot_entropy(one_run, smooth_window=5),
        "temperature": plots.plot_temperature(one_run),
        "lengths": plots.plot_lengths(one_run),
        "timing": plots.plot_timing(one_run),
        "accuracy": plots.plot_accuracy_by_group(_eval_df()),
        "sweep": plots.plot_sweep(pd.DataFrame({"lr": [1, 2], "seed": [0, 0], "final/reward": [0.1, 0.2]}), "lr",
                                  "final/reward"),
    }
    one_run["learning_rate"] = 1e-4
    figures["metrics"] = plots.plot_metrics(one_run, ["learning_rate", "grad_norm", "loss", "step_time", "kl/k3"])
    for name, fig in figures.items():
        legend = _legend_texts(fig)
        assert not any("None" in t for t in legend), (name, legend)
        for ax in fig.axes:
            twin = ax is not fig.axes[0] and fig.axes[0] in ax.get_shared_x_axes().get_siblings(ax)
            if twin or (not ax.get_lines() and not ax.containers and not ax.collections):
                continue
            title, xlabel, ylabel = ax.get_title(), ax.get_xlabel(), ax.get_ylabel()
            assert title and "/" not in title and "_" not in title, (name, title)  # not a raw metric key
            assert xlabel and ylabel and "_" not in ylabel, (name, xlabel, ylabel)
    assert figures["rewards"].axes[0].get_xlabel() == "optimizer step"
    assert figures["metrics"].axes[3].get_ylabel() == "seconds"
    assert figures["kl"].axes[0].get_ylabel() == "KL (nats per token)"
    assert figures["accuracy"].axes[0].get_xlabel() == "true count"
    assert figures["sweep"].axes[0].get_ylabel() == "reward per completion"
    ticks = figures["rewards"].axes[0].xaxis.get_major_locator().tick_values(1, 12)
    assert np.allclose(ticks, np.round(ticks))  # whole steps only


def _band_y(ax):
    [band] = [c for c in ax.collections if c.get_label() == "_std"]
    return np.concatenate([p.vertices[:, 1] for p in band.get_paths()])


def test_reward_bands_are_labelled_and_clipped_to_the_reward_range():
    df = _metrics().drop(columns=["loss"])
    df["rewards/accuracy/std"] = 0.6  # mean ± std runs past [0, 1] at both ends
    df["reward_std"] = 0.6
    fig = plots.plot_rewards(df, smooth_window=3)
    total, accuracy, fmt = fig.axes
    assert _band_y(accuracy).min() == 0.0 and _band_y(accuracy).max() == 1.0  # clipped, not just drawn past
    assert _band_y(fmt).min() >= 0.0 and _band_y(fmt).max() <= 1.0
    assert _band_y(total).min() < 0  # the total's range depends on the weights: unknown here, not clipped
    low, high = accuracy.get_ylim()
    assert low < 0 and 1 < high < 1.1  # the whole range [0, 1] shows, with a margin
    assert plots.curves.BAND_LABEL in _legend_texts(fig)
    bounds = plots.reward_bounds({"reward_funcs": ["accuracy", "format"], "reward_weights": [1.0, 0.1]})
    assert bounds == {"rewards/accuracy/mean": (0.0, 1.0), "rewards/format/mean": (0.0, 1.0), "reward": (0.0, 1.1)}
    clipped = plots.plot_rewards(df, bounds=bounds)
    assert _band_y(clipped.axes[0]).min() == 0.0 and _band_y(clipped.axes[0]).max() <= 1.1 + 1e-12
    # perpo_iou is in [-1, 1] (an alias name works too); a custom function has no known range, nor has the total
    assert plots.reward_bounds({"reward_funcs": ["perpo_reward"], "reward_scale": 2.0}) == {
        "rewards/perpo_reward/mean": (-1.0, 1.0), "reward": (-2.0, 2.0)}
    assert plots.reward_bounds({"reward_funcs": ["accuracy", "my_length_reward"]}) == {
        "rewards/accuracy/mean": (0.0, 1.0)}


def test_schedules_and_timings_are_drawn_as_logged_not_smoothed():
    df = _metrics()
    df["learning_rate"] = np.where(df["step"] <= 5, df["step"] * 2e-5, 1e-4)  # warm-up, then constant
    df["step_time"] = [3.0, 9.0, 3.0, 3.0, 12.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]  # two slow steps
    fig = plots.plot_metrics(df, ["learning_rate", "temperature", "step_time", "timing/generate", "reward"],
                             smooth_window=5)
    for ax, key in zip(fig.axes[:4], ["learning_rate", "temperature", "step_time", "timing/generate"]):
        [line] = ax.get_lines()  # one line, the logged values: no faint raw line under a smoothed one
        np.testing.assert_array_equal(line.get_ydata(), df[key].to_numpy())
    raw, smoothed = fig.axes[4].get_lines()
    np.testing.assert_array_equal(raw.get_ydata(), df["reward"].to_numpy())
    np.testing.assert_allclose(smoothed.get_ydata(), plots.smooth(df["reward"], 5).to_numpy())
    temperature = plots.plot_temperature(df)
    np.testing.assert_array_equal(temperature.axes[0].get_lines()[0].get_ydata(), df["temperature"].to_numpy())


def test_fractions_keep_their_axis_within_zero_and_one():
    df = _metrics().assign(**{"clip_ratio/low_mean": 0.0, "completions/clipped_ratio": 1.0})
    fig = plots.plot_metrics(df, ["clip_ratio/low_mean", "completions/clipped_ratio"])
    for ax in fig.axes:  # constant 0 or 1: matplotlib alone would pad the axis to -0.05 or 1.05
        low, high = ax.get_ylim()
        assert -0.021 <= low and high <= 1.021


def test_rollout_gallery_shows_the_ground_truth_next_to_the_prediction(images):
    rows = _rollouts(3).assign(solution=["3", "<answer>2</answer>", "[1, 2, 3, 4]"],
                               completion=["<answer>3</answer>", "<answer> 4 </answer>", "no tags here"])
    fig = plots.rollout_gallery(rows, image_root=images)
    labels = [" ".join(ax.get_xlabel().splitlines()) for ax in fig.axes]  # the lines are wrapped at spaces
    for label, truth in zip(labels, ["truth 3 · answer 3", "truth 2 · answer 4",
                                     "truth [1, 2, 3, 4] · answer (no <answer>)"]):
        assert label.startswith(truth), label
    with_answer = plots.rollout_gallery(rows.assign(answer=["7", None, "5"]), image_root=images)
    labels = [" ".join(ax.get_xlabel().splitlines()) for ax in with_answer.axes]
    for label, truth in zip(labels, ["truth 3 · answer 7", "truth 2 · answer 4", "truth [1, 2, 3, 4] · answer 5"]):
        assert label.startswith(truth), label
    no_solution = plots.rollout_gallery(rows.drop(columns=["solution"]), image_root=images)
    assert not any("truth" in ax.get_xlabel() for ax in no_solution.axes)


def test_gallery_writes_control_characters_escaped_and_renders_without_glyph_warnings(images):
    import warnings

    rows = _rollouts(1).assign(completion="<answer>\x10\x1b3</answer>", solution="3")
    fig = plots.rollout_gallery(rows, image_root=images)
    assert fig.axes[0].get_title(loc="left") == "<answer>\\x10\\x1b3</answer>"
    assert " ".join(fig.axes[0].get_xlabel().splitlines()).startswith("truth 3 · answer \\x10\\x1b3")
    cjk = plots.rollout_gallery(rows.assign(completion="<answer>三</answer>"), image_root=images)  # no such glyph
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fig._repr_png_()[:4] == b"\x89PNG" and cjk._repr_png_()[:4] == b"\x89PNG"
    assert not [w for w in caught if "Glyph" in str(w.message)]
