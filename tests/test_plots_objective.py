"""The objective lab's figures (`mmr1kit.plots.objective`) drawn from a real replay: each figure's data read back
from its artists and compared with the `ReplayResult` it was drawn from."""

import io

import numpy as np
import pytest

from mmr1kit import plots

pytest_plugins = ["runs_fixture"]  # capsule_replay: step 3 of a real tiny run under 4 objectives


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


@pytest.mark.slow
def test_token_weight_heat_maps(capsule_replay):
    result = capsule_replay
    fig = plots.plot_token_weights(result, max_completions=5)
    labels = list(result.variants["label"])
    assert [ax.get_title().split("  (")[0] for ax in fig.axes] == labels
    order = np.argsort(-np.abs(result.advantages), kind="stable")[:5]
    for ax, label in zip(fig.axes, labels):
        drawn = np.ma.filled(ax.images[0].get_array(), np.nan)
        push = -result.token_weights[label][order]
        expected = np.where(result.mask[order] > 0, push / np.abs(push).max(), np.nan)
        np.testing.assert_allclose(drawn, expected, rtol=1e-6, equal_nan=True)
        assert len(ax.texts) == sum(len(result.tokens[i]) for i in order)  # every shown token's text
    assert png(fig)[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="unknown variant label"):
        plots.plot_token_weights(result, labels=["kl_approximator=k2"])


@pytest.mark.slow
def test_length_bias(capsule_replay):
    fig = plots.plot_length_bias(capsule_replay)
    left, right = fig.axes[:2]
    assert [line.get_label() for line in left.get_lines()] == list(capsule_replay.variants["label"])
    df = capsule_replay.completions
    for line in left.get_lines():  # the mean per length of sum|w| / |A|, divided by the variant's mean
        rows = df[(df["label"] == line.get_label()) & (df["advantage"].abs() > 1e-6)]
        values = rows["weight_abs_sum"] / rows["advantage"].abs()
        values = values / values.mean()
        at = np.unique(rows["length"])
        np.testing.assert_allclose(line.get_xdata(), at)
        np.testing.assert_allclose(line.get_ydata(), [values[rows["length"] == n].mean() for n in at], rtol=1e-6)
    assert len(right.get_lines()) == len(capsule_replay.variants)
    assert png(fig)[:4] == b"\x89PNG"


@pytest.mark.slow
def test_estimators_against_the_exact_kl(capsule_replay):
    fig = plots.plot_estimators_vs_exact(capsule_replay)
    table = capsule_replay.estimator_table().set_index("estimator")
    assert [ax.get_title() for ax in fig.axes] == [
        f"{k}: bias {table.loc[k, 'bias']:+.3g}, spread {table.loc[k, 'spread']:.3g}" for k in ("k1", "k2", "k3")]
    mask = capsule_replay.mask > 0
    for ax, name in zip(fig.axes, ("k1", "k2", "k3")):
        points = ax.collections[0].get_offsets()
        np.testing.assert_allclose(points[:, 0], capsule_replay.estimators["exact"][mask], rtol=1e-6)
        np.testing.assert_allclose(points[:, 1], capsule_replay.estimators[name][mask], rtol=1e-6)
    assert png(fig)[:4] == b"\x89PNG"


@pytest.mark.slow
def test_gradient_cosine_matrix_figure(capsule_replay):
    fig = plots.plot_gradient_cosine(capsule_replay)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), capsule_replay.cosine.to_numpy())
    assert len(ax.texts) == len(capsule_replay.cosine) ** 2
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        f"v{i + 1} {label}" for i, label in enumerate(capsule_replay.cosine.index)]
    assert png(fig)[:4] == b"\x89PNG"
