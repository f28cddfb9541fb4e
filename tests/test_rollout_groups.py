"""Tests for `mmr1kit.rollout_groups`: group statistics and filters on a hand-built table and on a real run."""

import json

import numpy as np
import pytest
from rollouts_data import keys, make_rollouts

from mmr1kit import rollout_groups as groups
from mmr1kit.runs import load_run

pytest_plugins = ["runs_fixture"]  # tiny_run: a real tiny run folder


def test_group_table_statistics():
    table = groups.group_table(make_rollouts())
    assert keys(table) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    row = table.iloc[1]  # (1, 1): totals 2, 0, 1
    assert (row["n"], row["mean"], row["min"], row["max"]) == (3, 1.0, 0.0, 2.0)
    assert row["std"] == pytest.approx(np.std([2, 0, 1]))
    assert row["rewards/accuracy"] == pytest.approx(1 / 3) and row["rewards/format"] == pytest.approx(2 / 3)
    assert table["zero_variance"].tolist() == [True, False, False, True]
    assert table["truncated"].tolist() == [1, 1, 1, 1]
    # The statistics follow the chosen reward.
    assert groups.group_table(make_rollouts(), reward="accuracy")["mean"].tolist() == pytest.approx([0, 1 / 3, 0, 1])


@pytest.mark.parametrize(
    "kind, kwargs, expected",
    [
        ("all", {}, [(1, 0), (1, 1), (2, 0), (2, 1)]),
        # default: the first reward function (accuracy), nothing above 0
        ("failures", {}, [(1, 0), (2, 0)]),
        # on format, nothing above 0.5: none (every group has a format-1 completion)
        ("failures", {"reward": "format", "threshold": 0.5}, []),
        # on the total, no completion above 1.0: (1, 0) (all 1.0) and (2, 0) (max 1.0)
        ("failures", {"reward": "reward", "threshold": 1.0}, [(1, 0), (2, 0)]),
        ("zero_variance", {}, [(1, 0), (2, 1)]),
        # zero variance on accuracy alone: the all-wrong groups too
        ("zero_variance", {"reward": "rewards/accuracy"}, [(1, 0), (2, 0), (2, 1)]),
        ("below", {"threshold": 1.0}, [(2, 0)]),
        ("below", {"threshold": 1.5}, [(1, 0), (1, 1), (2, 0)]),
        ("below", {"threshold": 0.5, "reward": "accuracy"}, [(1, 0), (1, 1), (2, 0)]),
        ("all", {"step": 2}, [(2, 0), (2, 1)]),
        ("zero_variance", {"step": 2}, [(2, 1)]),
    ],
)
def test_filter_groups(kind, kwargs, expected):
    assert keys(groups.filter_groups(make_rollouts(), kind, **kwargs)) == expected


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "bad"}, "kind='bad' is not a filter; valid: all, failures, zero_variance, below"),
        ({"kind": "below"}, "needs a threshold"),
        ({"kind": "all", "reward": "iou"}, "reward='iou' is not logged in these rollouts; valid: reward, accuracy, format"),
    ],
)
def test_filter_groups_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        groups.filter_groups(make_rollouts(), **kwargs)


def test_filter_groups_names_missing_columns():
    with pytest.raises(ValueError, match=r"rollouts have no column\(s\) \['group'\]"):
        groups.group_table(make_rollouts().drop(columns="group"))


def test_worst_groups_order_and_ties():
    # total means: (1,0) 1.0, (1,1) 1.0, (2,0) 1/3, (2,1) 2.0; ties go to the later step, then the lower group
    assert keys(groups.worst_groups(make_rollouts(), n=10)) == [(2, 0), (1, 0), (1, 1), (2, 1)]
    assert keys(groups.worst_groups(make_rollouts(), n=1, kind="zero_variance")) == [(1, 0)]
    assert keys(groups.worst_groups(make_rollouts(), n=0)) == []


def test_step_overview_counts():
    overview = groups.step_overview(make_rollouts(), threshold=1.5)
    assert overview.loc[1].tolist() == [2, 1.0, 1, 1, 2]  # groups, mean reward, failures, zero variance, below
    assert overview.loc[2].tolist() == pytest.approx([2, (1 / 3 + 2) / 2, 1, 1, 1])


def raw_rollouts(run_dir):
    return [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_group_table_matches_the_rollouts_file(tiny_run):
    raw = raw_rollouts(tiny_run)
    totals = {}
    for row in raw:
        totals.setdefault((row["step"], row["group"]), []).append(row["reward"])
    table = groups.group_table(load_run(tiny_run).rollouts)
    assert keys(table) == sorted(totals)
    assert table["mean"].tolist() == pytest.approx([np.mean(totals[k]) for k in sorted(totals)])
    flat = [k for k in sorted(totals) if max(totals[k]) - min(totals[k]) <= 1e-6]
    assert keys(groups.filter_groups(load_run(tiny_run).rollouts, "zero_variance")) == flat
    assert 0 < len(flat) < len(totals)  # the fixture has both kinds
